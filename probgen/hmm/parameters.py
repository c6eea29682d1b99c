"""Setting an HMM's parameters directly (`HMM.set_parameters`) and the checks it needs.

Example:
    >>> from probgen.hmm import HMM
    >>> hmm = HMM(2, emission="poisson").set_parameters(rates=[[1.0], [4.0]])
    >>> hmm.rates.tolist()
    [[1.0], [4.0]]
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch

from probgen.core.errors import DataError

_Model = TypeVar("_Model", bound="HMMParametersMixin")


class HMMParametersMixin:
    """`set_parameters` for `probgen.hmm.model.HMM` (a mixin: it uses the HMM's attributes)."""

    def set_parameters(self: _Model, **parameters: Any) -> _Model:
        """Set parameters directly (the model then counts as fitted); returns self.

        Keywords: ``start_probs``, ``transition_probs``, and by family ``emission_probs``;
        ``means``, ``covariances`` (hmmlearn's storage shape for the covariance type, or full
        matrices); ``mixture_weights``; ``rates``; for an input-output HMM
        ``transition_input_weights`` (n_states, transition_inputs, n_states) and
        ``start_input_weights`` (transition_inputs, n_states), centred over the last axis when
        stored (the softmax does not see a constant added there). Sizes not given at construction
        (``n_symbols``, ``n_features``) are taken from them.

        Raises:
            DataError: a wrong shape, a negative probability or a row not summing to one.
        """
        known = {
            "start_probs",
            "transition_probs",
            "emission_probs",
            "means",
            "covariances",
            "mixture_weights",
            "rates",
            "transition_input_weights",
            "start_input_weights",
        }
        unknown = set(parameters) - known
        if unknown:
            raise DataError(
                f"unknown parameters {sorted(unknown)}; expected some of {sorted(known)}"
            )
        for name in ("transition_input_weights", "start_input_weights"):
            if name in parameters and not hasattr(self, name):
                raise DataError(
                    f"{name} needs an HMM built with "
                    + ("transition_inputs > 0" if name[0] == "t" else "start_inputs=True")
                )
        dtype, device = self.dtype, self.device
        tensors = {
            name: torch.as_tensor(
                np.asarray(value, dtype=np.float64)
                if not isinstance(value, torch.Tensor)
                else value.detach()
            ).to(device=device, dtype=dtype)
            for name, value in parameters.items()
        }
        for name, value in tensors.items():
            if not torch.isfinite(value).all():
                raise DataError(f"{name} contains NaN or infinite values")
        if self.emission is None:
            if self.family == "categorical" and "emission_probs" in tensors:
                self.n_symbols = int(tensors["emission_probs"].shape[-1])
            elif self.family == "multinomial" and "emission_probs" in tensors:
                self.n_features = int(tensors["emission_probs"].shape[-1])
            elif self.family in ("gaussian", "gmm") and "means" in tensors:
                self.n_features = int(tensors["means"].shape[-1])
            elif self.family == "poisson" and "rates" in tensors:
                self.n_features = int(tensors["rates"].reshape(self.n_states, -1).shape[-1])
            if self.n_symbols is None and self.n_features is None:
                raise DataError("give the emission parameters (their size is not known yet)")
        emission = self._ensure_emission()
        n_states = self.n_states
        new_values: dict[str, torch.Tensor] = {}
        if "start_probs" in tensors:
            new_values["start_probs"] = _check_probabilities(
                tensors["start_probs"], "start_probs", (n_states,)
            )
        if "transition_probs" in tensors:
            new_values["transition_probs"] = _check_probabilities(
                tensors["transition_probs"], "transition_probs", (n_states, n_states)
            )
        if "emission_probs" in tensors:
            self._require_family("emission_probs", "categorical", "multinomial")
            n_columns = self.n_symbols if self.family == "categorical" else self.n_features
            new_values["emission.probs"] = _check_probabilities(
                tensors["emission_probs"], "emission_probs", (n_states, n_columns)
            )
        if "rates" in tensors:
            self._require_family("rates", "poisson")
            rates = tensors["rates"].reshape(n_states, -1)
            _check_shape(rates, "rates", (n_states, self.n_features))
            if (rates < 0).any():
                raise DataError("rates must be non-negative")
            new_values["emission.rates"] = rates
        if "mixture_weights" in tensors:
            self._require_family("mixture_weights", "gmm")
            new_values["emission.weights"] = _check_probabilities(
                tensors["mixture_weights"], "mixture_weights", (n_states, self.n_mix)
            )
        if "means" in tensors:
            self._require_family("means", "gaussian", "gmm")
            shape = (
                (n_states, self.n_features)
                if self.family == "gaussian"
                else (n_states, self.n_mix, self.n_features)
            )
            means = tensors["means"]
            _check_shape(means, "means", shape)
            new_values["emission.components.means"] = means.reshape(-1, self.n_features)
        if "covariances" in tensors:
            self._require_family("covariances", "gaussian", "gmm")
            new_values["emission.components.covariance_storage"] = _covariance_storage(
                tensors["covariances"],
                emission.components,
                self.n_mix if self.family == "gmm" else None,
            )
        for name in ("transition_input_weights", "start_input_weights"):
            if name in tensors:
                _check_shape(tensors[name], name, tuple(getattr(self, name).shape))
                new_values[name] = tensors[name] - tensors[name].mean(-1, keepdim=True)
        for name, value in new_values.items():
            owner_path, _, leaf = name.rpartition(".")
            owner = self.get_submodule(owner_path) if owner_path else self
            setattr(owner, leaf, value.clone())
        if "means" in tensors and hasattr(emission, "components"):
            emission.components.center = emission.components.means.mean(0)
        self._mark_fitted()
        return self

    def _require_family(self, name: str, *families: str) -> None:
        if self.family not in families:
            raise DataError(f"{name} applies to emission {families}, not {self.family!r}")


def _check_shape(value: torch.Tensor, name: str, shape: tuple[Any, ...]) -> None:
    if tuple(value.shape) != tuple(shape):
        raise DataError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")


def _check_probabilities(value: torch.Tensor, name: str, shape: tuple[Any, ...]) -> torch.Tensor:
    _check_shape(value, name, shape)
    if (value < 0).any():
        raise DataError(f"{name} has negative entries")
    sums = value.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        raise DataError(f"{name} rows must sum to 1, got sums {sums.tolist()}")
    return value / sums.unsqueeze(-1)


def _covariance_storage(value: torch.Tensor, components: Any, n_mix: int | None) -> torch.Tensor:
    """Accept hmmlearn's storage shape for the covariance type, or full matrices.

    `n_mix` is None for Gaussian emissions and the number of components for mixtures (whose
    hmmlearn shapes carry a (n_states, n_mix) prefix).
    """
    k, d = components.n_components, components.n_features
    kind = components.covariance
    prefix = (k,) if n_mix is None else (k // n_mix, n_mix)
    groups = components.tied_groups
    tied_shape = (d, d) if groups is None else (groups, d, d)
    storage_shape = {"diag": (k, d), "spherical": (k,), "full": (k, d, d), "tied": tied_shape}[kind]
    given = {
        "diag": (*prefix, d),
        "spherical": prefix,
        "full": (*prefix, d, d),
        "tied": tied_shape,
    }[kind]
    shape = tuple(value.shape)
    if shape in (given, storage_shape):
        storage = value.reshape(storage_shape)
    elif kind == "spherical" and value.numel() in (k, k * d) and value.shape[0] == prefix[0]:
        # hmmlearn accepts any array of one variance per state ((n, 1, 1, 1) too) and tiles
        # fitted spherical variances over the features.
        storage = value.reshape(k, -1).mean(-1)
    elif shape == (*prefix, d, d):
        full = value.reshape(k, d, d)
        if kind == "diag":
            storage = full.diagonal(dim1=-2, dim2=-1)
        elif kind == "spherical":
            storage = full.diagonal(dim1=-2, dim2=-1).mean(-1)
        elif kind == "full":
            storage = full
        elif groups is None:
            storage = full[0]
        else:
            storage = full.reshape(groups, -1, d, d)[:, 0]
    else:
        raise DataError(
            f"covariances has shape {shape}; expected {given} for covariance='{kind}' or full "
            f"matrices {(*prefix, d, d)}"
        )
    if kind in ("full", "tied"):
        if not torch.allclose(storage, storage.transpose(-1, -2), atol=1e-8):
            raise DataError("covariances must be symmetric")
        if (torch.linalg.eigvalsh(storage) <= 0).any():
            raise DataError("covariances must be positive definite")
    elif (storage <= 0).any():
        raise DataError("covariances (variances) must be positive")
    return storage


def _normalize_with_fallback(counts: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    total = counts.sum(-1, keepdim=True)
    normalized = counts / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, normalized, fallback)
