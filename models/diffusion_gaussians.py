"""DDPM on a 2-D mixture of three Gaussians whose exact density (and diffused density) is known.

The target mixes three isotropic Gaussians (`MEANS`, `SCALES`, `WEIGHTS`). `true_log_prob(x)`
is its exact log-density and `true_log_prob(x, alpha_bar)` the density of the data diffused to
signal fraction alpha_bar, N(sqrt(alpha_bar) mu_k, (alpha_bar s_k^2 + 1 - alpha_bar) I) per
component: its gradient is the exact noise predictor, against which the bound and the samplers
are tested. A model's mean `log_prob` (a lower bound) on held-out points can never exceed the
mean of `true_log_prob` there, on average.

Example:
    >>> from probgen.recipes import diffusion_gaussians
    >>> x = diffusion_gaussians.data("test", n=100)
    >>> x.shape, diffusion_gaussians.true_log_prob(x).shape
    (torch.Size([100, 2]), torch.Size([100]))
"""

from __future__ import annotations

import math
from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.diffusion import Diffusion

FAMILY = "diffusion"
MEANS = torch.tensor([[-1.0, -0.5], [1.0, 0.5], [0.0, 1.2]], dtype=torch.float64)
SCALES = torch.tensor([0.3, 0.4, 0.25], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
REFERENCE = {
    "what": "held-out mean of true_log_prob: no model's mean bound can exceed it",
    "source": "closed form: mixture of three isotropic Gaussians",
}
SMOKE = {
    "build": {"hidden_dims": [32], "n_steps": 20},
    "data": {"n": 256},
    "fit": {"n_epochs": 2},
}
_SPLIT_SEEDS = {"train": 0, "valid": 1, "test": 2}
_SPLIT_SIZES = {"train": 10_000, "valid": 2000, "test": 2000}


def build(**overrides: Any) -> Diffusion:
    """DDPM with a 3x128 MLP, T = 100 linear steps, the bound over all steps as log_prob."""
    settings: dict[str, Any] = dict(
        input_shape=(2,),
        hidden_dims=(128, 128, 128),
        n_steps=100,
        schedule="linear",
        n_epochs=200,
        batch_size=256,
        learning_rate=2e-3,
        seed=0,
    )
    settings.update(overrides)
    return Diffusion(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Draws (n, 2) float32 from the mixture; the splits use disjoint seeds."""
    if split not in _SPLIT_SEEDS:
        raise DataError(f"split must be one of {', '.join(_SPLIT_SEEDS)}; got {split!r}")
    n = _SPLIT_SIZES[split] if n is None else int(n)
    generator = torch.Generator().manual_seed(1000 * int(seed) + _SPLIT_SEEDS[split])
    which = torch.multinomial(WEIGHTS, n, replacement=True, generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (MEANS[which] + SCALES[which, None] * noise).float()


def true_log_prob(x: Any, alpha_bar: Any = 1.0) -> torch.Tensor:
    """Exact log-density (float64) at x (n, 2) of the mixture diffused to `alpha_bar`
    (a number or one per row; 1 is the data density itself)."""
    points = torch.as_tensor(x, dtype=torch.float64)
    alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64).reshape(-1, 1)
    means = alpha_bar.sqrt()[:, :, None] * MEANS.T[None]
    variances = alpha_bar * SCALES**2 + (1 - alpha_bar)
    squared = (points[:, :, None] - means).pow(2).sum(1)
    log_components = -0.5 * squared / variances - math.log(2 * math.pi) - variances.log()
    return torch.logsumexp(log_components + WEIGHTS.log(), -1)
