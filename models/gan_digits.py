"""DCGAN on scikit-learn's 8x8 digits (grey levels scaled to [0, 1]).

Data: `sklearn.datasets.load_digits` (1797 images, values 0..16) divided by 16, shuffled with
`seed` and split 1400 train / 200 valid / 197 test (the rows of the other digits recipes), as
``(n, 1, 8, 8)`` float32 images; `labels=True` also returns the class labels. The model is a
small DCGAN (one upsampling from 4x4) with the hinge loss, ``pack=2`` and an EMA generator;
``build(n_classes=10)`` makes it class-conditional (`fit(x, labels=y)`,
`sample(n, labels=...)`). It has no density: judge it with `probgen.evaluate` or the sample
metrics.

Example:
    >>> from probgen.recipes import gan_digits
    >>> images = gan_digits.data("test")
    >>> tuple(images.shape), float(images.max()) <= 1.0
    ((197, 1, 8, 8), True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from probgen.recipes._digits import SPLIT_BOUNDS

from probgen.core.errors import DataError
from probgen.gan import GAN

FAMILY = "gan"

SMOKE = {
    "build": {"width": 4, "latent_dim": 4},
    "data": {"n": 128},
    "fit": {"n_epochs": 1},
}


def build(**overrides: Any) -> GAN:
    """A DCGAN for (1, 8, 8) digits: hinge loss, pack 2, EMA 0.999."""
    settings: dict[str, Any] = dict(
        data_shape=(1, 8, 8),
        architecture="dcgan",
        latent_dim=32,
        width=32,
        loss="hinge",
        pack=2,
        ema=0.999,
        generator_learning_rate=2e-4,
        discriminator_learning_rate=2e-4,
        betas=(0.5, 0.999),
        n_epochs=200,
        batch_size=64,
        seed=0,
    )
    settings.update(overrides)
    return GAN(**settings)


def data(
    split: str = "train", seed: int = 0, n: int | None = None, labels: bool = False
) -> Any:
    """Grey digits (n, 1, 8, 8) in [0, 1]; with `labels=True` the pair (images, labels)."""
    from sklearn.datasets import load_digits

    if split not in SPLIT_BOUNDS:
        raise DataError(f"split must be one of {', '.join(SPLIT_BOUNDS)}; got {split!r}")
    digits = load_digits()
    order = np.random.default_rng(int(seed)).permutation(len(digits.data))
    start, stop = SPLIT_BOUNDS[split]
    chosen = order[start:stop][: None if n is None else int(n)]
    images = torch.as_tensor(digits.data[chosen] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    if labels:
        return images, torch.as_tensor(digits.target[chosen], dtype=torch.long)
    return images
