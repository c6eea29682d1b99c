"""Grey-level digit images for the image GAN recipes (not a recipe itself).

Two sources, both as float32 (n, 1, H, W) in [0, 1] with int64 labels:

- ``"mnist"``: grey-level MNIST 28x28 (`probgen.recipes._mnist.grey_mnist`: 8,000 train /
  2,000 test images from ``../shared/data``; raises `SharedDataMissing` when absent);
- ``"digits"``: scikit-learn's 8x8 digits (pixel / 16, ships with scikit-learn), shuffled once
  with a fixed seed and split 1400 train / 200 valid / 197 test as the other digits recipes.

Example:
    >>> from probgen.recipes._gan_images import digit_images
    >>> images, labels = digit_images("digits", "test", n=3)
    >>> tuple(images.shape), tuple(labels.shape)
    ((3, 1, 8, 8), (3,))
"""

from __future__ import annotations

import numpy as np
import torch
from probgen.recipes._digits import SPLIT_BOUNDS
from probgen.recipes._mnist import grey_mnist

from probgen.core.errors import DataError

SOURCES = {"mnist": (1, 28, 28), "digits": (1, 8, 8)}


def digit_images(
    source: str = "mnist", split: str = "train", n: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, H, W) in [0, 1] and labels (n,) of `split` ("train" or "test").

    `seed` orders the images within the split (the first `n` are returned).
    """
    if source not in SOURCES:
        raise DataError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if source == "mnist":
        return grey_mnist(split, n=n, seed=seed)
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.data))
    start, stop = SPLIT_BOUNDS[split]
    chosen = order[start:stop]
    chosen = chosen[np.random.default_rng(int(seed)).permutation(len(chosen))]
    if n is not None:
        chosen = chosen[: int(n)]
    images = torch.as_tensor(digits.data[chosen] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return images, torch.as_tensor(digits.target[chosen], dtype=torch.int64)
