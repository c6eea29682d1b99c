"""Umbrella world (Russell & Norvig): a 3-variable dynamic Bayesian network, simulated sequences.

Rain persists from day to day (P(rain | rain yesterday) = 0.7, P(rain | dry yesterday) = 0.3),
the director carries an umbrella with probability 0.9 when it rains and 0.2 when it does not
(Russell & Norvig, *Artificial Intelligence: A Modern Approach*, 3rd ed., sec. 15.1), and the
grass is wet when it rains or stays wet from the day before. `true_model()` is that network;
`data()` draws sequences from it (a fraction `missing` of the values hidden, NaN), and
`build()` is the same structure with tables to fit.

Example:
    >>> from probgen.recipes import dbn_umbrella
    >>> dbn_umbrella.data(n_sequences=4, length=6).shape
    torch.Size([4, 6, 3])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.data import check_positive_int
from probgen.core.errors import DataError
from probgen.networks.dynamic import DynamicBayesianNetwork

FAMILY = "dbn"
STATES = {"rain": ["no", "yes"], "umbrella": ["no", "yes"], "wet_grass": ["no", "yes"]}
INTRA_EDGES = [("rain", "umbrella"), ("rain", "wet_grass")]
INTER_EDGES = [("rain", "rain"), ("wet_grass", "wet_grass")]
PRIOR_TABLES = {
    "rain": [0.5, 0.5],
    "umbrella": [[0.8, 0.2], [0.1, 0.9]],
    "wet_grass": [[0.9, 0.1], [0.05, 0.95]],
}
TRANSITION_TABLES = {
    "rain": [[0.7, 0.3], [0.3, 0.7]],
    "umbrella": [[0.8, 0.2], [0.1, 0.9]],
    # axes: (wet_grass yesterday, rain today, wet_grass today)
    "wet_grass": [[[0.9, 0.1], [0.05, 0.95]], [[0.4, 0.6], [0.02, 0.98]]],
}
REFERENCE = {
    "filtered_rain_day2_umbrella_twice": 0.883,
    "source": "Russell & Norvig (2010), AIMA 3rd ed., sec. 15.2.1: P(rain_2 | umbrella_1, "
    "umbrella_2) = 0.883 (wet_grass unobserved does not change it)",
}
SMOKE: dict[str, Any] = {"data": {"n_sequences": 40, "length": 8}}
CONTRACT = {"sample_options": {"length": 3}}


def true_model() -> DynamicBayesianNetwork:
    """The generating network."""
    return DynamicBayesianNetwork(
        STATES, INTRA_EDGES, INTER_EDGES,
        prior_tables=PRIOR_TABLES, transition_tables=TRANSITION_TABLES,
    )


def build(**overrides: Any) -> DynamicBayesianNetwork:
    """The structure with tables to fit (`overrides`: DynamicBayesianNetwork settings)."""
    return DynamicBayesianNetwork(STATES, INTRA_EDGES, INTER_EDGES, **overrides)


def data(
    split: str = "train",
    seed: int = 0,
    *,
    n_sequences: int = 200,
    length: int = 20,
    missing: float = 0.0,
) -> torch.Tensor:
    """Sequences (n_sequences, length, 3) of state indices; a fraction `missing` is NaN."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if not 0.0 <= missing < 1.0:
        raise DataError(f"missing must lie in [0, 1), got {missing!r}")
    n_sequences = check_positive_int(n_sequences, "n_sequences")
    length = check_positive_int(length, "length")
    seed = 2 * seed + (split == "test")
    sequences = true_model().sample(n_sequences, length=length, seed=seed)
    if missing == 0.0:
        return sequences
    values = sequences.double()
    hide = torch.rand(values.shape, generator=torch.Generator().manual_seed(seed)) < missing
    return values.masked_fill(hide, float("nan"))
