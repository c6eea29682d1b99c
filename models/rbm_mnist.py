"""Bernoulli RBM with 500 hidden units on binarized MNIST; log-likelihood by AIS (slow).

Data: `../shared/data/binarized_mnist` (the fixed binarisation of Larochelle and Murray 2011:
50000 train, 10000 valid, 10000 test). With 500 hidden units the partition function is
estimated by annealed importance sampling from the base-rate model, so `log_prob` is an
estimate (`log_prob_kind == "estimate"`).

Example:
    >>> from probgen.recipes import rbm_mnist
    >>> rbm_mnist.build().log_prob_kind.value
    'estimate'
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.boltzmann import RBM

FAMILY = "boltzmann"
SLOW = True

REFERENCE = {
    "test_log_likelihood_nats": {"CD1": -125.53, "CD25": -86.34},
    "what": "average test log-likelihood of a 500-hidden-unit RBM on binarized MNIST, AIS "
    "estimate of log Z (CD1 and CD25 training with a slowly increasing number of steps)",
    "source": "Salakhutdinov and Murray (2008), On the Quantitative Analysis of Deep Belief "
    "Networks, ICML, Table 2",
}

SMOKE = {
    "build": {"n_hidden": 10, "n_epochs": 1},
    "data": {"n": 500},
    "fit": {},
}


def build(**overrides: Any) -> RBM:
    """RBM(784 visible, 500 hidden), PCD-1, batch 100, learning rate 0.05, 20 epochs."""
    settings = dict(
        n_visible=784,
        n_hidden=500,
        visible="bernoulli",
        method="pcd",
        learning_rate=0.05,
        batch_size=100,
        n_epochs=20,
        monitor=["reconstruction_error"],
        ais_runs=100,
        ais_betas=14500,
        seed=0,
    )
    settings.update(overrides)
    return RBM(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Binarized MNIST rows of `split` (n, 784) as float32 in {0, 1}; file order.

    Raises:
        SharedDataMissing: ../shared/data/binarized_mnist is not on this machine.
    """
    from probgen.recipes._shared_data import binarized_mnist

    values = binarized_mnist(split)
    if n is not None:
        values = values[: int(n)]
    return torch.as_tensor(values, dtype=torch.float32)
