"""DCGAN on grey-level MNIST (28x28, in [0, 1]); slow.

Data: `probgen.recipes._mnist.grey_mnist` (the 10,000 MNIST test images under
``../shared/data``, split once into 8,000 "train" and 2,000 "test"; raises
`SharedDataMissing` when the shared data are absent), as ``(n, 1, 28, 28)`` float32 images;
`labels=True` also returns the class labels. The model: DCGAN (Radford et al. 2016), z of
dimension 64 projected to 7x7 and doubled twice, the non-saturating loss, Adam (2e-4, betas
0.5, 0.999), an EMA generator; ``build(loss="wgan_gp", n_critic=5, betas=(0.0, 0.9))`` is the
WGAN-GP variant, ``build(n_classes=10)`` the class-conditional one. Judge it with
`probgen.evaluate` (FID/KID on the in-repo MNIST classifier's features).

Example:
    >>> from probgen.recipes import gan_mnist
    >>> gan_mnist.build().data_shape
    (1, 28, 28)
"""

from __future__ import annotations

from typing import Any

from probgen.recipes._mnist import grey_mnist

from probgen.gan import GAN

FAMILY = "gan"
SLOW = True

SMOKE = {
    "build": {"width": 4, "latent_dim": 4, "batch_size": 32},
    "data": {"n": 64},
    "fit": {"n_epochs": 1},
}


def build(**overrides: Any) -> GAN:
    """A DCGAN for (1, 28, 28) MNIST: non-saturating loss, EMA 0.999."""
    settings: dict[str, Any] = dict(
        data_shape=(1, 28, 28),
        architecture="dcgan",
        latent_dim=64,
        width=32,
        loss="non_saturating",
        ema=0.999,
        generator_learning_rate=2e-4,
        discriminator_learning_rate=2e-4,
        betas=(0.5, 0.999),
        n_epochs=30,
        batch_size=64,
        seed=0,
    )
    settings.update(overrides)
    return GAN(**settings)


def data(
    split: str = "train", seed: int = 0, n: int | None = None, labels: bool = False
) -> Any:
    """Grey MNIST (n, 1, 28, 28) in [0, 1]; with `labels=True` the pair (images, labels)."""
    images, classes = grey_mnist(split, n=n, seed=seed)
    return (images, classes) if labels else images
