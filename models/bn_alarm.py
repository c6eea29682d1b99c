"""ALARM (Beinlich et al. 1989): 37-variable patient-monitoring Bayesian network.

The structure and tables are the bnlearn "alarm" network bundled inside pgmpy (read offline from
the packaged BIF file, never downloaded). `build()` gives the structure with its states but no
tables; `fit` estimates them from `data`, which are forward samples of the true network.

Example:
    >>> from models import bn_alarm
    >>> bn_alarm.data("test", n=5).shape
    (5, 37)
"""

from __future__ import annotations

from typing import Any

from probgen.data import check_choice, check_positive_int
from probgen.graphical.bayesnet import BayesianNetwork

FAMILY = "bayesnet"
SMOKE = {"build": {}, "data": {"n": 2000}, "fit": {"method": "bayes", "prior": "bdeu"}}
# 2**41 joint states: normalisation is exact by construction but cannot be enumerated.
CONTRACT: dict[str, Any] = {"check_normalization": False}
REFERENCE = {
    "tables": "the generating network's tables (Beinlich et al. 1989, bnlearn alarm.bif), "
    "which fits on growing samples approach; true_network() returns them",
    "source": "bnlearn Bayesian network repository, alarm.bif, as bundled in pgmpy",
}
_SPLITS = ("train", "valid", "test")


def true_network() -> BayesianNetwork:
    """The generating network with its published tables."""
    return BayesianNetwork.from_example("alarm")


def build(**overrides: Any) -> BayesianNetwork:
    """The alarm structure and state names, tables to be fitted (maximum likelihood)."""
    truth = true_network()
    settings = {
        "parents": truth.parents,
        "states": truth.states,
        "variables": truth.variables,
        "name": "alarm",
    }
    settings.update(overrides)
    return BayesianNetwork(**settings)


def data(split: str = "train", seed: int = 0, n: int = 10_000) -> Any:
    """Forward samples of the true network as a DataFrame of state names (n, 37)."""
    check_choice(split, "split", _SPLITS)
    n = check_positive_int(n, "n")
    return true_network().sample(n, seed=3 * int(seed) + _SPLITS.index(split), as_frame=True)
