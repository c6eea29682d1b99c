"""Bernoulli VAE on scikit-learn's 8x8 digits (binarised at half intensity).

Data: `sklearn.datasets.load_digits` (1797 images, values 0..16) thresholded at 8, shuffled
with `seed` and split 1400 train / 200 valid / 197 test. `log_prob` reports the ELBO
(`lower_bound`); `model.iwae(x, k=...)` gives the importance-weighted estimate.

Example:
    >>> from probgen.recipes import vae_digits
    >>> vae_digits.data("test").shape
    torch.Size([197, 64])
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._digits import binarised_digits

from probgen.deep.vae import VAE

FAMILY = "vae"

SMOKE = {
    "build": {"hidden_dims": [32], "latent_dim": 2},
    "data": {"n": 256},
    "fit": {"n_epochs": 2},
}


def build(**overrides: Any) -> VAE:
    """A Bernoulli VAE with an MLP encoder and decoder, latent dimension 8."""
    settings = dict(
        input_shape=(64,),
        latent_dim=8,
        likelihood="bernoulli",
        hidden_dims=(128, 64),
        n_epochs=100,
        batch_size=100,
        learning_rate=1e-3,
        seed=0,
    )
    settings.update(overrides)
    return VAE(**settings)


def data(
    split: str = "train", seed: int = 0, n: int | None = None, image: bool = False
) -> torch.Tensor:
    """Binarised digits (n, 64), or (n, 8, 8) with `image=True`, as float32 in {0, 1}."""
    binary = binarised_digits(split, seed, n)
    return binary.reshape(-1, 8, 8) if image else binary
