"""Bernoulli RBM with 20 hidden units on scikit-learn's 8x8 digits (binarised), exact likelihood.

Data: `sklearn.datasets.load_digits` (1797 images, values 0..16) thresholded at 8, shuffled
with `seed` and split 1400 train / 200 valid / 197 test (the same split as `vae_digits`).
With 20 hidden units the partition function is exact (2**20 hidden configurations), so
`log_prob` is exact; with more hidden units it becomes an AIS estimate.

Example:
    >>> from probgen.recipes import rbm_digits
    >>> rbm_digits.data("test").shape
    torch.Size([197, 64])
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._digits import binarised_digits

from probgen.boltzmann import RBM

FAMILY = "boltzmann"

SMOKE = {
    "build": {"n_hidden": 8, "n_epochs": 2},
    "data": {"n": 256},
    "fit": {},
}


def build(**overrides: Any) -> RBM:
    """RBM(64 visible, 20 hidden), PCD-1, batch 16, learning rate 0.05, 30 epochs."""
    settings = dict(
        n_visible=64,
        n_hidden=20,
        visible="bernoulli",
        method="pcd",
        learning_rate=0.05,
        batch_size=16,
        n_epochs=30,
        seed=0,
    )
    settings.update(overrides)
    return RBM(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Binarised digits (n, 64) as float32 in {0, 1}."""
    return binarised_digits(split, seed, n)
