"""Factor algebra against brute-force enumeration of small random factor graphs."""

from __future__ import annotations

import itertools

import pytest
import torch
from calibration_oracle import calibrate, clique_marginal
from scipy import stats

from probgen.networks import factors as ops
from probgen.networks.factors import calibration as calibration_module


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The shared test machine is oversubscribed; tiny kernels thrash with several threads.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def random_factor_graph(seed: int, n_variables: int = 6, n_factors: int = 7):
    generator = torch.Generator().manual_seed(seed)
    cards = {v: int(torch.randint(2, 4, (1,), generator=generator)) for v in range(n_variables)}
    factors = []
    for index in range(n_factors):
        size = 1 + int(torch.randint(1, 3, (1,), generator=generator))
        scope = torch.randperm(n_variables, generator=generator)[:size].tolist()
        if index < n_variables:  # every variable in some factor
            scope = [index] + [v for v in scope if v != index][: size - 1]
        shape = [cards[v] for v in scope]
        values = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.05
        factors.append(ops.Factor(tuple(scope), values))
    return factors, cards


def brute_joint(factors, cards):
    """The full product table over variables 0..n-1."""
    n = len(cards)
    joint = torch.ones([cards[v] for v in range(n)], dtype=torch.float64)
    for assignment in itertools.product(*(range(cards[v]) for v in range(n))):
        value = 1.0
        for f in factors:
            value *= float(f.values[tuple(assignment[v] for v in f.variables)])
        joint[assignment] = value
    return joint


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eliminate_matches_brute_force(seed):
    factors, cards = random_factor_graph(seed)
    joint = brute_joint(factors, cards)
    table, log_scale = ops.eliminate(factors, keep=(3, 1))
    expected = joint.sum(dim=(0, 2, 4, 5)).T
    assert torch.allclose(table.values[0] * log_scale.exp(), expected, rtol=1e-10)


def test_contract_keeps_requested_axis_order():
    a = ops.Factor((0, 1), torch.rand(2, 3, dtype=torch.float64))
    b = ops.Factor((1, 2), torch.rand(3, 4, dtype=torch.float64))
    result = ops.contract([a, b], (2, 0))
    assert torch.allclose(result.values, (a.values @ b.values).T)


def test_min_fill_order_is_a_permutation_and_small_on_a_chain():
    adjacency = ops.moral_adjacency([(i, i + 1) for i in range(9)])
    cards = dict.fromkeys(range(10), 3)
    order = ops.min_fill_order(adjacency, cards)
    assert sorted(order) == list(range(10))
    assert ops.max_clique_size(adjacency, cards, order) == 9


@pytest.mark.parametrize("seed", [3, 4])
def test_junction_tree_batched_marginals_match_brute_force(seed):
    factors, cards = random_factor_graph(seed)
    joint = brute_joint(factors, cards)
    tree = ops.build_junction_tree([f.variables for f in factors], cards)
    potentials = ops.clique_potentials(tree, factors)
    observed = torch.tensor([[0, -1], [-1, 1], [-1, -1]])
    evidence = ops.evidence_factors(observed, [0, 2], cards)
    calibration = calibrate(tree, potentials, evidence)
    for row in range(3):
        conditioned = joint.clone()
        for column, variable in enumerate([0, 2]):
            state = int(observed[row, column])
            if state >= 0:
                mask = torch.zeros(cards[variable], dtype=torch.float64)
                mask[state] = 1
                shape = [1] * len(cards)
                shape[variable] = -1
                conditioned = conditioned * mask.reshape(shape)
        total = conditioned.sum()
        assert torch.allclose(calibration.log_evidence[row].exp(), total, rtol=1e-10)
        for variable in range(len(cards)):
            others = tuple(v for v in range(len(cards)) if v != variable)
            expected = conditioned.sum(dim=others) / total
            clique = tree.variable_clique[variable]
            found = clique_marginal(tree, potentials, calibration, clique, (variable,))
            assert torch.allclose(found.values[row], expected, atol=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_dense_calibration_matches_the_message_passing_oracle(seed):
    factors, cards = random_factor_graph(seed)
    tree = ops.build_junction_tree([f.variables for f in factors], cards)
    potentials = ops.clique_potentials(tree, factors)
    observed = torch.tensor([[0, -1], [-1, 1], [-1, -1]])
    evidence = ops.evidence_factors(observed, [0, 2], cards)
    oracle = calibrate(tree, potentials, evidence)
    plan = ops.compile_dense(tree, potentials)
    indicators = {v: f.values for v, f in evidence.items()}
    _, log_evidence, marginals = ops.calibrate_dense(plan, indicators, batch_size=3)
    assert torch.allclose(log_evidence, oracle.log_evidence, rtol=1e-10)
    for variable in range(len(cards)):
        clique = tree.variable_clique[variable]
        expected = clique_marginal(tree, potentials, oracle, clique, (variable,))
        assert torch.allclose(marginals[variable], expected.values, atol=1e-12)


def test_max_eliminate_finds_the_brute_force_argmax():
    factors, cards = random_factor_graph(5)
    joint = brute_joint(factors, cards)
    assignment, log_value = ops.max_eliminate(factors, maximise=tuple(range(len(cards))))
    best = torch.tensor(
        [int(i) for i in torch.unravel_index(joint.argmax(), joint.shape)], dtype=torch.long
    )
    assert torch.equal(assignment[0], best)
    assert torch.allclose(log_value.exp()[0], joint.max(), rtol=1e-10)
    # marginal MAP over two variables: argmax of the summed-out table
    pair, _ = ops.max_eliminate(factors, maximise=(1, 4))
    summed = joint.sum(dim=(0, 2, 3, 5))
    expected = torch.unravel_index(summed.argmax(), summed.shape)
    assert pair[0].tolist() == [int(expected[0]), int(expected[1])]


def test_loopy_bp_is_exact_on_a_tree():
    generator = torch.Generator().manual_seed(0)
    cards = dict.fromkeys(range(5), 3)
    edges = [(0, 1), (1, 2), (1, 3), (3, 4)]
    factors = [
        ops.Factor(e, torch.rand(3, 3, generator=generator, dtype=torch.float64)) for e in edges
    ]
    joint = brute_joint(factors, cards)
    marginals, info = ops.loopy_belief_propagation(factors, cards)
    assert info["converged"]
    for v in range(5):
        others = tuple(u for u in range(5) if u != v)
        expected = joint.sum(dim=others) / joint.sum()
        assert torch.allclose(marginals[v][0], expected, atol=1e-8)


def test_sample_by_elimination_matches_the_joint():
    factors, cards = random_factor_graph(6, n_variables=4, n_factors=5)
    joint = brute_joint(factors, cards)
    drawn, log_z = ops.sample_by_elimination(
        factors, cards, 20000, generator=torch.Generator().manual_seed(1)
    )
    assert torch.allclose(log_z.exp(), joint.sum(), rtol=1e-10)
    flat = torch.zeros(joint.numel(), dtype=torch.float64)
    index = torch.zeros(20000, dtype=torch.long)
    for v in range(4):
        index = index * cards[v] + drawn[v]
    flat.index_add_(0, index, torch.ones(20000, dtype=torch.float64))
    expected = (joint / joint.sum()).reshape(-1) * 20000
    statistic, p_value = stats.chisquare(flat.numpy(), expected.numpy())
    assert p_value > 1e-4


@pytest.mark.parametrize("seed", [7, 8])
def test_dense_hugin_calibration_matches_brute_force(seed):
    factors, cards = random_factor_graph(seed)
    joint = brute_joint(factors, cards)
    tree = ops.build_junction_tree([f.variables for f in factors], cards)
    plan = ops.compile_dense(tree, ops.clique_potentials(tree, factors))
    # row 0: no evidence; row 1: evidence on 1 and 5; row 2: a soft likelihood on 1
    likelihood = torch.ones(3, cards[1], dtype=torch.float64)
    likelihood[1] = 0
    likelihood[1, 1] = 1
    likelihood[2, 0] = 0.25
    indicator5 = torch.ones(3, cards[5], dtype=torch.float64)
    indicator5[1] = 0
    indicator5[1, 0] = 1
    beliefs, log_evidence, marginals = ops.calibrate_dense(plan, {1: likelihood, 5: indicator5})
    for row in range(3):
        weighted = joint * likelihood[row].reshape(1, -1, 1, 1, 1, 1)
        weighted = weighted * indicator5[row].reshape(1, 1, 1, 1, 1, -1)
        assert torch.allclose(log_evidence[row].exp(), weighted.sum(), rtol=1e-10)
        for variable in range(len(cards)):
            others = tuple(v for v in range(len(cards)) if v != variable)
            expected = weighted.sum(dim=others) / weighted.sum()
            clique = tree.variable_clique[variable]
            found = ops.belief_marginal(plan, beliefs, clique, (variable,))
            assert torch.allclose(found[row], expected, atol=1e-12)
            assert torch.allclose(marginals[variable][row], expected, atol=1e-12)


@pytest.mark.parametrize(
    "projected_width, max_entries",
    [(0, 1 << 21), (1 << 30, 1 << 30), (4, 1 << 21), (1 << 30, 0)],
    ids=["sums-only", "projections-only", "mixed", "no-room-for-projections"],
)
def test_dense_calibration_paths_agree_with_brute_force(monkeypatch, projected_width, max_entries):
    # Each way of summing a clique table (projection matrix or axis sums), evidence on one
    # variable only (evidence-free subtrees then stay broadcast over the batch), and no evidence.
    monkeypatch.setattr(calibration_module, "_MAX_PROJECTED_WIDTH", projected_width)
    monkeypatch.setattr(calibration_module, "_MAX_PROJECTION_ENTRIES", max_entries)
    factors, cards = random_factor_graph(9, n_variables=7, n_factors=9)
    joint = brute_joint(factors, cards)
    tree = ops.build_junction_tree([f.variables for f in factors], cards)
    plan = ops.compile_dense(tree, ops.clique_potentials(tree, factors))
    indicator = torch.eye(cards[3], dtype=torch.float64)  # one row per state of variable 3
    beliefs, log_evidence, marginals = ops.calibrate_dense(plan, {3: indicator})
    for row in range(cards[3]):
        weighted = joint.select(3, row)
        assert torch.allclose(log_evidence[row].exp(), weighted.sum(), rtol=1e-10)
        for variable in (v for v in range(len(cards)) if v != 3):
            axis = variable if variable < 3 else variable - 1
            others = tuple(a for a in range(weighted.dim()) if a != axis)
            expected = weighted.sum(dim=others) / weighted.sum()
            assert torch.allclose(marginals[variable][row], expected, atol=1e-12)
            clique = tree.variable_clique[variable]
            found = ops.belief_marginal(plan, beliefs, clique, (variable,))
            assert torch.allclose(found[row], expected, atol=1e-12)
    _, log_z, prior = ops.calibrate_dense(plan, batch_size=2)
    assert torch.allclose(log_z.exp(), joint.sum().expand(2), rtol=1e-10)
    for variable in range(len(cards)):
        others = tuple(v for v in range(len(cards)) if v != variable)
        expected = joint.sum(dim=others) / joint.sum()
        assert prior[variable].shape == (2, cards[variable])
        assert torch.allclose(prior[variable], expected.expand(2, -1), atol=1e-12)


def test_dense_calibration_workspace_reuse_gives_the_same_answers():
    # A reused workspace must not leak one call's tables into the next (different evidence,
    # then a different batch size, then the first evidence again).
    factors, cards = random_factor_graph(4, n_variables=6, n_factors=8)
    tree = ops.build_junction_tree([f.variables for f in factors], cards)
    plan = ops.compile_dense(tree, ops.clique_potentials(tree, factors))
    generator = torch.Generator().manual_seed(0)
    evidence_sets = [
        {v: torch.rand(batch, cards[v], generator=generator, dtype=torch.float64) for v in (0, 4)}
        for batch in (3, 3, 5)
    ]
    evidence_sets.append(evidence_sets[0])
    workspace: dict = {}
    for evidence in evidence_sets:
        _, log_fresh, fresh = ops.calibrate_dense(plan, evidence)
        beliefs, log_reused, reused = ops.calibrate_dense(plan, evidence, workspace=workspace)
        assert torch.allclose(log_fresh, log_reused, rtol=1e-12)
        for variable in fresh:
            assert torch.allclose(fresh[variable], reused[variable], atol=1e-12)
            clique = tree.variable_clique[variable]
            found = ops.belief_marginal(plan, beliefs, clique, (variable,))
            assert torch.allclose(found, fresh[variable], atol=1e-12)
    assert len(workspace) == 1
