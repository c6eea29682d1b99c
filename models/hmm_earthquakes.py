"""Annual counts of magnitude-7 earthquakes, 1900-2006, Poisson HMM (Zucchini & MacDonald).

The 107 counts are the series analysed throughout Zucchini, MacDonald & Langrock, *Hidden
Markov Models for Time Series: An Introduction Using R* (2nd ed., 2016; 1st ed. 2009), and in
hmmlearn's Poisson example. `REFERENCE` holds the book's maximum-likelihood fits for 2 and 3
states: the parameters of the *stationary* fits (initial distribution = stationary distribution
of the chain) with their log-likelihoods, and the log-likelihoods of the fits whose initial
distribution is estimated freely, which is the model `fit` estimates here (EM with free start
probabilities); our fits reproduce those (tests/graphical/test_hmm_recipes.py).

Example:
    >>> from probgen.recipes import hmm_earthquakes
    >>> counts = hmm_earthquakes.data()
    >>> counts.shape, int(counts.sum())
    (torch.Size([1, 107, 1]), 2072)
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.hmm.model import HMM

FAMILY = "hmm"
YEARS = list(range(1900, 2007))
COUNTS = [
    13, 14, 8, 10, 16, 26, 32, 27, 18, 32, 36, 24, 22, 23, 22, 18,
    25, 21, 21, 14, 8, 11, 14, 23, 18, 17, 19, 20, 22, 19, 13, 26,
    13, 14, 22, 24, 21, 22, 26, 21, 23, 24, 27, 41, 31, 27, 35, 26,
    28, 36, 39, 21, 17, 22, 17, 19, 15, 34, 10, 15, 22, 18, 15, 20,
    15, 22, 19, 16, 30, 27, 29, 23, 20, 16, 21, 21, 25, 16, 18, 15,
    18, 14, 10, 15, 8, 15, 6, 11, 8, 7, 18, 16, 13, 12, 13, 20,
    15, 16, 12, 18, 15, 16, 13, 15, 16, 11, 11,
]  # fmt: skip

REFERENCE = {
    "source": "Zucchini, MacDonald & Langrock (2016), Hidden Markov Models for Time Series, "
    "2nd ed., chapter 3 (Poisson-HMM fits to the earthquake series); log-likelihoods as "
    "printed by the book's R code pois.HMM.mle (mllk) for stationary and non-stationary fits",
    2: {
        "stationary": {
            "rates": [15.472, 26.125],
            "transition_probs": [[0.934, 0.066], [0.129, 0.871]],
            "log_likelihood": -342.3183,
        },
        "free_start_log_likelihood": -341.8787,
    },
    3: {
        "stationary": {
            "rates": [13.146, 19.721, 29.714],
            "transition_probs": [
                [0.955, 0.024, 0.021],
                [0.050, 0.899, 0.051],
                [0.000, 0.197, 0.803],
            ],
            "log_likelihood": -329.4603,
        },
        "free_start_log_likelihood": -328.5275,
    },
}
SMOKE: dict[str, Any] = {"build": {"n_init": 2, "max_iter": 50}}
CONTRACT: dict[str, Any] = {}


def build(n_states: int = 3, **overrides: Any) -> HMM:
    """A Poisson HMM with `n_states` states (10 restarts, float64)."""
    options: dict[str, Any] = dict(n_init=10, max_iter=2000, tol=1e-10, seed=0)
    options.update(overrides)
    return HMM(n_states, "poisson", **options).double()


def data(split: str = "train", seed: int = 0) -> torch.Tensor:
    """The series as one sequence, shape (1, 107, 1) (float64 counts).

    There is only one series, so every split returns it; `seed` is unused.
    """
    if split not in ("train", "test", "all"):
        raise DataError(f"split must be 'train', 'test' or 'all', got {split!r}")
    return torch.tensor(COUNTS, dtype=torch.float64).reshape(1, -1, 1)
