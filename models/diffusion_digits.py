"""DDPM with a small U-Net on scikit-learn's 8x8 digits, binarised (a bound on the log-mass).

Data: the digits recipes' split (`_digits.binarised_digits`: 1400 train / 200 valid / 197 test,
thresholded at 8) as 8x8 images of codes {0, 1}. With `n_levels=2` the decoder at t = 1 is the
Gaussian discretised to two bins, so `log_prob` is a lower bound on log P(image) in nats
(`bits_per_dim` per pixel), comparable with the VAE, RBM and MADE digits recipes' figures.

Example:
    >>> from probgen.recipes import diffusion_digits
    >>> diffusion_digits.data("test").shape
    torch.Size([197, 8, 8])
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._digits import binarised_digits

from probgen.diffusion import Diffusion

FAMILY = "diffusion"
SMOKE = {
    "build": {"hidden_dims": [4], "n_steps": 6},
    "data": {"n": 32},
    "fit": {"n_epochs": 1},
}
CONTRACT = {"n_samples": 32}


def build(**overrides: Any) -> Diffusion:
    """U-Net (16, 32) channels, T = 200 cosine steps, binary decoder."""
    settings: dict[str, Any] = dict(
        input_shape=(8, 8),
        n_levels=2,
        network="unet",
        hidden_dims=(16, 32),
        n_steps=200,
        schedule="cosine",
        n_epochs=100,
        batch_size=64,
        learning_rate=2e-3,
        seed=0,
    )
    settings.update(overrides)
    return Diffusion(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Binarised digits as (n, 8, 8) float32 codes in {0, 1}."""
    return binarised_digits(split, seed, n).reshape(-1, 8, 8)
