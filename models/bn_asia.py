"""Asia (Lauritzen & Spiegelhalter 1988): 8-variable Bayesian network, exact inference.

The structure and tables are the bnlearn "asia" network bundled inside pgmpy (read offline from
the packaged BIF file, never downloaded). `build()` gives the structure with its states but no
tables; `fit` estimates them from `data`, which are forward samples of the true network.

Example:
    >>> from models import bn_asia
    >>> bn_asia.data("test", n=5).shape
    (5, 8)
"""

from __future__ import annotations

from typing import Any

from probgen.data import check_choice, check_positive_int
from probgen.graphical.bayesnet import BayesianNetwork

FAMILY = "bayesnet"
SMOKE = {"build": {}, "data": {"n": 500}, "fit": {}}
CONTRACT: dict[str, Any] = {}
REFERENCE = {
    "marginals": {"lung=yes": 0.055, "either=yes": 0.064828, "xray=yes": 0.11029004},
    "source": "exact marginals of the asia network (Lauritzen & Spiegelhalter 1988, bnlearn "
    "asia.bif); BayesianNetwork.from_example('asia').marginals() reproduces them",
}
_SPLITS = ("train", "valid", "test")


def true_network() -> BayesianNetwork:
    """The generating network with its published tables."""
    return BayesianNetwork.from_example("asia")


def build(**overrides: Any) -> BayesianNetwork:
    """The asia structure and state names, tables to be fitted (maximum likelihood)."""
    truth = true_network()
    settings = {
        "parents": truth.parents,
        "states": truth.states,
        "variables": truth.variables,
        "name": "asia",
    }
    settings.update(overrides)
    return BayesianNetwork(**settings)


def data(split: str = "train", seed: int = 0, n: int = 10_000) -> Any:
    """Forward samples of the true network as a DataFrame of state names (n, 8)."""
    check_choice(split, "split", _SPLITS)
    n = check_positive_int(n, "n")
    return true_network().sample(n, seed=3 * int(seed) + _SPLITS.index(split), as_frame=True)
