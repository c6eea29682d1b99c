"""Mode-collapse diagnostics on mixtures with known modes, following PacGAN's protocol.

The benchmark of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018, Section 4.1 and
Table 1; code: github.com/fjxmlzn/PacGAN, ``synthetic_data_experiments``): a generator
trained on a mixture of equal-weight isotropic Gaussians with known means is judged on 2,500
of its samples by

* **high-quality samples**: the share of samples within 3 standard deviations of their
  nearest mode (PacGAN's ``MetricLogger``: distance to each mean in units of that mode's
  standard deviation, nearest mode, threshold 3);
* **modes captured**: the number of modes that receive at least one high-quality sample
  (PacGAN's "mode coverage", the non-zero entries of the per-mode histogram);
* **reverse KL**: ``KL(q || p)`` between the histogram ``q`` of the high-quality samples over
  the modes and the true mode weights ``p`` (uniform), in nats; a missed mode adds nothing to
  it (it is finite), a lopsided histogram does.

The two data sets: the **2-D grid** of 25 modes with means on ``{-4, -2, 0, 2, 4}^2`` and
standard deviation 0.05, and the **2-D ring** of 8 modes on the unit circle with standard
deviation 0.01 (PacGAN's configs). PacGAN reports for the grid GAN 17.3 modes / 94.8 %
high-quality / reverse KL 0.70 and PacGAN4 24.8 / 93.6 % / 0.04 (means over 10 runs).

Example:
    >>> from probgen.metrics.modes import grid_means, mode_collapse_metrics, sample_grid
    >>> x = sample_grid(2500, seed=0)
    >>> report = mode_collapse_metrics(x, grid_means(), std=0.05)
    >>> report["modes_captured"], report["high_quality_fraction"] > 0.98
    (25, True)
    >>> report["reverse_kl"] < 0.02
    True
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from probgen.core.data import as_tensor, check_positive_int
from probgen.core.errors import DataError

__all__ = [
    "GRID_STD",
    "RING_STD",
    "N_EVAL_SAMPLES",
    "grid_means",
    "ring_means",
    "sample_grid",
    "sample_ring",
    "sample_mixture",
    "mode_collapse_metrics",
]

GRID_STD = 0.05
RING_STD = 0.01
# Samples drawn from a generator for one evaluation (PacGAN's `num_log_figure_sample`).
N_EVAL_SAMPLES = 2500


def grid_means(spacing: float = 2.0, side: int = 5) -> torch.Tensor:
    """Means of the grid mixture ``(side**2, 2)``: ``{-4, -2, 0, 2, 4}^2`` by default."""
    side = check_positive_int(side, "side")
    offsets = [spacing * (i - (side - 1) / 2) for i in range(side)]
    return torch.tensor(list(itertools.product(offsets, offsets)), dtype=torch.float32)


def ring_means(n_modes: int = 8, radius: float = 1.0) -> torch.Tensor:
    """Means of the ring mixture ``(n_modes, 2)``: ``radius * (cos, sin)(2 pi k / n_modes)``."""
    n_modes = check_positive_int(n_modes, "n_modes")
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    return (radius * torch.stack([angles.cos(), angles.sin()], 1)).float()


def sample_mixture(n: int, means: Any, std: float, *, seed: int = 0) -> torch.Tensor:
    """``n`` draws ``(n, d)`` of the equal-weight mixture of ``N(mean_k, std^2 I)``."""
    n = check_positive_int(n, "n")
    centres = as_tensor(means, "means", dtype=torch.float32)
    if centres.dim() != 2:
        raise DataError(f"means must have shape (K, d), got {tuple(centres.shape)}")
    if not (std > 0):
        raise DataError(f"std must be positive, got {std!r}")
    generator = torch.Generator().manual_seed(int(seed))
    which = torch.randint(centres.shape[0], (n,), generator=generator)
    return centres[which] + std * torch.randn(n, centres.shape[1], generator=generator)


def sample_grid(n: int, *, seed: int = 0, std: float = GRID_STD) -> torch.Tensor:
    """``n`` draws from the 25-Gaussian grid (sd 0.05)."""
    return sample_mixture(n, grid_means(), std, seed=seed)


def sample_ring(n: int, *, seed: int = 0, std: float = RING_STD) -> torch.Tensor:
    """``n`` draws from the 8-Gaussian ring of radius 1 (sd 0.01)."""
    return sample_mixture(n, ring_means(), std, seed=seed)


def mode_collapse_metrics(
    samples: Any, means: Any, *, std: float, n_std: float = 3.0, min_count: int = 1
) -> dict[str, Any]:
    """PacGAN's mode-collapse figures for samples of a mixture with known equal-weight modes.

    Args:
        samples: generated draws ``(n, d)`` (PacGAN evaluates 2,500: `N_EVAL_SAMPLES`).
        means: the true modes' means ``(K, d)``.
        std: the modes' standard deviation (isotropic, shared).
        n_std: a sample is high quality within this many standard deviations of its nearest
            mode (3 in the protocol).
        min_count: high-quality samples a mode needs to count as captured (1 in PacGAN's
            code).

    Returns:
        dict: `modes_captured`, `n_modes`, `high_quality_fraction`, `reverse_kl` (nats;
        infinite only when no sample is high quality) and `counts` (high-quality samples per
        mode).

    Raises:
        DataError: malformed samples or means, a non-positive std.
    """
    points = as_tensor(samples, "samples", dtype=torch.float64)
    centres = as_tensor(means, "means", dtype=torch.float64)
    if points.dim() != 2 or centres.dim() != 2 or points.shape[1] != centres.shape[1]:
        raise DataError(
            f"samples (n, d) and means (K, d) must agree in d; got {tuple(points.shape)} and "
            f"{tuple(centres.shape)}"
        )
    if not (isinstance(std, (int, float)) and std > 0 and math.isfinite(std)):
        raise DataError(f"std must be a positive number, got {std!r}")
    min_count = check_positive_int(min_count, "min_count")
    n_modes = centres.shape[0]
    distance, nearest = (torch.cdist(points, centres) / std).min(1)
    good = distance < n_std
    counts = torch.bincount(nearest[good], minlength=n_modes).double()
    n_good = int(good.sum())
    if n_good:
        q = counts / n_good
        kept = q > 0
        reverse_kl = float((q[kept] * (q[kept] * n_modes).log()).sum())
    else:
        reverse_kl = math.inf
    return {
        "modes_captured": int((counts >= min_count).sum()),
        "n_modes": n_modes,
        "high_quality_fraction": n_good / points.shape[0],
        "reverse_kl": reverse_kl,
        "counts": counts.long().tolist(),
    }
