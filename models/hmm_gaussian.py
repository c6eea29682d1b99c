"""Three-regime Gaussian HMM in 2-D with full covariances, fitted to simulated sequences.

The generating model (`TRUE_PARAMETERS`) has three well-separated regimes with correlated
features and sticky transitions; `data(split, seed)` simulates 40 sequences of 100 steps from
it, so a fit can be compared with the truth up to a relabelling of the states.

Example:
    >>> from probgen.recipes import hmm_gaussian
    >>> hmm_gaussian.data(n_sequences=2, length=5).shape
    torch.Size([2, 5, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.hmm.model import HMM

FAMILY = "hmm"
TRUE_PARAMETERS = {
    "start_probs": [0.5, 0.3, 0.2],
    "transition_probs": [[0.90, 0.05, 0.05], [0.04, 0.92, 0.04], [0.10, 0.05, 0.85]],
    "means": [[-3.0, 0.0], [0.0, 3.0], [3.0, -1.5]],
    "covariances": [
        [[0.6, 0.3], [0.3, 0.6]],
        [[0.4, -0.1], [-0.1, 0.3]],
        [[0.8, 0.0], [0.0, 0.2]],
    ],
}
REFERENCE = {
    **TRUE_PARAMETERS,
    "source": "generating parameters of the simulated data (a fit recovers them up to a "
    "permutation of the states)",
}
SMOKE: dict[str, Any] = {
    "build": {"n_init": 1, "max_iter": 15},
    "data": {"n_sequences": 10, "length": 50},
}
CONTRACT: dict[str, Any] = {}


def true_model() -> HMM:
    """The generating Gaussian HMM (float64)."""
    return (
        HMM(3, "gaussian", n_features=2, covariance="full")
        .double()
        .set_parameters(**TRUE_PARAMETERS)
    )


def build(**overrides: Any) -> HMM:
    """A three-state full-covariance Gaussian HMM (k-means start, 2 restarts, float64)."""
    options: dict[str, Any] = dict(covariance="full", n_init=2, max_iter=200, seed=0)
    options.update(overrides)
    return HMM(3, "gaussian", **options).double()


def data(
    split: str = "train", seed: int = 0, n_sequences: int = 40, length: int = 100
) -> torch.Tensor:
    """Simulated sequences, shape (n_sequences, length, 2)."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    stream = seed if split == "train" else seed + 10_000
    return true_model().sample(n_sequences, length=length, seed=stream)
