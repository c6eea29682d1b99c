"""MarkovNetwork: exact partition function, marginals and sampling against brute force."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from probgen.core.contract import LogProbKind
from probgen.core.errors import DataError
from probgen.networks.bayesnet import BayesianNetwork
from probgen.networks.markovnet import MarkovNetwork


def ising(rows: int = 3, cols: int = 3, coupling: float = 0.5, field: float = 0.2, **options):
    pair = torch.tensor([[coupling, -coupling], [-coupling, coupling]], dtype=torch.float64).exp()
    unary = torch.tensor([-field, field], dtype=torch.float64).exp()
    factors = []
    for r in range(rows):
        for c in range(cols):
            factors.append(([f"s{r}{c}"], unary))
            if c + 1 < cols:
                factors.append(([f"s{r}{c}", f"s{r}{c + 1}"], pair))
            if r + 1 < rows:
                factors.append(([f"s{r}{c}", f"s{r + 1}{c}"], pair))
    return MarkovNetwork(factors, **options)


def brute_log_weights(model: MarkovNetwork) -> torch.Tensor:
    support = model.enumerate_support()
    return model.unnormalized_log_prob(support)


def test_partition_function_and_normalisation_match_brute_force():
    model = ising()
    log_weights = brute_log_weights(model)
    assert torch.allclose(model.log_partition(), torch.logsumexp(log_weights, 0))
    assert model.log_prob_kind == LogProbKind.EXACT
    assert torch.allclose(
        torch.logsumexp(model.log_prob(model.enumerate_support()), 0),
        torch.zeros((), dtype=torch.float64),
        atol=1e-12,
    )


def test_marginals_with_evidence_match_brute_force():
    model = ising(coupling=0.7)
    support = model.enumerate_support()
    weights = brute_log_weights(model).exp()
    keep = support[:, 0] == 1
    marginals = model.marginals({"s00": "1"})
    for index, variable in enumerate(model.variables):
        expected = torch.stack([weights[keep & (support[:, index] == s)].sum() for s in (0, 1)])
        assert torch.allclose(marginals[variable], expected / expected.sum(), atol=1e-12)


def test_loopy_bp_is_labelled_and_close_on_a_weakly_coupled_grid():
    model = ising(coupling=0.2)
    exact = model.marginals()
    approx = model.marginals(method="loopy_bp")
    assert model.last_inference_["method"] == "loopy_bp" and model.last_inference_["converged"]
    for variable in model.variables:
        assert torch.allclose(approx[variable], exact[variable], atol=0.02)


def test_large_treewidth_is_honestly_unnormalized():
    model = ising(max_exact_size=4)
    assert model.log_prob_kind == LogProbKind.UNNORMALIZED
    x = torch.zeros(2, 9, dtype=torch.long)
    assert torch.allclose(model.log_prob(x), model.unnormalized_log_prob(x))
    with pytest.raises(DataError, match="exact inference"):
        model.log_partition()
    assert model.sample(5, seed=0, burn_in=5).shape == (5, 9)


def test_exact_samples_match_the_joint():
    model = ising(rows=2, cols=3, coupling=0.6)
    probabilities = model.log_prob(model.enumerate_support()).exp()
    samples = model.sample(30000, seed=0)
    index = torch.zeros(30000, dtype=torch.long)
    for column in range(6):
        index = index * 2 + samples[:, column]
    counts = torch.bincount(index, minlength=64).double()
    _, p_value = stats.chisquare(counts.numpy(), (probabilities * 30000).numpy())
    assert p_value > 1e-4


def test_gibbs_chains_reach_the_exact_marginals():
    model = ising(rows=2, cols=2, coupling=0.4, field=0.3)
    exact = model.marginals()
    generator = torch.Generator().manual_seed(0)
    state = model.initial_state(4000, generator=generator)
    for _ in range(30):
        state = model.gibbs_step(state, generator=generator)
    for index, variable in enumerate(model.variables):
        assert float(state[:, index].double().mean()) == pytest.approx(
            float(exact[variable][1]), abs=0.03
        )


def test_fit_recovers_the_generating_model():
    truth = ising(rows=2, cols=3, coupling=0.6, field=0.1)
    data = truth.sample(20000, seed=1)
    fitted = MarkovNetwork(scopes=truth.scopes, states=truth.states).fit(data)
    support = truth.enumerate_support()
    p, q = truth.log_prob(support).exp(), fitted.log_prob(support).exp()
    assert 0.5 * float((p - q).abs().sum()) < 0.03
    assert float(fitted.log_prob(data).mean()) >= float(truth.log_prob(data).mean()) - 1e-3
    pseudo = MarkovNetwork(
        scopes=truth.scopes, states=truth.states, objective="pseudo_likelihood"
    ).fit(data)
    q = pseudo.log_prob(support).exp()
    assert 0.5 * float((p - q).abs().sum()) < 0.03


def test_fit_settings_come_from_the_constructor():
    truth = ising(rows=2, cols=2, coupling=0.6, field=0.1)
    data = truth.sample(2000, seed=1)
    once = MarkovNetwork(scopes=truth.scopes, states=truth.states, max_iter=1, tol=0.0).fit(data)
    assert once.n_iter_ == 1 and len(once.history_) == 1 and not once.converged_
    assert set(once.history_[0]) == {"iteration", "objective"}
    longer = MarkovNetwork(scopes=truth.scopes, states=truth.states, max_iter=60, tol=0.0)
    assert longer.fit(data).n_iter_ == 3
    config = longer.get_config()
    assert (config["max_iter"], config["tol"], config["objective"]) == (60, 0.0, "auto")
    assert MarkovNetwork.from_config(config).max_iter == 60


def test_fit_settings_are_deprecated_but_still_apply():
    truth = ising(rows=2, cols=2, coupling=0.6, field=0.1)
    data = truth.sample(2000, seed=1)
    expected = MarkovNetwork(
        scopes=truth.scopes, states=truth.states, objective="pseudo_likelihood", max_iter=20
    ).fit(data)
    network = MarkovNetwork(scopes=truth.scopes, states=truth.states)
    with pytest.warns(DeprecationWarning) as caught:
        network.fit(data, objective="pseudo_likelihood", max_iter=20)
    messages = " ".join(str(w.message) for w in caught)
    assert "MarkovNetwork(objective=...)" in messages and "MarkovNetwork(max_iter=...)" in messages
    assert network.n_iter_ == 1 and network.max_iter == 100
    for found, wanted in zip(network.log_potentials, expected.log_potentials):
        assert torch.equal(found, wanted)


def test_moralised_bayesian_network_has_unit_partition_function():
    network = BayesianNetwork.from_example("asia")
    markov = network.to_markov()
    assert float(markov.log_partition()) == pytest.approx(0.0, abs=1e-12)
    x = network.sample(20, seed=0)
    assert torch.allclose(markov.log_prob(x), network.log_prob(x))
    exact = network.marginals({"dysp": "yes"})
    found = markov.marginals({"dysp": "yes"})
    for variable in network.variables:
        assert torch.allclose(found[variable], exact[variable], atol=1e-12)


def test_missing_values_are_summed_out():
    model = ising(rows=2, cols=2)
    support = model.enumerate_support()
    probabilities = model.log_prob(support).exp()
    row = torch.tensor([[1.0, float("nan"), 0.0, float("nan")]], dtype=torch.float64)
    expected = probabilities[(support[:, 0] == 1) & (support[:, 2] == 0)].sum()
    assert torch.allclose(model.log_prob(row).exp(), expected.reshape(1))


def test_save_load_round_trip(assert_save_load_round_trip):
    model = ising(rows=2, cols=2)
    assert_save_load_round_trip(model, model.enumerate_support(), n_samples=20, seed=4)


def test_bad_factors_are_clear_errors():
    with pytest.raises(DataError, match="factors\\[0\\] table has 1 axes"):
        MarkovNetwork([(["a", "b"], [1.0, 2.0])])
    with pytest.raises(DataError, match="negative"):
        MarkovNetwork([(["a"], [1.0, -2.0])])
    with pytest.raises(DataError, match="variable 'a'"):
        MarkovNetwork([(["a"], [1.0, 2.0]), (["a", "b"], [[1.0, 1.0, 1.0]] * 3)])
    model = ising(rows=1, cols=2)
    with pytest.raises(DataError, match="unknown variable 'zz'"):
        model.marginals({"zz": "0"})
    assert math.isfinite(float(model.log_partition()))
