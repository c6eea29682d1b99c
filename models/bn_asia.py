"""Asia (Lauritzen & Spiegelhalter 1988): 8-variable Bayesian network, exact inference.

The structure and tables are the bnlearn "asia" network bundled inside pgmpy (read offline from
the packaged BIF file, never downloaded). `build()` gives the structure with its states but no
tables; `fit` estimates them from `data`, which are forward samples of the true network.

Example:
    >>> from probgen.recipes import bn_asia
    >>> bn_asia.data("test", n=5).shape
    (5, 8)
"""

from __future__ import annotations

from typing import Any

from probgen.recipes._bif_recipe import bif_recipe_functions

FAMILY = "bayesnet"
SMOKE = {"build": {}, "data": {"n": 500}, "fit": {}}
CONTRACT: dict[str, Any] = {}
REFERENCE = {
    "marginals": {"lung=yes": 0.055, "either=yes": 0.064828, "xray=yes": 0.11029004},
    "source": "exact marginals of the asia network (Lauritzen & Spiegelhalter 1988, bnlearn "
    "asia.bif); BayesianNetwork.from_example('asia').marginals() reproduces them",
}

true_network, build, data = bif_recipe_functions("asia")
