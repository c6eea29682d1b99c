"""Durbin's dishonest casino: a fair and a loaded die (P(6) = 0.5), categorical HMM, simulated.

The casino switches from the fair die to the loaded one with probability 0.05 after each roll
and back with probability 0.1 (Durbin, Eddy, Krogh & Mitchison, *Biological Sequence
Analysis*, 1998, section 3.2). `simulate(n_rolls, seed)` draws rolls (coded 0..5 for faces
1..6) and the true die in use (0 = fair, 1 = loaded) from those TRUE parameters; `build()` is
the two-state categorical HMM to fit to them.

Example:
    >>> from probgen.recipes import hmm_casino
    >>> rolls, dice = hmm_casino.simulate(100, seed=0)
    >>> rolls.shape, dice.shape
    (torch.Size([100]), torch.Size([100]))
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.data import check_positive_int
from probgen.core.errors import DataError
from probgen.hmm.model import HMM

FAMILY = "hmm"
STATE_NAMES = ("fair", "loaded")
TRUE_START_PROBS = [0.5, 0.5]
TRUE_TRANSITION_PROBS = [[0.95, 0.05], [0.10, 0.90]]
TRUE_EMISSION_PROBS = [[1 / 6] * 6, [0.1] * 5 + [0.5]]
REFERENCE = {
    "start_probs": TRUE_START_PROBS,
    "transition_probs": TRUE_TRANSITION_PROBS,
    "emission_probs": TRUE_EMISSION_PROBS,
    "state_names": list(STATE_NAMES),
    "source": "Durbin, Eddy, Krogh & Mitchison (1998), Biological Sequence Analysis, sec. 3.2 "
    "(the generating parameters of the simulated rolls)",
}
SMOKE: dict[str, Any] = {
    "build": {"n_init": 1, "max_iter": 60, "tol": 1e-4},
    "data": {"n_rolls": 300},
}
CONTRACT = {"sample_options": {"length": 3}}


def true_model() -> HMM:
    """The generating casino HMM (float64)."""
    model = HMM(2, "categorical", n_symbols=6).double()
    return model.set_parameters(
        start_probs=TRUE_START_PROBS,
        transition_probs=TRUE_TRANSITION_PROBS,
        emission_probs=TRUE_EMISSION_PROBS,
    )


def simulate(n_rolls: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_rolls` rolls (long, 0..5 for faces 1..6) and the true dice (0 fair, 1 loaded)."""
    n_rolls = check_positive_int(n_rolls, "n_rolls")
    rolls, dice = true_model().sample(1, length=n_rolls, seed=seed, return_states=True)
    return rolls[0], dice[0]


def build(**overrides: Any) -> HMM:
    """The two-state categorical HMM fitted to the rolls (float64, 3 restarts)."""
    options: dict[str, Any] = dict(
        n_symbols=6, n_init=3, max_iter=500, tol=1e-7, seed=0, pseudocount=0.0
    )
    options.update(overrides)
    return HMM(2, "categorical", **options).double()


def data(split: str = "train", seed: int = 0, n_rolls: int = 2000) -> torch.Tensor:
    """Simulated rolls as one sequence, shape (1, n_rolls); `test` uses a different stream."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    rolls, _ = simulate(n_rolls, seed=seed if split == "train" else seed + 10_000)
    return rolls.unsqueeze(0)
