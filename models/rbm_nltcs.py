"""Bernoulli RBM on the 16-variable nltcs set (DEBD), exact likelihood by enumeration.

Data: `../shared/data/debd/nltcs` (train 16181, valid 2157, test 3236 rows of 16 bits). The
16 visible units are enumerated (65536 states), so `log_prob` is exact for any number of
hidden units and the contract suite checks that exp(log_prob) sums to one.

Example:
    >>> from probgen.recipes import rbm_nltcs
    >>> rbm_nltcs.build().log_prob_kind.value
    'exact'
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.boltzmann import RBM

FAMILY = "boltzmann"

SMOKE = {
    "build": {"n_hidden": 4, "n_epochs": 1},
    "data": {"n": 2000},
    "fit": {},
}


def build(**overrides: Any) -> RBM:
    """RBM(16 visible, 20 hidden), PCD-1, batch 16, learning rate 0.05, 20 epochs."""
    settings = dict(
        n_visible=16,
        n_hidden=20,
        visible="bernoulli",
        method="pcd",
        learning_rate=0.05,
        batch_size=16,
        n_epochs=20,
        seed=0,
    )
    settings.update(overrides)
    return RBM(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """The nltcs rows of `split` (n, 16) as float32 in {0, 1}; the file order (`seed` unused).

    Raises:
        SharedDataMissing: ../shared/data/debd/nltcs is not on this machine.
    """
    from probgen.recipes._shared_data import debd

    values = debd("nltcs", split)
    if n is not None:
        values = values[: int(n)]
    return torch.as_tensor(values, dtype=torch.float32)
