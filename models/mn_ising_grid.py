"""Ising model on a 4x4 grid as a Markov network: exact partition function, fitted couplings.

Spins take states "-1" and "+1"; the generating model has coupling 0.4 on every grid edge and
field 0.1 on every site, p(s) proportional to exp(J * sum s_i s_j + h * sum s_i). Data are exact
samples (backward sampling after variable elimination). `build()` gives the grid's factor
structure with all log-potentials zero; `fit` maximises the exact likelihood with L-BFGS.

Example:
    >>> from probgen.recipes import mn_ising_grid
    >>> mn_ising_grid.data("test", n=3).shape
    torch.Size([3, 16])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.data import check_choice, check_positive_int
from probgen.networks.markovnet import MarkovNetwork

FAMILY = "markovnet"
SMOKE = {
    "build": {"rows": 3, "cols": 3, "max_iter": 20},
    "data": {"n": 1000, "rows": 3, "cols": 3},
    "fit": {},
}
CONTRACT: dict[str, Any] = {}
REFERENCE = {
    "coupling": 0.4,
    "field": 0.1,
    "source": "the generating model of data(); fitted pairwise log-potential contrasts "
    "(log phi(+,+) + log phi(-,-) - log phi(+,-) - log phi(-,+)) / 4 approach the coupling",
}
_SPLITS = ("train", "valid", "test")


def _grid(rows: int, cols: int) -> list[list[str]]:
    scopes = []
    for r in range(rows):
        for c in range(cols):
            scopes.append([f"s{r}{c}"])
            if c + 1 < cols:
                scopes.append([f"s{r}{c}", f"s{r}{c + 1}"])
            if r + 1 < rows:
                scopes.append([f"s{r}{c}", f"s{r + 1}{c}"])
    return scopes


def true_model(rows: int = 4, cols: int = 4, coupling: float = 0.4, field: float = 0.1):
    """The generating Ising model."""
    spins = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    pair = (coupling * spins[:, None] * spins[None, :]).exp()
    unary = (field * spins).exp()
    factors = [(scope, pair if len(scope) == 2 else unary) for scope in _grid(rows, cols)]
    states = {v: ["-1", "+1"] for scope in _grid(rows, cols) for v in scope}
    return MarkovNetwork(factors, states=states)


def build(rows: int = 4, cols: int = 4, **overrides: Any) -> MarkovNetwork:
    """The grid's unary and pairwise factors, log-potentials zero (to be fitted)."""
    rows = check_positive_int(rows, "rows")
    cols = check_positive_int(cols, "cols")
    scopes = _grid(rows, cols)
    states = {v: ["-1", "+1"] for scope in scopes for v in scope}
    return MarkovNetwork(scopes=scopes, states=states, **overrides)


def data(
    split: str = "train", seed: int = 0, n: int = 5000, rows: int = 4, cols: int = 4
) -> torch.Tensor:
    """Exact samples of the generating model: long tensor (n, rows * cols) of state indices."""
    check_choice(split, "split", _SPLITS)
    n = check_positive_int(n, "n")
    model = true_model(rows, cols)
    return model.sample(n, seed=3 * int(seed) + _SPLITS.index(split))
