"""DDPM with a U-Net on statically binarized MNIST (28x28, a bound on the log-mass); slow.

Data: `../shared/data/binarized_mnist` (50000 train / 10000 valid / 10000 test). The decoder at
t = 1 is the Gaussian discretised to two bins, so `log_prob` bounds log P(image) in nats, the
figure reported beside MADE, the VAE (IWAE) and PixelCNN by `benchmarks/diffusion_likelihood.py`.
Over all T = 1000 steps the bound costs 1000 network passes per image: the recipe scores with
an unbiased estimate from 50 sampled steps per image (`bound_steps=50`, kind "estimate"); call
`model.variational_bound(x, steps="all")` for the bound itself.

Example:
    >>> from probgen.recipes import diffusion_mnist
    >>> diffusion_mnist.build().n_steps
    1000
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._shared_data import binarized_mnist

from probgen.diffusion import Diffusion

FAMILY = "diffusion"
SLOW = True
REFERENCE = {
    "what": "negative log-likelihood (nats) on the binarized MNIST test set for other "
    "families: PixelCNN 81.30, Row LSTM 80.54 (van den Oord et al. 2016, Table 4), IWAE 86.76 "
    "(Burda et al. 2016); a diffusion bound after minutes of CPU training lands far above",
    "source": "van den Oord, Kalchbrenner, Kavukcuoglu (2016); Burda, Grosse, Salakhutdinov "
    "(2016)",
}
SMOKE = {
    "build": {"hidden_dims": [8], "n_steps": 10, "bound_steps": 2},
    "data": {"n": 32},
    "fit": {"n_epochs": 1},
}
# 784-pixel images: few draws, and 2**784 images cannot be enumerated.
CONTRACT = {"n_samples": 16, "check_normalization": False}


def build(**overrides: Any) -> Diffusion:
    """U-Net (32, 64) channels, T = 1000 cosine steps, binary decoder, hybrid loss."""
    settings: dict[str, Any] = dict(
        input_shape=(28, 28),
        n_levels=2,
        network="unet",
        hidden_dims=(32, 64),
        n_steps=1000,
        schedule="cosine",
        loss="hybrid",
        variance="learned",
        bound_steps=50,
        n_epochs=20,
        batch_size=64,
        learning_rate=1e-3,
        seed=0,
    )
    settings.update(overrides)
    return Diffusion(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Binarized MNIST as (n, 28, 28) float32 codes in {0, 1} (SharedDataMissing if absent)."""
    split = "valid" if split == "validation" else split
    values = binarized_mnist(split)
    if n is not None:
        values = values[: int(n)]
    return torch.as_tensor(values, dtype=torch.float32).reshape(-1, 28, 28)
