"""Mode coverage of samples from a mixture with known centres (e.g. the ring of 8 Gaussians).

Each sample is assigned to its nearest centre; it is "high quality" when it lies within
`n_std` standard deviations of that centre. A mode is covered when it receives at least
`min_fraction` of its fair share (1 / n_modes) of the high-quality samples.

Example:
    >>> import math, torch
    >>> from probgen.metrics.coverage import mode_coverage
    >>> centres = torch.tensor([[2.0 * math.cos(a), 2.0 * math.sin(a)] for a in (0, math.pi)])
    >>> report = mode_coverage(centres.repeat(10, 1), centres, std=0.1)
    >>> report["modes_covered"], report["high_quality_fraction"]
    (2, 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from probgen.core.data import as_tensor
from probgen.core.errors import DataError

__all__ = ["mode_coverage"]


def mode_coverage(
    samples: Any,
    centres: Any,
    *,
    std: float,
    n_std: float = 3.0,
    min_fraction: float = 0.25,
    weights: Any = None,
) -> dict[str, Any]:
    """How many mixture modes the samples cover, and how many samples land near a mode.

    Args:
        samples: draws (n, d).
        centres: mode centres (K, d).
        std: the modes' standard deviation (isotropic).
        n_std: radius of a mode, in standard deviations.
        min_fraction: fraction of a mode's expected share it needs to count as covered.
        weights: mixture weights (K,) (uniform by default), for the expected shares.

    Returns:
        dict: `modes_covered` (int), `n_modes`, `high_quality_fraction` (share of samples
        within the radius of their nearest mode), `counts` (high-quality samples per mode),
        and `kl_to_mixture_weights` (KL of the high-quality mode histogram from `weights`,
        in nats; infinite when a mode is empty).
    """
    points = as_tensor(samples, "samples", dtype=torch.float64)
    modes = as_tensor(centres, "centres", dtype=torch.float64)
    if points.dim() != 2 or modes.dim() != 2 or points.shape[1] != modes.shape[1]:
        raise DataError(
            f"samples (n, d) and centres (K, d) must agree in d; got {tuple(points.shape)} and "
            f"{tuple(modes.shape)}"
        )
    if std <= 0:
        raise DataError(f"std must be positive, got {std}")
    n_modes = modes.shape[0]
    if weights is None:
        share = torch.full((n_modes,), 1.0 / n_modes, dtype=torch.float64)
    else:
        share = as_tensor(weights, "weights", dtype=torch.float64, min_value=0).reshape(-1)
        if share.shape[0] != n_modes:
            raise DataError(f"weights has {share.shape[0]} entries for {n_modes} centres")
        share = share / share.sum()
    distances = torch.cdist(points, modes)
    nearest_distance, nearest = distances.min(1)
    close = nearest_distance <= n_std * std
    counts = torch.bincount(nearest[close], minlength=n_modes).double()
    n_close = int(close.sum())
    if n_close:
        frequencies = counts / n_close
        covered = int((frequencies >= min_fraction * share).sum())
        positive = frequencies > 0
        if bool((share[~positive] > 0).any()):
            kl = math.inf
        else:
            kl = float(
                (frequencies[positive] * (frequencies[positive] / share[positive]).log()).sum()
            )
    else:
        covered, kl = 0, math.inf
    return {
        "modes_covered": covered,
        "n_modes": n_modes,
        "high_quality_fraction": n_close / max(points.shape[0], 1),
        "counts": counts.long().tolist(),
        "kl_to_mixture_weights": kl,
    }
