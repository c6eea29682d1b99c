"""scikit-learn's 8x8 digits, binarised and split, for the digits recipes (not a recipe itself).

`load_digits` (1797 images, values 0..16) thresholded at 8, shuffled with `seed` and split
1400 train / 200 valid / 197 test, so every digits recipe sees the same rows.

Example:
    >>> from probgen.recipes._digits import binarised_digits
    >>> binarised_digits("valid", n=3).shape
    torch.Size([3, 64])
"""

from __future__ import annotations

import numpy as np
import torch

from probgen.core.errors import DataError

SPLIT_BOUNDS = {"train": (0, 1400), "valid": (1400, 1600), "test": (1600, 1797)}


def binarised_digits(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """The first `n` rows (default all) of `split`, (n, 64) float32 in {0, 1}.

    Raises:
        DataError: an unknown split.
    """
    from sklearn.datasets import load_digits

    if split not in SPLIT_BOUNDS:
        raise DataError(f"split must be one of {', '.join(SPLIT_BOUNDS)}; got {split!r}")
    images = load_digits().data
    order = np.random.default_rng(int(seed)).permutation(len(images))
    start, stop = SPLIT_BOUNDS[split]
    chosen = images[order[start:stop]]
    if n is not None:
        chosen = chosen[: int(n)]
    return torch.as_tensor(chosen >= 8, dtype=torch.float32)
