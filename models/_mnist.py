"""Grey-level MNIST for the recipes and the feature classifier (not a recipe itself).

The only grey-level MNIST images on this machine are the 10,000 test images under
``../shared/data`` (see its README: ``posteriordb/.../data-raw/mnist/raw/t10k-*``). They are split
once, by a permutation with a fixed seed, into 8,000 "train" and 2,000 "test" images, so every
recipe and the in-repo feature classifier (`probgen.metrics.load_feature_classifier("mnist")`,
trained on the train split) agree on which images are held out.

Example:
    >>> from probgen.recipes._mnist import grey_mnist
    >>> from probgen.recipes._shared_data import SharedDataMissing
    >>> try:
    ...     images, labels = grey_mnist("test", n=4)
    ... except SharedDataMissing:
    ...     images, labels = None, None
    >>> images is None or (tuple(images.shape), tuple(labels.shape)) == ((4, 1, 28, 28), (4,))
    True
"""

from __future__ import annotations

import zipfile
from functools import lru_cache

import numpy as np
import torch
from probgen.recipes._shared_data import SharedDataMissing, shared_file

from probgen.core.errors import DataError

__all__ = ["grey_mnist", "SharedDataMissing", "N_TRAIN", "N_TEST"]

N_TRAIN = 8000
N_TEST = 2000
# The train/test split never changes with `seed`: the classifier's test images stay unseen.
_SPLIT_SEED = 20240612
_RAW = ("posteriordb", "posterior_database", "data", "data-raw", "mnist", "raw")


def _read_idx(name: str, header: int) -> np.ndarray:
    with zipfile.ZipFile(shared_file(*_RAW, f"{name}.zip")) as archive:
        return np.frombuffer(archive.read(archive.namelist()[0])[header:], np.uint8)


@lru_cache(maxsize=1)
def _all_images() -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx("t10k-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    labels = _read_idx("t10k-labels-idx1-ubyte", 8)
    if len(images) != N_TRAIN + N_TEST or len(labels) != len(images):
        raise SharedDataMissing("the shared MNIST test files do not hold 10,000 images and labels")
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    return images[order], labels[order]


def grey_mnist(
    split: str = "train", n: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey-level MNIST images of `split` and their labels.

    Args:
        split: ``"train"`` (8,000 images) or ``"test"`` (2,000 images).
        n: how many to return (default all of the split).
        seed: order of the images within the split (a seeded shuffle; the first `n` are
            returned), so different seeds give different subsets of the same split.

    Returns:
        `(images, labels)`: float32 (n, 1, 28, 28) in [0, 1] (pixel / 255) and int64 (n,).

    Raises:
        SharedDataMissing: the shared data folder or the MNIST files are absent.
        DataError: an unknown split, or `n` outside 1..size of the split.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _all_images()
    if split == "train":
        images, labels = images[:N_TRAIN], labels[:N_TRAIN]
    else:
        images, labels = images[N_TRAIN:], labels[N_TRAIN:]
    if n is not None and not (isinstance(n, (int, np.integer)) and 1 <= n <= len(images)):
        raise DataError(f"n must be an integer in 1..{len(images)} for split {split!r}, got {n!r}")
    order = np.random.default_rng(int(seed)).permutation(len(images))
    if n is not None:
        order = order[: int(n)]
    pixels = torch.from_numpy(images[order].astype(np.float32) / 255.0).unsqueeze(1)
    return pixels, torch.from_numpy(labels[order].astype(np.int64))
