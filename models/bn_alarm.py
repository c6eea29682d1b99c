"""ALARM (Beinlich et al. 1989): 37-variable patient-monitoring Bayesian network.

The structure and tables are the bnlearn "alarm" network bundled inside pgmpy (read offline from
the packaged BIF file, never downloaded). `build()` gives the structure with its states but no
tables; `fit` estimates them from `data`, which are forward samples of the true network.

Example:
    >>> from probgen.recipes import bn_alarm
    >>> bn_alarm.data("test", n=5).shape
    (5, 37)
"""

from __future__ import annotations

from typing import Any

from probgen.recipes._bif_recipe import bif_recipe_functions

FAMILY = "bayesnet"
SMOKE = {"build": {"method": "bayes", "prior": "bdeu"}, "data": {"n": 2000}, "fit": {}}
# 2**41 joint states: normalisation is exact by construction but cannot be enumerated.
CONTRACT: dict[str, Any] = {"check_normalization": False}
REFERENCE = {
    "tables": "the generating network's tables (Beinlich et al. 1989, bnlearn alarm.bif), "
    "which fits on growing samples approach; true_network() returns them",
    "source": "bnlearn Bayesian network repository, alarm.bif, as bundled in pgmpy",
}

true_network, build, data = bif_recipe_functions("alarm")
