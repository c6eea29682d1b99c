"""Maximum mean discrepancy between two samples (a kernel two-sample statistic).

Example:
    >>> import torch
    >>> from probgen.metrics.mmd import mmd
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 2
    >>> bool(mmd(x, y) > mmd(x, torch.randn(200, 2, generator=g)))
    True
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.data import as_tensor
from probgen.core.errors import DataError

__all__ = ["mmd", "median_bandwidth"]


def _as_points(data: Any, name: str) -> torch.Tensor:
    tensor = as_tensor(data, name, dtype=torch.float64)
    if tensor.dim() == 1:
        tensor = tensor[:, None]
    return tensor.reshape(tensor.shape[0], -1)


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """The median pairwise distance of the pooled sample (the usual RBF bandwidth heuristic)."""
    pooled = torch.cat([x, y])
    if pooled.shape[0] > 2000:
        pooled = pooled[torch.linspace(0, pooled.shape[0] - 1, 2000).long()]
    distances = torch.cdist(pooled, pooled)
    upper = distances[torch.triu_indices(len(pooled), len(pooled), 1).unbind()]
    value = float(upper.median())
    return value if value > 0 else 1.0


def mmd(
    x: Any,
    y: Any,
    *,
    bandwidth: float | list[float] | None = None,
    unbiased: bool = True,
) -> torch.Tensor:
    """Squared MMD between samples x and y with a Gaussian (RBF) kernel.

    k(a, b) = exp(-|a - b|^2 / (2 h^2)), summed over the bandwidths h when several are given.

    Args:
        x: first sample (n, ...); examples are flattened to vectors.
        y: second sample (m, ...).
        bandwidth: h, or a list of them; by default the median pairwise distance.
        unbiased: the unbiased U-statistic (can be slightly negative) or the biased V-statistic.

    Returns:
        0-d float64 tensor: the squared MMD estimate.
    """
    x = _as_points(x, "x")
    y = _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"x has {x.shape[1]} features per example, y has {y.shape[1]}")
    if unbiased and (len(x) < 2 or len(y) < 2):
        raise DataError("the unbiased MMD needs at least two examples in x and in y")
    if bandwidth is None:
        bandwidths = [median_bandwidth(x, y)]
    else:
        bandwidths = [float(b) for b in (bandwidth if isinstance(bandwidth, list) else [bandwidth])]
    if any(b <= 0 for b in bandwidths):
        raise DataError(f"bandwidth must be positive, got {bandwidth}")

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        squared = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-squared / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    if unbiased:
        term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        term_x, term_y = kxx.mean(), kyy.mean()
    return term_x + term_y - 2 * kxy.mean()
