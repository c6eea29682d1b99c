"""Gated PixelCNN on statically binarized MNIST (28x28, Bernoulli pixels as 2 levels); slow.

Data: `../shared/data/binarized_mnist` (50000 train / 10000 valid / 10000 test). Architecture:
gated PixelCNN (van den Oord et al., 2016) with a 7x7 type-A first layer, 6 further gated 3x3
layers of 64 features, and two 1x1 output layers. Sampling draws 784 pixels one at a time.
Reference: PixelCNN test NLL 81.30 nats (Pixel RNN paper); a short CPU run lands well above it.

Example:
    >>> from probgen.recipes import pixelcnn_mnist
    >>> pixelcnn_mnist.build().image_shape
    (28, 28)
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._shared_data import binarized_mnist

from probgen.deep.autoregressive import PixelCNN

FAMILY = "autoregressive"
SLOW = True
REFERENCE = {
    "test_nll_nats": 81.30,
    "what": "negative log-likelihood on the binarized MNIST test set, PixelCNN",
    "source": "van den Oord, Kalchbrenner, Kavukcuoglu (2016), Pixel Recurrent Neural "
    "Networks, Table 4",
}
SMOKE = {
    "build": {"n_filters": 8, "n_layers": 2, "output_filters": 8},
    "data": {"n": 64},
    "fit": {"n_epochs": 1},
}
# Drawing 784 pixels one at a time is the slow part: fewer draws, and 2**784 images cannot be
# enumerated.
CONTRACT = {"n_samples": 16, "check_normalization": False}


def build(**overrides: Any) -> PixelCNN:
    """Gated PixelCNN for 28x28 binary images."""
    settings: dict[str, Any] = dict(
        image_shape=(28, 28),
        n_levels=2,
        n_filters=64,
        n_layers=7,
        kernel_size=3,
        first_kernel_size=7,
        n_epochs=10,
        batch_size=32,
        learning_rate=1e-3,
        seed=0,
    )
    settings.update(overrides)
    return PixelCNN(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Binarized MNIST as long images (n, 28, 28) in {0, 1} (SharedDataMissing if absent)."""
    split = "valid" if split == "validation" else split
    values = binarized_mnist(split)
    if n is not None:
        values = values[: int(n)]
    return torch.as_tensor(values, dtype=torch.long).reshape(-1, 28, 28)
