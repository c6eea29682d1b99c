"""GAN on the 25-Gaussian grid (PacGAN's 2-D grid): packing, EMA, judged by mode collapse.

Data: the equal-weight mixture of 25 Gaussians with means on ``{-4, -2, 0, 2, 4}^2`` and
standard deviation 0.05 (`probgen.metrics.modes.sample_grid`), 100,000 draws per split as in
PacGAN. The model is an MLP GAN with the non-saturating loss, PacGAN packing (``pack=4``),
an EMA of the generator's weights and a large batch; ``build(pack=1, ema=None)`` is the
plain-GAN baseline. Not yet tuned: in a first trial it reached about 20 of 25 modes with few
high-quality samples, short of PacGAN's figures (issue 12 keeps the target open). Judge it with
`probgen.metrics.mode_collapse_metrics(model.sample(2500), grid_means(), std=0.05)`.

Example:
    >>> from probgen.recipes import gan_grid
    >>> gan_grid.data(n=4).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.gan import GAN
from probgen.metrics.modes import GRID_STD, grid_means, sample_grid

FAMILY = "gan"

SMOKE = {
    "build": {"hidden_dims": [16], "batch_size": 64},
    "data": {"n": 256},
    "fit": {"n_epochs": 1},
}

REFERENCE = {
    "source": "Lin et al. (2018), PacGAN, Table 1 (2-D grid, 10 runs)",
    "gan": {"modes": 17.3, "high_quality": 0.948, "reverse_kl": 0.70},
    "pacgan4": {"modes": 24.8, "high_quality": 0.936, "reverse_kl": 0.04},
    "target": {"modes": 24.0, "high_quality": 0.90, "reverse_kl": 0.10},
}

MEANS = grid_means()
STD = GRID_STD

# A first, untuned setting (issue 12: benchmarks/gan_modes.py and its targets are still open).
SETTINGS: dict[str, Any] = dict(
    data_shape=(2,),
    architecture="mlp",
    latent_dim=2,
    hidden_dims=(256, 256, 256),
    loss="non_saturating",
    pack=4,
    ema=0.999,
    generator_learning_rate=1e-3,
    discriminator_learning_rate=1e-3,
    betas=(0.5, 0.999),
    batch_size=256,
    n_epochs=8,
    seed=0,
)


def build(**overrides: Any) -> GAN:
    """The packed GAN with an EMA generator (`SETTINGS`), with `overrides` applied."""
    settings = dict(SETTINGS)
    settings.update(overrides)
    return GAN(**settings)


def data(split: str = "train", seed: int = 0, n: int = 100_000) -> torch.Tensor:
    """``n`` draws (n, 2) from the grid; the test split uses other random numbers."""
    return sample_grid(n, seed=2 * int(seed) + (split != "train"))
