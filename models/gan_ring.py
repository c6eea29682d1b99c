"""GAN on the 8-Gaussian ring (PacGAN's 2-D ring), judged by mode collapse.

Data: the equal-weight mixture of 8 Gaussians on the unit circle with standard deviation 0.01
(`probgen.metrics.modes.sample_ring`), 100,000 draws per split as in PacGAN. The model is set
as `gan_grid` was first (non-saturating loss, learning rates decaying exponentially, no R1
penalty, no EMA), which already meets the ring's target; ``build(**PLAIN)`` is the plain GAN
baseline with constant learning rates (`benchmarks/gan_modes.py`).

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

# The setting benchmarks/gan_modes.py measures (issue 12): a plain MLP GAN (no packing, no EMA)
# whose two learning rates decay exponentially to a tenth over the run; 12 epochs of 100,000
# draws in batches of 100 (12,000 generator steps). `build(lr_schedule=None)` is the baseline
# with constant learning rates; `build(pack=2)` the packed variant.
SETTINGS: dict[str, Any] = dict(
    data_shape=(2,),
    architecture="mlp",
    latent_dim=2,
    hidden_dims=(128, 128, 128),
    loss="non_saturating",
    pack=1,
    ema=None,
    generator_learning_rate=1e-3,
    discriminator_learning_rate=1e-3,
    betas=(0.5, 0.999),
    batch_size=100,
    n_epochs=12,
    lr_schedule="exponential",
    seed=0,
)

# The plain GAN baseline: `build(**PLAIN)`, the same network and budget, constant rates.
PLAIN: dict[str, Any] = {"lr_schedule": None}


def build(**overrides: Any) -> GAN:
    """The measured GAN setting (`SETTINGS`), with `overrides` applied."""
    settings = dict(SETTINGS)
    settings.update(overrides)
    return GAN(**settings)


def data(split: str = "train", seed: int = 0, n: int = 100_000) -> torch.Tensor:
    """``n`` draws (n, 2) from the ring; the test split uses other random numbers."""
    return sample_ring(n, seed=2 * int(seed) + (split != "train"))
