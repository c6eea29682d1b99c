"""What an HMM-like model does with its emissions: building them, checking sequence input.

`EmissionHostMixin` is shared by `probgen.hmm.model.HMM` and `probgen.hmm.semi_markov.HSMM`:
the emission family named by the constructor's ``emission`` (built lazily when its size comes
from data), its readable parameters (``emission_probs``, ``means``, ``covariances``,
``mixture_weights``, ``rates``), the conversion of sequence input to padded `Sequences` with
the family's checks, and ``enumerate_support`` for categorical emissions. The host provides
``n_states``, ``emission_spec``, ``emission``, the size settings and a ``start_probs`` buffer.

Example:
    >>> from probgen.hmm import HMM
    >>> from probgen.hmm.hosting import EmissionHostMixin
    >>> issubclass(HMM, EmissionHostMixin), HMM(2, "poisson").family
    (True, 'poisson')
"""

from __future__ import annotations

from typing import Any

import torch

import probgen.hmm.inference as hmm_inference
from probgen.core.data import Sequences, as_sequences, check_positive_int
from probgen.core.errors import DataError
from probgen.hmm.emissions import Emission, build_emission
from probgen.hmm.sequences import (
    _add_feature_axis,
    _count_sequences,
    _in_support,
    _infer_n_features,
)

_VECTOR_FAMILIES = ("gaussian", "gmm", "poisson", "multinomial")


class EmissionHostMixin:
    """Emission building, readable emission parameters and input checks (a mixin)."""

    # ---- configuration -------------------------------------------------------------------
    @property
    def family(self) -> str:
        """``"categorical"``, ``"gaussian"``, ``"gmm"``, ``"poisson"`` or ``"torch"``."""
        return self.emission_spec if isinstance(self.emission_spec, str) else "torch"

    def get_config(self) -> dict[str, Any]:
        # The derived config would read `self.emission`, the built module: the constructor's
        # `emission` is kept as `emission_spec`, and a custom distribution needs its JSON form.
        config = super().get_config()
        emission: Any = self.emission_spec
        if not isinstance(emission, str):
            if self.emission is None:  # pragma: no cover - custom emissions are built eagerly
                raise DataError("custom emission is missing")
            emission = self.emission.config()["emission"]
        config["emission"] = emission
        return config

    def set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        # Loading keeps the saved precision (load_state_dict alone would cast to float32).
        saved = tensors.get("start_probs")
        if saved is not None and saved.is_floating_point():
            self.to(saved.dtype)
        super().set_tensors(tensors)

    def _build_emission(self) -> Emission | None:
        return build_emission(
            self.emission_spec,
            self.n_states,
            n_symbols=self.n_symbols,
            n_features=self.n_features,
            covariance=self.covariance,
            n_mix=self.n_mix,
            pseudocount=self.pseudocount,
            covariance_prior=self.covariance_prior,
            covariance_floor=self.covariance_floor,
            n_trials=self.n_trials,
        )

    def _refresh_event_shape(self) -> None:
        if self.emission is not None:
            self.event_shape = torch.Size(self.emission.event_shape)
        elif self.family in _VECTOR_FAMILIES and self.n_features is not None:
            self.event_shape = torch.Size([self.n_features])
        else:
            self.event_shape = torch.Size()

    def _ensure_emission(self) -> Emission:
        if self.emission is None:
            emission = self._build_emission()
            if emission is None:  # pragma: no cover - sizes are inferred before this call
                raise DataError("emission sizes are unknown; give n_symbols or n_features")
            self.emission = emission.to(device=self.device, dtype=self.dtype)
            self._refresh_event_shape()
        return self.emission

    # ---- readable parameters ---------------------------------------------------------------
    @property
    def emission_probs(self) -> torch.Tensor:
        """(n_states, n_symbols) categorical emission probabilities."""
        return self._emission_attribute("probs", "categorical", "multinomial")

    @property
    def means(self) -> torch.Tensor:
        """State means (n_states, n_features), or (n_states, n_mix, n_features) for mixtures."""
        return self._emission_attribute("means", "gaussian", "gmm")

    @property
    def covariances(self) -> torch.Tensor:
        """Full covariance matrices (n_states[, n_mix], n_features, n_features)."""
        return self._emission_attribute("covariances", "gaussian", "gmm")

    @property
    def mixture_weights(self) -> torch.Tensor:
        """(n_states, n_mix) mixture weights of ``emission="gmm"``."""
        return self._emission_attribute("weights", "gmm")

    @property
    def rates(self) -> torch.Tensor:
        """(n_states, n_features) Poisson rates."""
        return self._emission_attribute("rates", "poisson")

    def _emission_attribute(self, name: str, *families: str) -> torch.Tensor:
        if self.family not in families:
            raise AttributeError(
                f"{name} is defined for emission {' or '.join(map(repr, families))}, "
                f"not {self.family!r}"
            )
        if self.emission is None:
            self.check_fitted(name)
        return getattr(self.emission, name)

    def emission_distribution(self) -> torch.distributions.Distribution:
        """The emissions as one torch distribution with batch shape (n_states,)."""
        self.check_fitted("emission_distribution")
        return self._ensure_emission().distribution()

    # ---- data ------------------------------------------------------------------------------
    def _prepare(self, data: Any, name: str = "sequences", *, fitting: bool = False) -> Sequences:
        """Check and convert sequence input to padded `Sequences` on the model's device."""
        family = self.family
        if family == "categorical":
            # A missing symbol is -1 (in any input) or NaN (in float input).
            sequences = as_sequences(
                data,
                name,
                event_shape=(),
                allow_nan=True,
                integer=True,
                min_value=-1,
                max_value=None if self.n_symbols is None else self.n_symbols - 1,
            )
            values = sequences.values
            if values.is_floating_point():
                values = values.nan_to_num(-1.0)
            values = values.long()
            if not bool((values[sequences.mask] >= 0).any()):
                raise DataError(f"{name} has no observed symbols (all missing)")
            if self.n_symbols is None:
                if not fitting:
                    self.check_fitted("this method")
                self.n_symbols = int(values.max()) + 1
        elif family in _VECTOR_FAMILIES:
            data = _add_feature_axis(data, self.n_features)
            n_features = self.n_features
            if n_features is None:
                if not fitting:
                    self.check_fitted("this method")
                n_features = _infer_n_features(data, name)
            poisson = family == "poisson"
            counts = poisson or family == "multinomial"
            sequences = as_sequences(
                data,
                name,
                event_shape=(n_features,),
                allow_nan=family != "multinomial",
                integer=counts,
                min_value=0 if counts else None,
            )
            self.n_features = n_features
            values = sequences.values.to(self.dtype)
            if torch.isinf(values).any():  # finite float64 beyond the model dtype's range
                raise DataError(f"{name} has values too large for {self.dtype}")
            if torch.isnan(values).all():
                raise DataError(f"{name} has no observed values (all NaN)")
            if not counts:
                emission = self._ensure_emission()
                emission.check_missing(values, name)  # type: ignore[attr-defined]
        else:
            emission = self._ensure_emission()
            sequences = as_sequences(data, name, event_shape=tuple(emission.event_shape))
            values = sequences.values.to(self.dtype)
            support = emission.distribution().support
            outside = ~_in_support(support, values, len(emission.event_shape)) & sequences.mask
            if outside.any():
                where = outside.nonzero()[0].tolist()
                raise DataError(
                    f"{name}[{where[0]}] step {where[1]} lies outside the support of the "
                    f"emission distribution ({support})"
                )
        lengths = sequences.lengths
        if bool((lengths < values.shape[1]).any()):
            # Padding must hold valid values (the emission is evaluated there, then ignored).
            mask = sequences.mask.reshape(*sequences.mask.shape, *([1] * (values.dim() - 2)))
            values = torch.where(mask, values, values[:, :1])
        self._ensure_emission()
        return Sequences(values.to(self.device), lengths.to(self.device))

    def _threads(self, n_sequences: int) -> Any:
        """Small problems run on one intra-op thread (see `step_loop_threads`)."""
        return hmm_inference.step_loop_threads(self.start_probs, n_sequences, self.n_states)

    def _threads_for(self, data: Any) -> Any:
        """`_threads` for raw input, entered before `_prepare`.

        The input checks then run on the same single thread as the inference: waking a second
        intra-op thread for each of them costs more than the scans themselves on a busy machine.
        """
        return self._threads(_count_sequences(data))

    def _emission_log_probs(self, sequences: Sequences) -> torch.Tensor:
        assert self.emission is not None
        return self.emission.log_prob(sequences.values)

    @property
    def enumerate_support(self) -> Any:
        """`enumerate_support(length)`: every symbol sequence of `length` steps.

        Defined for categorical emissions only (other families have no such attribute, so
        `hasattr(model, "enumerate_support")` tells whether the support is enumerable). Returns
        a (n_symbols ** length, length) long tensor; more than 2**20 sequences is a DataError.
        """
        if self.family != "categorical":
            raise AttributeError("enumerate_support is defined for categorical emissions only")
        return self._enumerate_support

    def _enumerate_support(self, length: int) -> torch.Tensor:
        self.check_fitted("enumerate_support")
        length = check_positive_int(length, "length")
        assert self.n_symbols is not None
        if self.n_symbols**length > 2**20:
            raise DataError(
                f"{self.n_symbols}**{length} sequences are too many to enumerate (limit 2**20)"
            )
        symbols = torch.arange(self.n_symbols, device=self.device)
        grids = torch.meshgrid(*([symbols] * length), indexing="ij")
        return torch.stack(grids, -1).reshape(-1, length)
