"""Structure learning: recovery of small known networks, constraints, scores vs pgmpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from probgen.core.errors import DataError
from probgen.networks.bayesnet import BayesianNetwork
from probgen.networks.structure import LocalScore, learn_structure, structural_hamming_distance


@pytest.fixture(scope="module")
def collider_data():
    """a -> c <- b, c -> d: a v-structure makes the edge directions identifiable."""
    truth = BayesianNetwork(
        edges=[("a", "c"), ("b", "c"), ("c", "d")],
        tables={
            "a": [0.6, 0.4],
            "b": [0.3, 0.7],
            "c": [[[0.9, 0.1], [0.4, 0.6]], [[0.3, 0.7], [0.05, 0.95]]],
            "d": [[0.8, 0.2], [0.25, 0.75]],
        },
    )
    return truth, truth.sample(5000, seed=0, as_frame=True)


@pytest.mark.parametrize("score", ["bic", "bdeu", "k2"])
def test_hill_climbing_recovers_a_small_known_network(collider_data, score):
    truth, data = collider_data
    learned = learn_structure(data, score=score)
    assert set(learned.edges) == set(truth.edges)
    assert learned.fitted_
    assert learned.structure_score_ >= max(learned.structure_history_) - 1e-9


def test_asia_is_recovered_up_to_a_few_edges():
    truth = BayesianNetwork.from_example("asia")
    data = truth.sample(10000, seed=1, as_frame=True)
    learned = learn_structure(data)
    # asia's rare "asia -> tub" edge and the deterministic "either" node cost a few edges
    # (the empty graph is at distance 8)
    assert structural_hamming_distance(learned, truth) <= 6


def test_required_forbidden_and_indegree_constraints(collider_data):
    _, data = collider_data
    learned = learn_structure(
        data, required_edges=[("d", "a")], forbidden_edges=[("a", "c")], max_indegree=1
    )
    edges = set(learned.edges)
    assert ("d", "a") in edges and ("a", "c") not in edges
    assert max(len(p) for p in learned.parents.values()) <= 1


def test_chow_liu_recovers_a_tree():
    truth = BayesianNetwork(
        edges=[("r", "x"), ("r", "y"), ("y", "z")],
        tables={
            "r": [0.5, 0.5],
            "x": [[0.9, 0.1], [0.2, 0.8]],
            "y": [[0.85, 0.15], [0.1, 0.9]],
            "z": [[0.75, 0.25], [0.2, 0.8]],
        },
    )
    data = truth.sample(4000, seed=2, as_frame=True)
    learned = learn_structure(data, method="chow_liu", root="r")
    assert set(learned.edges) == set(truth.edges)


def test_local_bic_score_matches_pgmpy(collider_data):
    pytest.importorskip("pgmpy")
    from pgmpy.estimators import BIC

    _, data = collider_data
    codes = np.stack([data[c].astype(int).to_numpy() for c in data.columns], axis=1)
    ours = LocalScore(codes, [2, 2, 2, 2], "bic")
    column = {name: index for index, name in enumerate(data.columns)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = BIC(data)
        assert ours(column["c"], [column["a"], column["b"]]) == pytest.approx(
            theirs.local_score("c", ["a", "b"]), rel=1e-9
        )
        assert ours(column["d"], []) == pytest.approx(theirs.local_score("d", []), rel=1e-9)


def test_bad_input_is_a_clear_error(collider_data):
    _, data = collider_data
    with pytest.raises(DataError, match="unknown variable 'zz'"):
        learn_structure(data, required_edges=[("zz", "a")])
    with pytest.raises(DataError, match="column 'b' has a missing value"):
        learn_structure(data.assign(b=data["b"].where(data.index > 3)))
    with pytest.raises(DataError, match="score must be one of"):
        learn_structure(data, score="aic")
    with pytest.raises(DataError, match="both required and forbidden"):
        learn_structure(data, required_edges=[("a", "b")], forbidden_edges=[("a", "b")])
