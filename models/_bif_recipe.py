"""Shared plumbing of the bnlearn Bayesian-network recipes (not a recipe itself).

A recipe such as `bn_asia` names a network bundled inside pgmpy (read offline from the packaged
BIF file, never downloaded); `bif_recipe_functions` gives its module the `true_network`,
`build` and `data` functions: the generating network, its structure with tables to be fitted,
and forward samples of it.

Example:
    >>> from probgen.recipes._bif_recipe import bif_recipe_functions
    >>> true_network, build, data = bif_recipe_functions("asia")
    >>> build().variables == true_network().variables, data("test", n=4).shape
    (True, (4, 8))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from probgen.core.data import check_choice, check_positive_int
from probgen.networks.bayesnet import BayesianNetwork

_SPLITS = ("train", "valid", "test")


def bif_recipe_functions(
    network_name: str,
) -> tuple[Callable[[], BayesianNetwork], Callable[..., BayesianNetwork], Callable[..., Any]]:
    """The `true_network`, `build` and `data` functions of the recipe of a bundled network.

    - ``true_network()``: the generating network with its published tables;
    - ``build(**overrides)``: its structure and state names, tables to be fitted (maximum
      likelihood unless `fit` says otherwise); overrides go to `BayesianNetwork`;
    - ``data(split="train", seed=0, n=10_000)``: forward samples of the true network as a
      DataFrame of state names (n, n_variables); each (split, seed) has its own draws.
    """

    def true_network() -> BayesianNetwork:
        """The generating network with its published tables."""
        return BayesianNetwork.from_example(network_name)

    def build(**overrides: Any) -> BayesianNetwork:
        """The structure and state names, tables to be fitted (maximum likelihood)."""
        truth = true_network()
        settings = {
            "parents": truth.parents,
            "states": truth.states,
            "variables": truth.variables,
            "name": network_name,
        }
        settings.update(overrides)
        return BayesianNetwork(**settings)

    def data(split: str = "train", seed: int = 0, n: int = 10_000) -> Any:
        """Forward samples of the true network as a DataFrame of state names (n, n_variables)."""
        check_choice(split, "split", _SPLITS)
        n = check_positive_int(n, "n")
        return true_network().sample(n, seed=3 * int(seed) + _SPLITS.index(split), as_frame=True)

    return true_network, build, data
