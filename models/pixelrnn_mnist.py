"""PixelRNN (Row LSTM or Diagonal BiLSTM) on statically binarized MNIST (28x28); slow.

Data: `../shared/data/binarized_mnist` (50000 train / 10000 valid / 10000 test). Architecture
(van den Oord et al., 2016): a 7x7 type-A first convolution, 7 recurrent layers with residual
connections (`layer="row"` Row LSTMs, or `layer="diagonal"`, the default, Diagonal BiLSTMs) of
16 hidden units, two 1x1 type-B output layers, and a Bernoulli per pixel. Sampling draws 784
pixels one at a time.
Reference: test NLL 79.20 nats (Diagonal BiLSTM, 7 layers) and 80.54 (Row LSTM) in the Pixel
RNN paper; a short CPU run lands well above them.

Example:
    >>> from probgen.recipes import pixelrnn_mnist
    >>> model = pixelrnn_mnist.build(layer="row")
    >>> model.image_shape, model.layer, model.n_layers
    ((28, 28), 'row', 7)
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._shared_data import binarized_mnist

from probgen.deep.pixelrnn import PixelRNN

FAMILY = "autoregressive"
SLOW = True
REFERENCE = {
    "test_nll_nats": {"diagonal": 79.20, "row": 80.54},
    "what": "negative log-likelihood on the binarized MNIST test set, Diagonal BiLSTM (7 "
    "layers) and Row LSTM",
    "source": "van den Oord, Kalchbrenner, Kavukcuoglu (2016), Pixel Recurrent Neural "
    "Networks, Table 4",
}
SMOKE = {
    "build": {"n_hidden": 4, "n_layers": 1, "first_kernel_size": 3},
    "data": {"n": 64},
    "fit": {"n_epochs": 1},
}
# Drawing 784 pixels one at a time is the slow part: fewer draws, and 2**784 images cannot be
# enumerated.
CONTRACT = {"n_samples": 8, "check_normalization": False}


def build(**overrides: Any) -> PixelRNN:
    """PixelRNN for 28x28 binary images (Diagonal BiLSTM unless `layer="row"`)."""
    settings: dict[str, Any] = dict(
        image_shape=(28, 28),
        n_levels=2,
        layer="diagonal",
        n_hidden=16,
        n_layers=7,
        first_kernel_size=7,
        row_kernel_size=3,
        n_epochs=10,
        batch_size=32,
        learning_rate=1e-3,
        seed=0,
    )
    settings.update(overrides)
    return PixelRNN(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Binarized MNIST as long images (n, 28, 28) in {0, 1} (SharedDataMissing if absent)."""
    split = "valid" if split == "validation" else split
    values = binarized_mnist(split)
    if n is not None:
        values = values[: int(n)]
    return torch.as_tensor(values, dtype=torch.long).reshape(-1, 28, 28)
