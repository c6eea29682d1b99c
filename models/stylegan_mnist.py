"""A small style-based GAN (StyleGAN2-like) on grey-level MNIST digits.

Data: the 8,000 training images of `probgen.recipes._mnist.grey_mnist` (28x28 in [0, 1],
from ``../shared/data``). The synthesis network starts from a learned 7x7 constant and doubles
twice (6 styles: one per modulated convolution and the output layer), with per-layer noise
and style mixing in training (probability 0.9). `benchmarks/gan_mnist.py` compares it with
DCGAN, WGAN-GP and a VAE at the same CPU budget. With ``source="digits"`` the same on
scikit-learn's 8x8 digits (no shared data needed; the smoke run uses it).

Example:
    >>> from probgen.recipes import stylegan_mnist
    >>> stylegan_mnist.build().n_styles
    6
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._gan_images import digit_images

from probgen.gan.stylegan import StyleGAN

FAMILY = "gan"
SMOKE = {
    "build": {
        "image_shape": (1, 8, 8),
        "latent_dim": 8,
        "style_dim": 8,
        "n_mapping_layers": 1,
        "channels": 8,
        "discriminator_channels": 8,
        "n_upsamplings": 1,
        "batch_size": 32,
    },
    "data": {"source": "digits", "n": 64},
    "fit": {"n_epochs": 1},
}


def build(**overrides: Any) -> StyleGAN:
    """StyleGAN for 28x28 images: z, w of dimension 32, 2 mapping layers, 7x7 constant."""
    settings: dict[str, Any] = dict(
        image_shape=(1, 28, 28),
        latent_dim=32,
        style_dim=32,
        n_mapping_layers=2,
        channels=64,
        n_upsamplings=2,
        discriminator_channels=64,
        loss="non_saturating",
        mixing_probability=0.9,
        generator_learning_rate=2e-3,
        discriminator_learning_rate=2e-3,
        betas=(0.0, 0.99),
        ema=0.999,
        n_epochs=10,
        batch_size=64,
        seed=0,
    )
    settings.update(overrides)
    return StyleGAN(**settings)


def data(
    split: str = "train", seed: int = 0, n: int | None = None, source: str = "mnist"
) -> torch.Tensor:
    """Images (n, 1, H, W) in [0, 1] of `split` ("train" or "test"; labels dropped)."""
    images, _ = digit_images(source, split, n=n, seed=seed)
    return images
