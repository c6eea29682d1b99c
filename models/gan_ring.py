"""GAN on the 8-Gaussian ring (PacGAN's 2-D ring): packing, EMA, judged by mode collapse.

Data: the equal-weight mixture of 8 Gaussians on the unit circle with standard deviation 0.01
(`probgen.metrics.modes.sample_ring`), 100,000 draws per split as in PacGAN. The model is set
as `gan_grid` (non-saturating loss, ``pack=4``, EMA generator), not yet tuned or measured on
the ring; ``build(pack=1, ema=None)`` is the plain-GAN baseline.

Example:
    >>> from probgen.recipes import gan_ring
    >>> round(float(gan_ring.data(n=1000).norm(dim=1).mean()), 1)
    1.0
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.gan import GAN
from probgen.metrics.modes import RING_STD, ring_means, sample_ring

FAMILY = "gan"

SMOKE = {
    "build": {"hidden_dims": [16], "batch_size": 64},
    "data": {"n": 256},
    "fit": {"n_epochs": 1},
}

REFERENCE = {
    "source": "issue 12's target for the 2-D ring of Lin et al. (2018), PacGAN, Table 1",
    "target": {"modes": 7.5},
}

MEANS = ring_means()
STD = RING_STD

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
    """``n`` draws (n, 2) from the ring; the test split uses other random numbers."""
    return sample_ring(n, seed=2 * int(seed) + (split != "train"))
