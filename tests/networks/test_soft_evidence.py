"""Soft (virtual) evidence in BayesianNetwork queries, and queries of observed variables."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from test_bayesnet import brute_joint, random_network

from probgen.core.errors import DataError
from probgen.networks.bayesnet import BayesianNetwork

AXES = "abcde"


def soft_joint(network: BayesianNetwork, hard: dict, soft: dict) -> torch.Tensor:
    """The joint times each hard indicator and soft likelihood, by brute force (unnormalised)."""
    joint = brute_joint(network).clone()
    for variable, state in hard.items():
        axis = AXES.index(variable)
        mask = torch.zeros(joint.shape[axis], dtype=torch.float64)
        mask[network.states[variable].index(state)] = 1.0
        joint = joint * mask.reshape([-1 if i == axis else 1 for i in range(joint.dim())])
    for variable, weights in soft.items():
        axis = AXES.index(variable)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        joint = joint * weights.reshape([-1 if i == axis else 1 for i in range(joint.dim())])
    return joint


def marginal_of(joint: torch.Tensor, keep: str) -> torch.Tensor:
    axes = tuple(i for i in range(joint.dim()) if AXES[i] not in keep)
    table = joint.sum(dim=axes)
    return table / table.sum()


def best_of(joint: torch.Tensor, network: BayesianNetwork, keep: str) -> dict[str, str]:
    table = marginal_of(joint, keep)
    index = torch.unravel_index(table.argmax(), table.shape)
    return {v: network.states[v][int(i)] for v, i in zip(keep, index)}


SOFT = {"e": [0.9, 0.2], "b": [0.3, 0.8]}


def test_soft_evidence_matches_brute_force_in_every_query():
    network = random_network(4)
    hard = {"c": "c1"}
    joint = soft_joint(network, hard, SOFT)
    table = network.query(["a", "d"], hard, virtual_evidence=SOFT)
    assert torch.allclose(table.values, marginal_of(joint, "ad"), atol=1e-12)
    marginals = network.marginals(hard, virtual_evidence=SOFT)
    for variable in "abde":
        assert torch.allclose(marginals[variable], marginal_of(joint, variable), atol=1e-12)
    # the soft evidence moves the answer (the test would pass with it ignored otherwise)
    plain = network.query(["a", "d"], hard).values
    assert not torch.allclose(plain, table.values, atol=1e-3)
    assert network.map_query(["a", "d"], hard, virtual_evidence=SOFT) == best_of(
        joint, network, "ad"
    )
    assert network.map_query(evidence=hard, virtual_evidence=SOFT) == best_of(
        joint, network, "abde"
    )
    # a queried variable may carry soft evidence (it weighs its own posterior)
    own = network.query("e", virtual_evidence={"e": [0.9, 0.2]}).values
    assert torch.allclose(own, marginal_of(soft_joint(network, {}, {"e": [0.9, 0.2]}), "e"))


def test_soft_evidence_decides_the_map_state():
    network = random_network(5)
    # a strong likelihood on b's other state flips b's MAP state
    prior = network.map_query(["b"])["b"]
    other = [s for s in network.states["b"] if s != prior][0]
    weights = [1.0, 1e-6] if other == "b0" else [1e-6, 1.0]
    assert network.map_query(["b"], virtual_evidence={"b": weights}) == {"b": other}


def test_per_row_soft_evidence_is_batched_like_hard_evidence():
    network = random_network(6)
    evidence = pd.DataFrame({"c": ["c0", None, "c1"]})
    likelihood = np.array([[0.9, 0.1], [0.2, 0.7], [0.5, 0.5]])
    shared = [0.3, 0.6, 0.1]
    soft = {"e": likelihood, "d": shared}
    table = network.query("a", evidence, virtual_evidence=soft)
    marginals = network.marginals(evidence, virtual_evidence=soft)
    found = network.map_query(["a", "b"], evidence, virtual_evidence=soft)
    assert table.values.shape == (3, 3) and list(found.columns) == ["a", "b"]
    for row, hard in enumerate([{"c": "c0"}, {}, {"c": "c1"}]):
        joint = soft_joint(network, hard, {"e": likelihood[row], "d": shared})
        assert torch.allclose(table.values[row], marginal_of(joint, "a"), atol=1e-12)
        assert torch.allclose(marginals["b"][row], marginal_of(joint, "b"), atol=1e-12)
        assert found.iloc[row].to_dict() == best_of(joint, network, "ab")
    # per-row likelihoods with dict evidence make a batch of their own
    batch = network.query("a", {"c": "c0"}, virtual_evidence={"e": likelihood})
    assert batch.values.shape == (3, 3)
    joint = soft_joint(network, {"c": "c0"}, {"e": likelihood[1]})
    assert torch.allclose(batch.values[1], marginal_of(joint, "a"), atol=1e-12)


def test_soft_evidence_is_checked():
    network = random_network(7)
    with pytest.raises(DataError, match="'e'"):
        network.query("a", virtual_evidence={"e": [0.5, 0.2, 0.3]})
    with pytest.raises(DataError, match="negative"):
        network.query("a", virtual_evidence={"e": [0.5, -0.2]})
    with pytest.raises(DataError, match="weight zero"):
        network.marginals(virtual_evidence={"e": [0.0, 0.0]})
    with pytest.raises(DataError, match="rows"):
        network.query(
            "a", pd.DataFrame({"c": ["c0", "c1"]}), virtual_evidence={"e": np.ones((3, 2))}
        )
    with pytest.raises(DataError, match="unknown variable"):
        network.query("a", virtual_evidence={"zz": [1.0]})
    # soft evidence that rules out the only state the hard evidence allows
    certain = BayesianNetwork(edges=[("x", "y")], tables={"x": [1.0, 0.0], "y": [[1, 0], [0, 1]]})
    for call in (
        lambda: certain.query("y", virtual_evidence={"x": [0.0, 1.0]}),
        lambda: certain.marginals(virtual_evidence={"x": [0.0, 1.0]}),
        lambda: certain.map_query(["y"], virtual_evidence={"x": [0.0, 1.0]}),
    ):
        with pytest.raises(DataError, match="probability zero"):
            call()


def test_soft_evidence_agrees_with_pgmpy_virtual_evidence():
    pytest.importorskip("pgmpy")
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.inference import VariableElimination
    from pgmpy.utils import get_example_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_example_model("asia")
    asia = BayesianNetwork.from_example("asia")
    states = model.get_cpds("xray").state_names["xray"]
    weights = {"yes": 0.7, "no": 0.2}
    cpd_xray = TabularCPD("xray", 2, [[weights[s]] for s in states], state_names={"xray": states})
    states_smoke = model.get_cpds("smoke").state_names["smoke"]
    smoke_weights = {"yes": 0.4, "no": 0.9}
    cpd_smoke = TabularCPD(
        "smoke", 2, [[smoke_weights[s]] for s in states_smoke], state_names={"smoke": states_smoke}
    )
    soft = {
        "xray": [weights[s] for s in asia.states["xray"]],
        "smoke": [smoke_weights[s] for s in asia.states["smoke"]],
    }
    evidence = {"asia": "yes"}
    ours_marginals = asia.marginals(evidence, virtual_evidence=soft)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for variable in ("lung", "tub", "either", "dysp"):
            theirs = VariableElimination(model).query(
                [variable],
                evidence=evidence,
                virtual_evidence=[cpd_xray, cpd_smoke],
                show_progress=False,
            )
            order = [theirs.state_names[variable].index(s) for s in asia.states[variable]]
            ours = asia.query(variable, evidence, virtual_evidence=soft).values
            assert np.allclose(ours.numpy(), theirs.values[order], atol=1e-10)
            assert np.allclose(ours_marginals[variable].numpy(), theirs.values[order], atol=1e-10)
        # pgmpy's own TabularCPD list is accepted as it is
        as_cpds = asia.query("lung", evidence, virtual_evidence=[cpd_xray, cpd_smoke]).values
        assert torch.allclose(as_cpds, asia.query("lung", evidence, virtual_evidence=soft).values)
        wanted = ["lung", "tub", "either"]
        theirs_map = VariableElimination(model).map_query(
            wanted, evidence=evidence, virtual_evidence=[cpd_xray, cpd_smoke], show_progress=False
        )
    assert asia.map_query(wanted, evidence, virtual_evidence=soft) == theirs_map


def test_querying_an_observed_variable_raises_naming_it():
    network = random_network(8)
    with pytest.raises(DataError, match="'e'.*observed"):
        network.query(["a", "e"], {"e": "e1"})
    with pytest.raises(DataError, match="'b'.*observed"):
        network.query("b", pd.DataFrame({"b": [None, "b0"]}))
    with pytest.raises(DataError, match="'e'.*observed"):
        network.map_query(["e"], {"e": "e1"})
    with pytest.raises(DataError, match="'e'.*observed"):
        network.marginals({"e": "e1"}, variables=["a", "e"])
    # all marginals (no names given) still include the observed variables' indicators
    everything = network.marginals({"e": "e1"})
    assert torch.equal(everything["e"], torch.tensor([0.0, 1.0], dtype=torch.float64))
