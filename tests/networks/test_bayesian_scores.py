"""BDeu and K2: structure scores and Bayesian parameter estimates against pgmpy, to 1e-9.

Recovering a small network does not pin the Dirichlet cell prior (a wrong one still finds the
same edges), so these compare the exact numbers on small data where the prior matters, with
cardinalities that differ between child and parents (2, 3 and 4 states).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from probgen.networks.bayesnet import BayesianNetwork
from probgen.networks.structure import LocalScore

pytest.importorskip("pgmpy")

CARDS = {"a": 3, "b": 2, "c": 4, "d": 2}
EDGES = [("a", "c"), ("b", "c"), ("c", "d"), ("a", "d")]


@pytest.fixture(scope="module")
def small_data() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 40
    a = rng.integers(0, 3, n)
    b = rng.integers(0, 2, n)
    c = (a + 2 * b + rng.integers(0, 2, n)) % 4
    d = ((c > 1) ^ (a == 2) ^ (rng.random(n) < 0.2)).astype(int)
    # string states, so that both libraries order them by name
    return pd.DataFrame({"a": a, "b": b, "c": c, "d": d}).astype(str)


def families():
    parents = {v: [p for p, child in EDGES if child == v] for v in CARDS}
    yield from parents.items()
    yield "c", []
    yield "d", ["b"]
    yield "a", ["b", "c", "d"]


@pytest.mark.parametrize("score", ["bdeu", "k2"])
@pytest.mark.parametrize("ess", [1.0, 7.5])
def test_local_scores_match_pgmpy(small_data, score, ess):
    from pgmpy.estimators import K2, BDeu

    columns = list(small_data.columns)
    codes = small_data.astype(int).to_numpy()
    ours = LocalScore(codes, [CARDS[c] for c in columns], score, equivalent_sample_size=ess)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = BDeu(small_data, equivalent_sample_size=ess) if score == "bdeu" else K2(small_data)
        for child, parents in families():
            expected = theirs.local_score(child, parents)
            if score == "k2":
                # pgmpy 1.1's K2 adds log Gamma(r) for every parent configuration but subtracts
                # log Gamma(N_ij + r) only for the observed ones; an unobserved configuration
                # contributes Gamma(r) / Gamma(r) = 1 by the formula it documents, so remove
                # pgmpy's extra terms (BDeu has no such term)
                seen = len(small_data.groupby(parents).size()) if parents else 1
                q = int(np.prod([CARDS[p] for p in parents]))
                expected -= (q - seen) * math.lgamma(CARDS[child])
            found = ours(columns.index(child), [columns.index(p) for p in parents])
            assert found == pytest.approx(expected, rel=1e-9, abs=1e-9), (child, parents)


def pgmpy_table(cpd, variable: str, parents: list[str], states: dict) -> np.ndarray:
    """A pgmpy TabularCPD as our table: axes (*parents in our order, variable), our states."""
    names = cpd.variables
    values = np.asarray(cpd.values)
    for axis, name in enumerate(names):
        order = [cpd.state_names[name].index(s) for s in states[name]]
        values = np.take(values, order, axis=axis)
    return np.transpose(values, [names.index(p) for p in parents] + [0])


@pytest.mark.parametrize(("prior", "pgmpy_prior"), [("bdeu", "BDeu"), ("k2", "K2")])
@pytest.mark.parametrize("ess", [1.0, 7.5])
def test_bayesian_tables_match_pgmpy_bayesian_estimator(small_data, prior, pgmpy_prior, ess):
    from pgmpy.estimators import BayesianEstimator
    from pgmpy.models import DiscreteBayesianNetwork

    states = {v: [str(i) for i in range(c)] for v, c in CARDS.items()}
    # a state never seen in the data keeps only its prior mass
    states["c"] = states["c"] + ["9"]
    ours = BayesianNetwork(
        edges=EDGES,
        states=states,
        method="bayes",
        prior=prior,
        equivalent_sample_size=ess,
    ).fit(small_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DiscreteBayesianNetwork(EDGES)
        estimator = BayesianEstimator(model, small_data, state_names=states)
        for variable in CARDS:
            cpd = estimator.estimate_cpd(
                variable, prior_type=pgmpy_prior, equivalent_sample_size=ess
            )
            expected = pgmpy_table(cpd, variable, ours.parents[variable], states)
            found = ours.table(variable).numpy()
            assert found.shape == expected.shape
            assert np.allclose(found, expected, rtol=0, atol=1e-9), variable
