"""CycleGAN between MNIST digits and the same digits colour-inverted, trained unpaired.

Domain A holds grey-level MNIST digits, domain B digits under a transform the model is not
told: colour inversion, ``b = 1 - a``. The two training sets are disjoint halves of the 8,000
training images (no image of A has its counterpart in B), so the model learns the translation
from unpaired sets; on held-out images the true counterpart is known exactly, which measures
the pixel error of `translate` and, through the in-repo MNIST classifier
(`probgen.metrics.features.load_feature_classifier("mnist")`) applied to the inverse transform
of the translation, whether it keeps the digit's label (the target is at least 90 %).
Identity loss is off: inversion moves every image, so "leave B's images unchanged" would
fight the translation. With ``source="digits"`` the same on scikit-learn's 8x8 digits (no
shared data needed; the smoke run uses it).

Example:
    >>> from probgen.recipes import cyclegan_mnist
    >>> a, b = cyclegan_mnist.data("test", source="digits", n=4)
    >>> bool((b == cyclegan_mnist.transform(a)).all())
    True
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._gan_images import SOURCES, digit_images

from probgen.gan.cyclegan import CycleGAN

FAMILY = "gan"
# A CycleGAN draws nothing without an input (`sample` raises): the contract checks the rest.
CONTRACT = {"check_sampling": False}
SMOKE = {
    "build": {
        "image_shape": (1, 8, 8),
        "channels": 4,
        "n_blocks": 1,
        "discriminator_channels": 4,
        "batch_size": 32,
    },
    "data": {"source": "digits", "n": 64},
    "fit": {"n_epochs": 1},
}


def transform(images: torch.Tensor) -> torch.Tensor:
    """The hidden A -> B transform: colour inversion (its own inverse)."""
    return 1.0 - images


def build(**overrides: Any) -> CycleGAN:
    """A small CycleGAN for 28x28 digits: ResNet generators (2 blocks), PatchGAN critics."""
    settings: dict[str, Any] = dict(
        image_shape=(1, 28, 28),
        channels=16,
        n_blocks=2,
        n_downsampling=1,
        discriminator_channels=16,
        discriminator_layers=2,
        loss="lsgan",
        cycle_weight=10.0,
        identity_weight=0.0,
        n_epochs=3,
        batch_size=32,
        seed=0,
    )
    settings.update(overrides)
    return CycleGAN(**settings)


def data(
    split: str = "train", seed: int = 0, n: int | None = None, source: str = "mnist"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of both domains, (n, 1, H, W) each in [0, 1].

    ``"train"``: unpaired, A from the first half of the (seed-ordered) training images, B the
    transform of the second half. ``"test"``: paired, held-out images and their true
    counterparts ``transform(a)``. `n` is the number of images per domain.
    """
    if split == "test":
        a, _ = digit_images(source, "test", n=n, seed=seed)
        return a, transform(a)
    images, _ = digit_images(source, "train", seed=seed)
    half = images.shape[0] // 2
    stop = half if n is None else min(int(n), half)
    return images[:stop], transform(images[half : half + stop])


def labelled_test(
    n: int | None = None, source: str = "mnist"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out images of A, their true counterparts in B, and their digit labels."""
    a, labels = digit_images(source, "test", n=n)
    return a, transform(a), labels


__all__ = ["SOURCES", "build", "data", "labelled_test", "transform"]
