"""Neural spline flow on a ring of 8 Gaussians (the exact target density is known).

The target is an equal mixture of 8 isotropic Gaussians with standard deviation `STD` whose
centres sit evenly on a circle of radius `RADIUS`. `true_log_prob(x)` is the exact log-density,
so a fitted flow's held-out log-likelihood can be compared with the best achievable figure
(the mean of `true_log_prob` on the same held-out points); `CENTRES` and `STD` feed
`probgen.metrics.mode_coverage`.

Example:
    >>> from probgen.recipes import flow_gaussians
    >>> x = flow_gaussians.data("test", n=100)
    >>> x.shape, flow_gaussians.true_log_prob(x).shape
    (torch.Size([100, 2]), torch.Size([100]))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from probgen.recipes._flow_recipe import build_flow, split_size_and_seed

from probgen.deep.flows import Flow

FAMILY = "flow"
N_MODES = 8
RADIUS = 2.0
STD = 0.3
CENTRES = torch.tensor(
    [
        [RADIUS * math.cos(2 * math.pi * k / N_MODES), RADIUS * math.sin(2 * math.pi * k / N_MODES)]
        for k in range(N_MODES)
    ]
)

REFERENCE = {
    "what": "held-out log-likelihood of the exact target density (mean of true_log_prob on "
    "the same test points); a perfect model reaches it",
    "source": "closed form: equal mixture of 8 Gaussians, radius 2, std 0.3",
}
SMOKE = {
    "build": {"n_layers": 2, "hidden_dims": [16, 16]},
    "data": {"n": 512},
    "fit": {"n_epochs": 2},
}


def build(**overrides: Any) -> Flow:
    """A neural spline flow (autoregressive, Pyro's spline_autoregressive through .inv)."""
    settings = dict(kind="nsf", n_layers=4, count_bins=8, bound=4.0, learning_rate=3e-3)
    return build_flow(settings, overrides)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Draws (n, 2) from the ring; splits use disjoint seeds."""
    n, split_seed = split_size_and_seed(split, seed, n)
    generator = torch.Generator().manual_seed(split_seed)
    modes = torch.randint(N_MODES, (n,), generator=generator)
    return CENTRES[modes] + STD * torch.randn(n, 2, generator=generator)


def true_log_prob(x: Any) -> torch.Tensor:
    """Exact log-density of the ring at points x (..., 2), in float64."""
    points = torch.as_tensor(x, dtype=torch.float64)
    squared = (points[..., None, :] - CENTRES.double()).pow(2).sum(-1)
    log_components = -squared / (2 * STD**2) - math.log(2 * math.pi * STD**2)
    return torch.logsumexp(log_components, -1) - math.log(N_MODES)
