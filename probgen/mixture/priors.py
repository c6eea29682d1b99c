"""The Bayesian Gaussian mixture's conjugate prior settings: checks and data-scaled defaults.

`prior_settings` checks the seven prior settings of `GaussianMixture` (constructor arguments
or its `prior` dict) and returns their JSON-able form, which `get_config` saves;
`data_covariance` is the default inverse-Wishart scale's base.

Example:
    >>> from probgen.mixture.priors import prior_settings
    >>> settings = prior_settings({"mean_precision": 0.01, "mean_prior": [0, 1]},
    ...                           {"mean_precision": 2})
    >>> settings["mean_precision"], settings["mean_prior"]
    (2.0, [0.0, 1.0])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from probgen.core.data import as_tensor
from probgen.core.errors import DataError
from probgen.mixture.inference import covariances_valid

PRIOR_KEYS = (
    "weight_concentration",
    "mean_prior",
    "mean_precision",
    "variance_shape",
    "variance_scale",
    "covariance_df",
    "covariance_scale",
)
# Defaults of the settings `prior_settings` fills in when a caller leaves one out.
PRIOR_DEFAULTS: dict[str, Any] = {
    "weight_concentration": 1.0,
    "mean_prior": None,
    "mean_precision": 0.01,
    "variance_shape": 1.0,
    "variance_scale": None,
    "covariance_df": None,
    "covariance_scale": None,
}


def prior_settings(settings: dict[str, Any], prior: dict[str, Any] | None) -> dict[str, Any]:
    """Checked prior settings: `settings` (missing keys at their defaults), `prior`'s entries
    taking precedence; numbers become floats and arrays nested lists.

    Raises:
        DataError: an unknown key or an invalid value.
    """
    settings = {**PRIOR_DEFAULTS, **settings}
    if prior is not None:
        if not isinstance(prior, dict):
            raise DataError(f"prior must be a dict with keys {PRIOR_KEYS}, got {prior!r}")
        unknown = set(prior) - set(PRIOR_KEYS)
        if unknown:
            raise DataError(f"prior has unknown key(s) {sorted(unknown)}; known: {PRIOR_KEYS}")
        settings.update(prior)
    for name in ("weight_concentration", "mean_precision", "variance_shape"):
        settings[name] = positive(settings[name], name)
    for name in ("mean_prior", "variance_scale"):
        settings[name] = optional_values(settings[name], name, positive=name != "mean_prior")
    if settings["covariance_df"] is not None:
        settings["covariance_df"] = positive(settings["covariance_df"], "covariance_df")
    settings["covariance_scale"] = optional_scale_matrix(settings["covariance_scale"])
    return settings

def nonnegative(value: Any, name: str) -> float:
    """`value` as a float, checked to be a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise DataError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def positive(value: Any, name: str) -> float:
    """`value` as a float, checked to be a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise DataError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise DataError(f"{name} must be finite, got {value!r}")
    return float(value)


def optional_values(value: Any, name: str, *, positive: bool) -> float | list[float] | None:
    """None, a number, or a list of numbers (JSON-able for get_config)."""
    if value is None:
        return None
    tensor = as_tensor(value, name, dtype=torch.float64)
    if tensor.dim() > 1:
        raise DataError(f"{name} must be a number or one value per feature, got {value!r}")
    if positive and bool((tensor <= 0).any()):
        raise DataError(f"{name} must be positive, got {value!r}")
    scalar = isinstance(value, (int, float)) or tensor.dim() == 0
    return float(tensor.reshape(-1)[0]) if scalar else tensor.tolist()


def optional_scale_matrix(value: Any) -> float | list[float] | list[list[float]] | None:
    """None, a positive number, positive per-feature values or a symmetric positive-definite
    matrix (JSON-able for get_config)."""
    if value is None:
        return None
    name = "covariance_scale"
    matrix = as_tensor(value, name, dtype=torch.float64)
    if matrix.dim() < 2:
        return optional_values(value, name, positive=True)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DataError(
            f"{name} must be a number, one value per feature or a square matrix, got "
            f"shape {tuple(matrix.shape)}"
        )
    tolerance = 1e-10 * float(matrix.abs().max().clamp_min(1e-300))
    if not bool(((matrix - matrix.T).abs() <= tolerance).all()):
        raise DataError(f"{name} must be a symmetric matrix")
    if not covariances_valid(matrix.unsqueeze(0), "full"):
        raise DataError(f"{name} must be positive definite")
    return matrix.tolist()


def data_covariance(x: Tensor) -> Tensor:
    """The data's maximum-likelihood covariance (D, D), or its diagonal (variances clamped
    positive) when it is not positive definite (fewer points than features, collinear
    features, constant data)."""
    covariance = torch.cov(x.T, correction=0).reshape(x.shape[1], x.shape[1])
    if covariances_valid(covariance.unsqueeze(0), "full"):
        return covariance
    return torch.diag_embed(x.var(0, unbiased=False).clamp_min(1e-12))
