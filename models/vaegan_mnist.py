"""VAE-GAN (Larsen et al. 2016) on grey-level MNIST digits (28x28 in [0, 1]).

Data: the 8,000 training images of `probgen.recipes._mnist.grey_mnist` (from
``../shared/data``; raises `SharedDataMissing` when absent). The model: DCGAN-style encoder,
decoder and discriminator (width 32, z of dimension 32, 28x28 halved twice to 7x7), the
reconstruction measured on the discriminator's last hidden layer (k = 64 x 7 x 7 = 3,136
features), gamma = 2e-2 and the paper's KL weight 1, the non-saturating loss, Adam (2e-4, betas
0.5, 0.999) for all three steps. The weights come from a short sweep on the 8x8 digits (width
16, k = 256 features, 30 epochs), where gamma in 0.1-0.3 with KL weight 0.1 gave the best FID
(24, against 52 for gamma 1e-2 / KL weight 1 and 184 for gamma 1 / KL weight 1), scaled by
256 / 3,136 (the feature term is a sum over k features). It
has no density (`log_prob_kind` "none"): judge it with `probgen.evaluate` (FID/KID on the
in-repo MNIST classifier's features); `benchmarks/vaegan_mnist.py` compares it with a VAE and
DCGAN at the same CPU budget. With ``source="digits"`` the same on scikit-learn's 8x8 digits
(no shared data needed; the smoke run uses it).

Example:
    >>> from probgen.recipes import vaegan_mnist
    >>> model = vaegan_mnist.build()
    >>> model.data_shape, model.layer
    ((1, 28, 28), 2)
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._gan_images import digit_images

from probgen.gan.vaegan import VAEGAN

FAMILY = "gan"
SMOKE = {
    "build": {"data_shape": (1, 8, 8), "latent_dim": 4, "width": 4, "batch_size": 32},
    "data": {"source": "digits", "n": 64},
    "fit": {"n_epochs": 1},
}


def build(**overrides: Any) -> VAEGAN:
    """A DCGAN-style VAE-GAN for (1, 28, 28) images."""
    settings: dict[str, Any] = dict(
        data_shape=(1, 28, 28),
        architecture="dcgan",
        latent_dim=32,
        width=32,
        gamma=2e-2,
        kl_weight=1.0,
        loss="non_saturating",
        encoder_learning_rate=2e-4,
        decoder_learning_rate=2e-4,
        discriminator_learning_rate=2e-4,
        betas=(0.5, 0.999),
        n_epochs=20,
        batch_size=64,
        seed=0,
    )
    settings.update(overrides)
    return VAEGAN(**settings)


def data(
    split: str = "train", seed: int = 0, n: int | None = None, source: str = "mnist"
) -> torch.Tensor:
    """Images (n, 1, H, W) in [0, 1] of `split` ("train" or "test"; labels dropped)."""
    images, _ = digit_images(source, split, n=n, seed=seed)
    return images
