"""Fréchet distance between Gaussians fitted to feature statistics (the FID formula).

d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})

Example:
    >>> import torch
    >>> from probgen.metrics.frechet import frechet_distance
    >>> mean_1, cov_1, mean_2, cov_2 = torch.zeros(1), torch.eye(1), torch.ones(1), 4 * torch.eye(1)
    >>> float(frechet_distance(mean_1, cov_1, mean_2, cov_2, squared=True))
    2.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from probgen.core.data import as_tensor
from probgen.core.errors import DataError

__all__ = ["frechet_distance", "frechet_distance_from_samples", "feature_statistics"]


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(
    mean_1: Any, cov_1: Any, mean_2: Any, cov_2: Any, *, squared: bool = False
) -> torch.Tensor:
    """Fréchet (2-Wasserstein) distance between N(mean_1, cov_1) and N(mean_2, cov_2).

    Args:
        mean_1, cov_1: mean (d,) and covariance (d, d) of the first Gaussian.
        mean_2, cov_2: the same for the second.
        squared: return d^2 (what FID reports) instead of d.

    Returns:
        0-d float64 tensor.
    """
    mean_1 = as_tensor(mean_1, "mean_1", dtype=torch.float64).reshape(-1)
    mean_2 = as_tensor(mean_2, "mean_2", dtype=torch.float64).reshape(-1)
    d = mean_1.shape[0]
    cov_1 = as_tensor(cov_1, "cov_1", dtype=torch.float64, event_shape=(d, d))
    cov_2 = as_tensor(cov_2, "cov_2", dtype=torch.float64, event_shape=(d, d))
    if mean_2.shape[0] != d or cov_1.dim() != 2 or cov_2.dim() != 2:
        raise DataError("means must have shape (d,) and covariances (d, d) with the same d")
    root_1 = _sqrtm_psd(cov_1)
    cross = _sqrtm_psd(root_1 @ cov_2 @ root_1)
    value = (mean_1 - mean_2).pow(2).sum() + torch.trace(cov_1 + cov_2 - 2 * cross)
    value = value.clamp_min(0)
    return value if squared else value.sqrt()


def feature_statistics(features: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and covariance (d, d) of features (n, d), in float64."""
    values = as_tensor(features, "features", dtype=torch.float64)
    values = values.reshape(values.shape[0], -1)
    if values.shape[0] < 2:
        raise DataError("features needs at least two examples for a covariance")
    return values.mean(0), torch.cov(values.T).reshape(values.shape[1], values.shape[1])


def frechet_distance_from_samples(
    x: Any,
    y: Any,
    *,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    squared: bool = True,
) -> torch.Tensor:
    """Fréchet distance between Gaussians fitted to features of two samples.

    Args:
        x: first sample (n, ...).
        y: second sample (m, ...).
        features: map from a batch of examples to feature vectors (a classifier's penultimate
            layer, for an FID-like score); by default the flattened examples themselves.
        squared: return d^2 (FID's convention), default True.

    Returns:
        0-d float64 tensor.
    """
    x = as_tensor(x, "x")
    y = as_tensor(y, "y")
    if features is not None:
        with torch.no_grad():
            x, y = features(x), features(y)
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    if x.shape[1] != y.shape[1]:
        raise DataError(f"x has {x.shape[1]} features per example, y has {y.shape[1]}")
    mean_x, cov_x = feature_statistics(x)
    mean_y, cov_y = feature_statistics(y)
    return frechet_distance(mean_x, cov_x, mean_y, cov_y, squared=squared)
