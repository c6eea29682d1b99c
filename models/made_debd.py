"""MADE on the binary density-estimation benchmarks nltcs, dna, mushrooms and nips (debd).

Data: `../shared/data/debd/NAME/NAME.{train,valid,test}.data` (0/1 rows; nltcs 16 variables,
dna 180, mushrooms 112, nips 500). Architecture after Germain et al. (2015): one hidden layer
of 500 ReLU units, one mask (natural order). Choose the set with `dataset=` in both `build`
and `data`. Reference: the MADE paper's test negative log-likelihoods for one mask.

Example:
    >>> from probgen.recipes import made_debd
    >>> made_debd.build(dataset="dna").n_inputs
    180
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._shared_data import debd

from probgen.core.data import check_choice
from probgen.deep.autoregressive import MADE

FAMILY = "autoregressive"
DATASETS = {"nltcs": 16, "dna": 180, "mushrooms": 112, "nips": 500}
REFERENCE = {
    "test_nll_nats": {"dna": 83.63, "mushrooms": 9.68, "nips": 280.25},
    "what": "average test negative log-likelihood in nats, MADE with one mask",
    "source": "Germain, Gregor, Murray, Larochelle (2015), MADE: Masked Autoencoder for "
    "Distribution Estimation, Table 2",
}
# nltcs has 2**16 configurations, so the contract suite checks that exp(log_prob) sums to 1.
SMOKE = {
    "build": {"hidden_dims": [32], "n_masks": 2},
    "data": {"n": 400},
    "fit": {"n_epochs": 2},
}


def build(dataset: str = "nltcs", **overrides: Any) -> MADE:
    """MADE with one hidden layer of 500 units for the debd set `dataset`."""
    check_choice(dataset, "dataset", tuple(DATASETS))
    settings: dict[str, Any] = dict(
        n_inputs=DATASETS[dataset],
        hidden_dims=[500],
        n_masks=1,
        likelihood="bernoulli",
        n_epochs=30,
        batch_size=100,
        learning_rate=1e-3,
        seed=0,
    )
    settings.update(overrides)
    return MADE(**settings)


def data(
    split: str = "train", seed: int = 0, dataset: str = "nltcs", n: int | None = None
) -> torch.Tensor:
    """The debd set `dataset` as float32 (n, D) in {0, 1}; split train, valid or test.

    Raises:
        SharedDataMissing: ../shared/data/debd is not on this machine.
    """
    check_choice(dataset, "dataset", tuple(DATASETS))
    split = "valid" if split == "validation" else split
    values = debd(dataset, split)
    if n is not None:
        values = values[: int(n)]
    return torch.as_tensor(values, dtype=torch.float32)
