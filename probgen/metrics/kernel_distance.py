"""Kernel distance (KID, Bińkowski et al. 2018): unbiased MMD^2 with a polynomial kernel.

k(a, b) = (gamma <a, b> + coef)^degree, with gamma = 1 / d by default (d = feature dimension),
degree 3 and coef 1. `kernel_distance` averages the unbiased MMD^2 over `subsets` random
subsets of `subset_size` examples from each set, drawn as torchmetrics'
`KernelInceptionDistance` draws them (one `randperm` of the reals, then one of the fakes, per
subset), so with the same seed and the same feature module the two give the same numbers.

Example:
    >>> import torch
    >>> from probgen.metrics.kernel_distance import kernel_distance
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(400, 8, generator=g)
    >>> same = kernel_distance(x[:200], x[200:], subsets=10, subset_size=100)
    >>> shifted = kernel_distance(x[:200], x[200:] + 1, subsets=10, subset_size=100)
    >>> abs(float(same.mean)) < 0.5 < float(shifted.mean)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from probgen.core.errors import DataError
from probgen.metrics.prdc import as_feature_matrix

__all__ = ["kernel_distance", "polynomial_mmd", "KernelDistance"]


class KernelDistance(NamedTuple):
    """Mean and (population) standard deviation of the per-subset unbiased MMD^2."""

    mean: torch.Tensor
    std: torch.Tensor


def _polynomial_kernel(
    a: torch.Tensor, b: torch.Tensor, degree: int, gamma: float, coef: float
) -> torch.Tensor:
    return (a @ b.T * gamma + coef) ** degree


def polynomial_mmd(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
) -> torch.Tensor:
    """Unbiased MMD^2 between feature matrices (n, d) and (m, d) with a polynomial kernel."""
    n, m = real.shape[0], fake.shape[0]
    gamma = 1.0 / real.shape[1] if gamma is None else gamma
    k_rr = _polynomial_kernel(real, real, degree, gamma, coef)
    k_ff = _polynomial_kernel(fake, fake, degree, gamma, coef)
    k_rf = _polynomial_kernel(real, fake, degree, gamma, coef)
    within_real = (k_rr.sum() - k_rr.diagonal().sum()) / (n * (n - 1))
    within_fake = (k_ff.sum() - k_ff.diagonal().sum()) / (m * (m - 1))
    return within_real + within_fake - 2 * k_rf.sum() / (n * m)


def kernel_distance(
    real: Any,
    fake: Any,
    *,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    subsets: int = 100,
    subset_size: int | None = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int | None = 0,
) -> KernelDistance:
    """KID: unbiased polynomial-kernel MMD^2 between `real` and `fake`, averaged over subsets.

    Args:
        real: real examples (n, ...) (flattened), or their features.
        fake: generated examples (m, ...).
        features: map from a batch of examples to features (e.g.
            `load_feature_classifier("mnist").features`); by default the examples themselves.
        subsets: number of random subsets.
        subset_size: examples per subset from each set; at most min(n, m). None uses
            min(1000, n, m).
        degree, gamma, coef: the kernel (gamma None: 1 / feature dimension).
        seed: seed of the subset draws (None: torch's global generator, as torchmetrics).

    Returns:
        `KernelDistance(mean, std)` of 0-d float64 tensors (std over subsets, population form).

    Raises:
        DataError: empty sets, NaN, different feature dimensions, bad subset settings.
    """
    real_x = as_feature_matrix(real, "real", features)
    fake_x = as_feature_matrix(fake, "fake", features)
    if real_x.shape[1] != fake_x.shape[1]:
        raise DataError(
            f"real has {real_x.shape[1]} features per example, fake has {fake_x.shape[1]}"
        )
    n, m = real_x.shape[0], fake_x.shape[0]
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 1:
        raise DataError(f"subsets must be a positive integer, got {subsets!r}")
    if subset_size is None:
        subset_size = min(1000, n, m)
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 2:
        raise DataError(f"subset_size must be an integer of at least 2, got {subset_size!r}")
    if subset_size > min(n, m):
        raise DataError(
            f"subset_size = {subset_size} is larger than real ({n} examples) or fake ({m})"
        )
    if degree < 1 or coef <= 0 or (gamma is not None and gamma <= 0):
        raise DataError("degree must be at least 1, and coef and gamma positive")
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    scores = []
    for _ in range(subsets):
        real_rows = torch.randperm(n, generator=generator)[:subset_size]
        fake_rows = torch.randperm(m, generator=generator)[:subset_size]
        scores.append(
            polynomial_mmd(
                real_x[real_rows], fake_x[fake_rows], degree=degree, gamma=gamma, coef=coef
            )
        )
    values = torch.stack(scores)
    return KernelDistance(values.mean(), values.std(unbiased=False))
