"""MarkovNetwork MAP queries and max-marginals against brute-force enumeration and pgmpy."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from probgen.core.errors import DataError
from probgen.networks.factors import Factor, build_junction_tree, max_calibrate
from probgen.networks.markovnet import MarkovNetwork


def random_markov(seed: int = 0) -> MarkovNetwork:
    """A loopy network (a 4-cycle with a chord and a triple) plus a separate pair (a forest)."""
    rng = np.random.default_rng(seed)
    cards = {"a": 2, "b": 3, "c": 2, "d": 3, "e": 2, "f": 2, "g": 3}
    scopes = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a"), ("a", "c"), ("c", "d", "e")]
    scopes += [("f", "g"), ("g",)]
    factors = [(list(s), rng.gamma(0.7, size=tuple(cards[v] for v in s))) for s in scopes]
    return MarkovNetwork(factors, variables=list(cards))


def brute(model: MarkovNetwork, hard: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every assignment and its probability given `hard` (state indices), by enumeration."""
    support = model.enumerate_support()
    weights = model.unnormalized_log_prob(support).detach().exp()
    for variable, state in hard.items():
        weights = weights * (support[:, model.variables.index(variable)] == state)
    return support, weights / weights.sum()


def brute_map(model: MarkovNetwork, hard: dict[str, int], names: list[str]) -> dict[str, str]:
    support, probability = brute(model, hard)
    columns = [model.variables.index(v) for v in names]
    keys, inverse = torch.unique(support[:, columns], dim=0, return_inverse=True)
    totals = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, inverse, probability)
    best = keys[int(totals.argmax())]
    return {v: model.states[v][int(s)] for v, s in zip(names, best)}


def brute_max_marginals(model: MarkovNetwork, hard: dict[str, int]) -> dict[str, torch.Tensor]:
    support, probability = brute(model, hard)
    return {
        v: torch.stack(
            [probability[support[:, j] == s].max() for s in range(model.cardinalities[j])]
        )
        for j, v in enumerate(model.variables)
    }


CASES = [{}, {"c": 1}, {"b": 2, "f": 0}]


@pytest.mark.parametrize("hard", CASES)
def test_map_and_max_marginals_match_brute_force(hard):
    model = random_markov(1)
    evidence = {v: str(s) for v, s in hard.items()}
    free = [v for v in model.variables if v not in hard]
    assert model.map_query(evidence=evidence) == brute_map(model, hard, free)
    for names in (["a", "d"], ["e", "g", "b"] if "b" not in hard else ["e", "g"]):
        assert model.map_query(names, evidence) == brute_map(model, hard, names)
    found = model.max_marginals(evidence)
    expected = brute_max_marginals(model, hard)
    for variable in model.variables:
        assert torch.allclose(found[variable], expected[variable], atol=1e-12), variable
    # every variable's largest max-marginal is the probability of the MPE
    _, probability = brute(model, hard)
    for values in found.values():
        assert float(values.max()) == pytest.approx(float(probability.max()), abs=1e-12)


def test_marginal_map_differs_from_the_mpe_restricted():
    """Summing out before maximising matters: the test network is chosen so that it does."""
    # p(a, b): the MPE is (a=1, b=0), but a's marginal favours a=0
    table = torch.tensor([[0.3, 0.0, 0.0], [0.1, 0.1, 0.1]], dtype=torch.float64).T
    model = MarkovNetwork([(["b", "a"], table)])
    assert model.map_query() == {"b": "0", "a": "0"}
    assert model.map_query(["a"]) == {"a": "1"}
    assert model.max_marginals()["a"].tolist() == pytest.approx([0.3 / 0.6, 0.1 / 0.6])


def test_batched_evidence_is_one_query_per_row():
    model = random_markov(2)
    evidence = pd.DataFrame({"c": ["0", None, "1"], "g": [None, "2", "0"]})
    maps = model.map_query(["a", "b", "e"], evidence)
    mpes = model.map_query(evidence=evidence)
    found = model.max_marginals(evidence)
    assert list(maps.columns) == ["a", "b", "e"] and len(maps) == 3
    for row, hard in enumerate([{"c": 0}, {"g": 2}, {"c": 1, "g": 0}]):
        assert maps.iloc[row].to_dict() == brute_map(model, hard, ["a", "b", "e"])
        mpe = {k: v for k, v in mpes.iloc[row].to_dict().items() if k not in hard}
        assert mpe == brute_map(model, hard, [v for v in model.variables if v not in hard])
        expected = brute_max_marginals(model, hard)
        for variable in model.variables:
            assert torch.allclose(found[variable][row], expected[variable], atol=1e-12)


def test_map_queries_are_checked():
    model = random_markov(3)
    with pytest.raises(DataError, match="'c'.*observed"):
        model.map_query(["a", "c"], {"c": "1"})
    with pytest.raises(DataError, match="'c'.*observed"):
        model.max_marginals({"c": "1"}, variables=["c"])
    with pytest.raises(DataError, match="unknown variable"):
        model.map_query(["zz"])
    equal = [[1.0, 0.0], [0.0, 1.0]]
    impossible = MarkovNetwork([(["x", "y"], equal), (["y", "z"], equal)])
    with pytest.raises(DataError, match=r"row 1\) has probability zero"):
        impossible.map_query(["y"], pd.DataFrame({"x": ["0", "0"], "z": ["0", "1"]}))
    with pytest.raises(DataError, match="probability zero"):
        impossible.max_marginals({"x": "0", "z": "1"})
    small = MarkovNetwork(
        [(["a", "b"], torch.ones(4, 4)), (["b", "c"], torch.ones(4, 4))], max_exact_size=8
    )
    with pytest.raises(DataError, match="max_exact_size"):
        small.map_query()
    with pytest.raises(DataError, match="max_exact_size"):
        small.max_marginals()


def test_max_calibrate_on_a_forest_with_zeros_and_likelihoods():
    pair = Factor((0, 1), torch.tensor([[0.0, 2.0], [1.0, 0.0]], dtype=torch.float64))
    single = Factor((2,), torch.tensor([0.5, 3.0], dtype=torch.float64))
    tree = build_junction_tree([(0, 1), (2,)], {0: 2, 1: 2, 2: 2})
    likelihood = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    found, log_max = max_calibrate(tree, [pair, single], {0: likelihood})
    assert torch.allclose(log_max.exp(), torch.tensor([6.0, 3.0], dtype=torch.float64))
    assert torch.allclose(found[0].exp(), torch.tensor([[6.0, 3.0], [0.0, 3.0]]).double())
    assert torch.allclose(found[2].exp(), torch.tensor([[1.0, 6.0], [0.5, 3.0]]).double())
    assert not any(torch.isnan(v).any() for v in found.values())


def test_map_agrees_with_pgmpy():
    pytest.importorskip("pgmpy")
    from pgmpy.factors.discrete import DiscreteFactor
    from pgmpy.inference import VariableElimination
    from pgmpy.models import DiscreteMarkovNetwork

    model = random_markov(4)
    theirs = DiscreteMarkovNetwork()
    theirs.add_nodes_from(model.variables)
    for scope, potential in zip(model.scopes, model.log_potentials):
        for i, u in enumerate(scope):
            for v in scope[i + 1 :]:
                theirs.add_edge(u, v)
        cards = [model.cardinalities[model.variables.index(v)] for v in scope]
        values = potential.detach().exp().numpy()
        theirs.add_factors(DiscreteFactor(list(scope), cards, values))
    engine = VariableElimination(theirs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for evidence, names in (
            ({}, list(model.variables)),
            ({"c": 1}, ["a", "b", "d", "e"]),
            ({"b": 0, "g": 1}, ["a", "f"]),
        ):
            expected = engine.map_query(names, evidence=evidence, show_progress=False)
            ours = model.map_query(names, {v: str(s) for v, s in evidence.items()})
            assert ours == {v: str(s) for v, s in expected.items()}
