"""Two-regime Gaussian hidden semi-Markov model with Poisson state durations, simulated.

A long calm regime (mean duration 9 steps) alternates with a short volatile one (mean duration
3 steps): durations an HMM can only model as geometric. `data(split, seed)` simulates 20
sequences of 80 steps from the generating model (`TRUE_PARAMETERS`); `build()` is the HSMM with
Poisson durations fitted to them, which recovers the truth up to a relabelling of the states.

Example:
    >>> from probgen.recipes import hsmm_regimes
    >>> hsmm_regimes.data(n_sequences=2, length=5).shape
    torch.Size([2, 5, 1])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.hmm.semi_markov import HSMM

FAMILY = "hmm"
MAX_DURATION = 25
TRUE_PARAMETERS = {
    "start_probs": [0.7, 0.3],
    "transition_probs": [[0.0, 1.0], [1.0, 0.0]],
    "duration_parameters": [[8.0, 0.0], [2.0, 0.0]],  # d - 1 ~ Poisson(rate)
    "means": [[0.0], [0.5]],
    "covariances": [[0.2], [2.0]],
}
REFERENCE = {
    **TRUE_PARAMETERS,
    "source": "generating parameters of the simulated data (a fit recovers them up to a "
    "permutation of the states)",
}
SMOKE: dict[str, Any] = {
    "build": {"n_init": 1, "max_iter": 3, "max_duration": 12},
    "data": {"n_sequences": 4, "length": 20},
}
CONTRACT: dict[str, Any] = {"sample_options": {"length": 6}}


def true_model() -> HSMM:
    """The generating HSMM (float64)."""
    model = HSMM(2, "gaussian", n_features=1, duration="poisson", max_duration=MAX_DURATION)
    return model.double().set_parameters(**TRUE_PARAMETERS)


def build(**overrides: Any) -> HSMM:
    """A two-state Gaussian HSMM with Poisson durations (2 restarts, float64)."""
    options: dict[str, Any] = dict(
        duration="poisson", max_duration=MAX_DURATION, n_init=2, max_iter=100, tol=1e-5, seed=0
    )
    options.update(overrides)
    return HSMM(2, "gaussian", **options).double()


def data(
    split: str = "train", seed: int = 0, n_sequences: int = 20, length: int = 80
) -> torch.Tensor:
    """Simulated sequences, shape (n_sequences, length, 1)."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    stream = seed if split == "train" else seed + 10_000
    return true_model().sample(n_sequences, length=length, seed=stream)
