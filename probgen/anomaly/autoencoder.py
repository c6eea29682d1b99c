"""Anomaly detection by reconstruction error: `AutoencoderDetector`.

An MLP autoencoder is trained on (mostly normal) data with probgen's shared gradient loop; an
example it reconstructs badly is an anomaly. `score_samples` is minus the mean squared
reconstruction error per feature (higher = more normal, scikit-learn's convention). It is not
a density: `log_prob_kind` is "none".

Example:
    >>> import torch
    >>> from probgen.anomaly import AutoencoderDetector
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(256, 2, generator=g) @ torch.tensor([[1.0, 1.0, 1.0, 1.0], [0, 1, -1, 0]])
    >>> detector = AutoencoderDetector(hidden_dims=(16,), code_dim=2, n_epochs=60, seed=0).fit(x)
    >>> odd = torch.tensor([[3.0, -3.0, 3.0, -3.0]])  # off the plane the data lie in
    >>> detector.predict(odd).tolist(), bool(detector.score_samples(odd)[0] < -1.0)
    ([-1], True)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from probgen.anomaly.base import ThresholdedDetector, as_examples, batched_scores
from probgen.anomaly.base import check_contamination as _check_contamination
from probgen.anomaly.networks import mlp
from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import check_positive_int
from probgen.core.errors import DataError, NoDensityError
from probgen.fitting.loop import fit_with_model_settings

__all__ = ["AutoencoderDetector"]


def _check_sizes(values: Any, name: str) -> tuple[int, ...]:
    """`values` as a tuple of positive ints; a valid tuple is kept as it is (so that
    scikit-learn's `clone`, which checks that the constructor stores its arguments, works)."""
    if isinstance(values, int):
        values = (values,)
    checked = tuple(check_positive_int(d, f"{name}[{i}]") for i, d in enumerate(values))
    return values if isinstance(values, tuple) and checked == values else checked


def _check_shape(input_shape: Any) -> tuple[int, ...] | None:
    return None if input_shape is None else _check_sizes(input_shape, "input_shape")


class AutoencoderDetector(ThresholdedDetector, Model):
    """Outliers are the examples an MLP autoencoder trained on the data reconstructs badly.

    Args:
        input_shape: shape of one example; None takes it from the data in `fit`.
        hidden_dims: hidden layer sizes of the encoder (the decoder mirrors them).
        code_dim: size of the bottleneck.
        contamination: fraction of the training examples taken as outliers; sets `offset_`.
        standardize: scale each feature to zero mean and unit variance on the training data
            before encoding (tabular data); the error is measured in those units.
        n_epochs, batch_size, learning_rate: training settings (overridable in `fit`).
        weight_decay: L2 penalty of the optimiser.
        seed: seed of the initial weights and of training; None draws fresh randomness.

    Attributes:
        offset_: the threshold on `score_samples` set by `fit`.
        history_: one dict per epoch (`train_loss`: mean squared error).
    """

    log_prob_kind = LogProbKind.NONE
    fitted_attributes = ("history_", "offset_")

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int] | int | None = None,
        hidden_dims: tuple[int, ...] | list[int] = (128,),
        code_dim: int = 32,
        contamination: float = 0.1,
        standardize: bool = False,
        n_epochs: int = 50,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = _check_shape(input_shape)
        self.hidden_dims = _check_sizes(hidden_dims, "hidden_dims")
        self.code_dim = check_positive_int(code_dim, "code_dim")
        self.contamination = _check_contamination(contamination)
        self.standardize = bool(standardize)
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        if not weight_decay >= 0:
            raise DataError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.seed = seed
        self.offset_ = None
        # Sized by fit; they also carry the detector's device before the network exists.
        self.register_buffer("feature_mean", torch.zeros(0))
        self.register_buffer("feature_scale", torch.ones(0))
        self.encoder: nn.Module | None = None
        self.decoder: nn.Module | None = None
        if self.input_shape is not None:
            self._build(self.input_shape)

    def get_config(self) -> dict[str, Any]:
        # Tuples kept as tuples (JSON writes them as lists): scikit-learn's clone needs the
        # constructor to store exactly what get_params returns.
        config = super().get_config()
        config["input_shape"] = self.input_shape
        config["hidden_dims"] = self.hidden_dims
        return config

    def _build(self, input_shape: tuple[int, ...]) -> None:
        n_features = math.prod(input_shape)
        device, dtype = self.device, self.dtype
        with seeded_initialisation(self.seed):
            self.encoder = mlp([n_features, *self.hidden_dims, self.code_dim])
            self.decoder = mlp([self.code_dim, *reversed(self.hidden_dims), n_features])
        self.encoder.to(device=device, dtype=dtype)
        self.decoder.to(device=device, dtype=dtype)
        self.feature_mean = torch.zeros(n_features, device=device, dtype=dtype)
        self.feature_scale = torch.ones(n_features, device=device, dtype=dtype)

    def _flat(self, x: Any, name: str) -> torch.Tensor:
        tensor = as_examples(x, name, dtype=self.dtype, device=self.device)
        if self.input_shape is not None and tuple(tensor.shape[1:]) != self.input_shape:
            raise DataError(
                f"{name} has examples of shape {tuple(tensor.shape[1:])}; the detector was "
                f"built for {self.input_shape}"
            )
        return tensor.flatten(1)

    def reconstruct(self, x: Any) -> torch.Tensor:
        """The autoencoder's reconstruction of `x`, in the data's units, shape of `x`."""
        self.check_fitted("reconstruct")
        flat = self._flat(x, "x")
        standard = (flat - self.feature_mean) / self.feature_scale
        with torch.no_grad():
            out = self.decoder(self.encoder(standard)) * self.feature_scale + self.feature_mean
        return out.reshape(-1, *self.input_shape)

    def _errors(self, flat: torch.Tensor) -> torch.Tensor:
        standard = (flat - self.feature_mean) / self.feature_scale
        return (self.decoder(self.encoder(standard)) - standard).pow(2).mean(1)

    def fit(self, X: Any, y: Any = None, **options: Any) -> AutoencoderDetector:
        """Train the autoencoder on `X` and set `offset_` from the training errors.

        Args:
            X: training examples (n, n_features) or (n, *example_shape).
            y: ignored (scikit-learn's signature).
            **options: settings for `probgen.fitting.fit_model` (n_epochs, batch_size,
                learning_rate, validation_data, ...).

        Returns:
            self, with `history_` and `offset_`.
        """
        tensor = as_examples(X, "X", dtype=self.dtype, device=self.device)
        shape = tuple(tensor.shape[1:])
        if self.input_shape is not None and shape != self.input_shape:
            raise DataError(
                f"X has examples of shape {shape}; the detector was built for {self.input_shape}"
            )
        self.input_shape = shape
        self._build(shape)  # a fresh, seeded network on every fit
        flat = tensor.flatten(1)
        if self.standardize:
            self.feature_mean = flat.mean(0)
            self.feature_scale = flat.std(0).nan_to_num(1.0).clamp_min(1e-6)
        validation = options.pop("validation_data", None)
        if validation is not None:
            validation = self._flat(validation, "validation_data")
        fit_with_model_settings(
            self,
            flat,
            loss=lambda model, batch: model._errors(batch).mean(),
            validation_data=validation,
            validation_log_prob=lambda model, batch: -model._errors(batch),
            options=options,
            setting_names=("n_epochs", "batch_size", "learning_rate", "seed", "weight_decay"),
        )
        self.offset_ = None
        self._set_offset(self._normality(tensor).double().cpu().numpy())
        return self

    def _normality(self, x: Any) -> torch.Tensor:
        self.check_fitted("score_samples")
        flat = self._flat(x, "X")
        self.eval()
        return -batched_scores(self._errors, flat, self.scoring_batch_size)

    def _check_offset(self, method: str) -> float:
        self.check_fitted(method)
        return super()._check_offset(method)

    def log_prob(self, x: Any) -> torch.Tensor:
        raise NoDensityError(
            "AutoencoderDetector has no density; use score_samples (minus the reconstruction "
            "error)"
        )
