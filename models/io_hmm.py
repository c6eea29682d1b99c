"""Input-output HMM: a calm and a volatile regime whose switching is driven by two covariates.

Each step carries two inputs (say, a market-stress index and a seasonal signal). High stress
pushes the process into the volatile regime, the seasonal signal only makes the calm regime
stickier. `data(split, seed)` simulates 40 sequences of 100 steps of one Gaussian observation
from the generating model (`TRUE_PARAMETERS`) and returns the pair ``(observations, inputs)``
that the model's `fit` and `log_prob` take; `build()` is the two-state Gaussian input-output
HMM (`HMM(..., transition_inputs=2)`) fitted by generalised EM, which recovers the generating
weights up to a relabelling of the states (the weights are stored centred over the
destination state, as `REFERENCE` gives them).

The density contract runs without its sampling and normalisation checks: the model's draws
and its probabilities are conditional on inputs that the generic checks do not supply.

Example:
    >>> from probgen.recipes import io_hmm
    >>> observations, inputs = io_hmm.data(n_sequences=2, length=5)
    >>> observations.shape, inputs.shape
    (torch.Size([2, 5, 1]), torch.Size([2, 5, 2]))
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.hmm.model import HMM

FAMILY = "hmm"
N_INPUTS = 2
TRUE_PARAMETERS = {
    "start_probs": [0.8, 0.2],
    "transition_probs": [[0.9, 0.1], [0.3, 0.7]],
    # [from state, input, to state]; centred over the last axis.
    "transition_input_weights": [
        [[-1.5, 1.5], [0.75, -0.75]],  # calm: stress leaves it, the season keeps it
        [[-1.0, 1.0], [0.0, 0.0]],  # volatile: stress keeps it
    ],
    "means": [[0.0], [0.0]],
    "covariances": [[0.25], [4.0]],
}
REFERENCE = {
    **TRUE_PARAMETERS,
    "source": "generating parameters of the simulated data (a fit recovers them up to a "
    "permutation of the states)",
}
SMOKE: dict[str, Any] = {
    "build": {"n_init": 1, "max_iter": 5},
    "data": {"n_sequences": 6, "length": 20},
}
CONTRACT: dict[str, Any] = {"check_sampling": False, "check_normalization": False}


def true_model() -> HMM:
    """The generating input-output HMM (float64)."""
    model = HMM(2, "gaussian", n_features=1, transition_inputs=N_INPUTS).double()
    return model.set_parameters(**TRUE_PARAMETERS)


def build(**overrides: Any) -> HMM:
    """A two-state Gaussian input-output HMM with two inputs (2 restarts, float64)."""
    options: dict[str, Any] = dict(
        transition_inputs=N_INPUTS, n_init=2, max_iter=200, tol=1e-6, seed=0
    )
    options.update(overrides)
    return HMM(2, "gaussian", **options).double()


def inputs(n_sequences: int, length: int, seed: int) -> torch.Tensor:
    """Covariates (n_sequences, length, 2): a persistent stress index and a seasonal wave."""
    generator = torch.Generator().manual_seed(seed)
    shocks = torch.randn(n_sequences, length, dtype=torch.float64, generator=generator)
    stress = torch.zeros(n_sequences, length, dtype=torch.float64)
    level = torch.zeros(n_sequences, dtype=torch.float64)
    for t in range(length):  # an AR(1) index, so that regimes last
        level = 0.8 * level + 0.6 * shocks[:, t]
        stress[:, t] = level
    phase = 2 * torch.pi * torch.rand(n_sequences, 1, dtype=torch.float64, generator=generator)
    season = torch.sin(phase + 2 * torch.pi * torch.arange(length) / 25)
    return torch.stack([stress, season], -1)


def data(
    split: str = "train", seed: int = 0, n_sequences: int = 40, length: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated `(observations (n_sequences, length, 1), inputs (n_sequences, length, 2))`."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    stream = seed if split == "train" else seed + 10_000
    covariates = inputs(n_sequences, length, stream)
    observations = true_model().sample(n_sequences, length=length, inputs=covariates, seed=stream)
    return observations, covariates
