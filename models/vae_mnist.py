"""Bernoulli VAE on statically binarized MNIST (the IWAE paper's setting); slow.

Data: `../shared/data/binarized_mnist` (50000 train / 10000 valid / 10000 test, 784 pixels in
{0, 1}). Architecture after Burda et al. (2016): MLP 784-200-200-50 (ReLU instead of tanh).
Reference: IWAE paper, test NLL 86.76 nats (k=5000 evaluation, IWAE training with k=50,
3280 passes); a short CPU run lands well above it.

Example:
    >>> from probgen.recipes import vae_mnist
    >>> vae_mnist.build().latent_dim
    50
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._shared_data import binarized_mnist

from probgen.deep.vae import VAE

FAMILY = "vae"
SLOW = True
REFERENCE = {
    "test_nll_nats": 86.76,
    "what": "negative log-likelihood on the binarized MNIST test set, IWAE estimate k=5000",
    "source": "Burda, Grosse, Salakhutdinov (2016), Importance Weighted Autoencoders, Table 1",
}
SMOKE = {
    "build": {"hidden_dims": [64], "latent_dim": 4},
    "data": {"n": 256},
    "fit": {"n_epochs": 1},
}


def build(**overrides: Any) -> VAE:
    """VAE 784-200-200-50 with a Bernoulli decoder."""
    settings = dict(
        input_shape=(784,),
        latent_dim=50,
        likelihood="bernoulli",
        hidden_dims=(200, 200),
        n_epochs=50,
        batch_size=100,
        learning_rate=1e-3,
        seed=0,
    )
    settings.update(overrides)
    return VAE(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Binarized MNIST (n, 784) as float32 in {0, 1} (raises SharedDataMissing if absent)."""
    values = binarized_mnist(split)
    if n is not None:
        values = values[: int(n)]
    return torch.as_tensor(values, dtype=torch.float32)
