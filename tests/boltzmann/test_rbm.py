"""RBM densities against brute force: partition functions, conditionals, sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

import probgen
from probgen.boltzmann import RBM
from probgen.core.errors import DataError, NotFittedError


def _random_rbm(n_visible, n_hidden, visible="bernoulli", seed=0, scale=1.0, **options):
    generator = torch.Generator().manual_seed(seed)
    n_categories = options.get("n_categories", 1)
    width = n_visible * n_categories
    rbm = RBM(n_visible, n_hidden, visible, **options).double()
    values = {
        "weights": torch.randn(width, n_hidden, generator=generator, dtype=torch.float64) * scale,
        "visible_bias": torch.randn(width, generator=generator, dtype=torch.float64),
        "hidden_bias": torch.randn(n_hidden, generator=generator, dtype=torch.float64),
    }
    if visible == "gaussian":
        values["log_variance"] = 0.3 * torch.randn(width, generator=generator, dtype=torch.float64)
    return rbm.set_parameters(**values)


def _brute_force_log_z(rbm):
    """log sum over every (v, h) of exp(-E(v, h)) for Bernoulli units."""
    weights, visible_bias, hidden_bias = rbm.weights, rbm.visible_bias, rbm.hidden_bias
    visible = torch.tensor(
        list(itertools.product([0, 1], repeat=rbm.n_visible)), dtype=torch.float64
    )
    hidden = torch.tensor(list(itertools.product([0, 1], repeat=rbm.n_hidden)), dtype=torch.float64)
    negative_energy = (
        (visible @ visible_bias)[:, None]
        + (hidden @ hidden_bias)[None]
        + visible @ weights @ hidden.T
    )
    return torch.logsumexp(negative_energy.reshape(-1), 0).item()


@pytest.mark.parametrize("shape", [(3, 5), (6, 2), (4, 4), (1, 7)])
def test_exact_log_partition_matches_brute_force_over_both_layers(shape):
    rbm = _random_rbm(*shape, seed=sum(shape))
    assert rbm.log_partition("exact").estimate == pytest.approx(_brute_force_log_z(rbm), abs=1e-10)
    # log_prob normalises over the visible layer
    total = torch.logsumexp(rbm.log_prob(rbm.enumerate_support()), 0)
    assert float(total) == pytest.approx(0.0, abs=1e-10)


def test_free_energy_marginalises_hidden_units():
    rbm = _random_rbm(3, 4, seed=5)
    v = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    hidden = torch.tensor(list(itertools.product([0, 1], repeat=4)), dtype=torch.float64)
    negative_energy = v @ rbm.visible_bias + hidden @ rbm.hidden_bias + (v @ rbm.weights @ hidden.T)
    expected = -torch.logsumexp(negative_energy.reshape(-1), 0)
    assert float(rbm.free_energy(v)[0]) == pytest.approx(float(expected), abs=1e-10)
    assert torch.allclose(rbm.unnormalized_log_prob(v), -rbm.free_energy(v))


def test_categorical_log_partition_and_normalisation_by_enumeration():
    rbm = _random_rbm(3, 4, "categorical", seed=2, n_categories=3)
    support = rbm.enumerate_support()
    assert support.shape == (27, 3, 3)
    flat_support = support.reshape(27, -1)
    hidden = torch.tensor(list(itertools.product([0, 1], repeat=4)), dtype=torch.float64)
    negative_energy = (
        (flat_support @ rbm.visible_bias)[:, None]
        + (hidden @ rbm.hidden_bias)[None]
        + flat_support @ rbm.weights @ hidden.T
    )
    brute = torch.logsumexp(negative_energy.reshape(-1), 0).item()
    assert rbm.log_partition("exact").estimate == pytest.approx(brute, abs=1e-10)
    assert float(torch.logsumexp(rbm.log_prob(support), 0)) == pytest.approx(0.0, abs=1e-10)


def test_gaussian_log_partition_matches_numerical_integration():
    rbm = _random_rbm(2, 3, "gaussian", seed=3, scale=0.7)
    grid = torch.linspace(-14, 14, 1401, dtype=torch.float64)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    cell = float(grid[1] - grid[0]) ** 2
    integral = torch.logsumexp(-rbm.free_energy(points), 0).item() + math.log(cell)
    assert rbm.log_partition("exact").estimate == pytest.approx(integral, abs=1e-6)


def test_pseudo_log_likelihood_matches_brute_force_conditionals():
    rbm = _random_rbm(4, 3, seed=7)
    support = rbm.enumerate_support()
    log_p = rbm.log_prob(support)
    index = {tuple(row.tolist()): i for i, row in enumerate(support)}
    v = support[[3, 9, 14]]
    expected = []
    for row in v:
        total = 0.0
        for i in range(4):
            flipped = row.clone()
            flipped[i] = 1 - flipped[i]
            own, other = log_p[index[tuple(row.tolist())]], log_p[index[tuple(flipped.tolist())]]
            total += float(own - torch.logaddexp(own, other))
        expected.append(total)
    assert rbm.pseudo_log_likelihood(v).tolist() == pytest.approx(expected, abs=1e-10)


def test_categorical_pseudo_log_likelihood_matches_brute_force():
    rbm = _random_rbm(2, 3, "categorical", seed=8, n_categories=3)
    support = rbm.enumerate_support()
    log_p = rbm.log_prob(support).reshape(3, 3)  # digits: variable 0 fastest
    v = support[[5]]
    # support index = c0 + 3 * c1; row 5 -> c0 = 2, c1 = 1
    expected = float(log_p[1, 2] - torch.logsumexp(log_p[1, :], 0)) + float(
        log_p[1, 2] - torch.logsumexp(log_p[:, 2], 0)
    )
    assert float(rbm.pseudo_log_likelihood(v)[0]) == pytest.approx(expected, abs=1e-10)


def test_long_gibbs_chains_match_the_exact_distribution():
    rbm = _random_rbm(4, 3, seed=11, scale=0.8)
    generator = torch.Generator().manual_seed(0)
    chains = rbm.initial_state(4000, generator=generator)
    for _ in range(100):
        chains = rbm.gibbs_step(chains, generator=generator)
    codes = (chains * torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)).sum(-1).long()
    observed = np.bincount(codes.numpy(), minlength=16)
    expected = rbm.log_prob(rbm.enumerate_support()).exp().numpy() * 4000
    _, p_value = stats.chisquare(observed, expected)
    assert p_value > 1e-3


def test_gibbs_sampling_and_exact_sampling_agree_with_log_prob():
    rbm = _random_rbm(3, 8, seed=12, scale=0.6)
    probabilities = rbm.log_prob(rbm.enumerate_support()).exp().numpy()
    weights = np.array([1, 2, 4])
    for draws in (rbm.sample(3000, seed=1), rbm.sample(3000, seed=2, gibbs_steps=50)):
        codes = (draws.numpy() @ weights).astype(int)
        _, p_value = stats.chisquare(np.bincount(codes, minlength=8), probabilities * 3000)
        assert p_value > 1e-3


def test_sampling_is_seeded_and_shaped():
    rbm = _random_rbm(5, 30, seed=13)  # 30 hidden units: Gibbs sampling
    first = rbm.sample(6, seed=4, gibbs_steps=5)
    assert first.shape == (6, 5)
    assert torch.equal(first, rbm.sample(6, seed=4, gibbs_steps=5))
    categorical = _random_rbm(3, 2, "categorical", seed=1, n_categories=4)
    draws = categorical.sample(10, seed=0)
    assert draws.shape == (10, 3, 4) and torch.all(draws.sum(-1) == 1)


def test_transform_and_reconstruct_shapes_and_values():
    rbm = _random_rbm(4, 3, seed=14)
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    features = rbm.transform(x)
    assert features.shape == (2, 3)
    assert torch.allclose(features, torch.sigmoid(x @ rbm.weights + rbm.hidden_bias))
    reconstruction = rbm.reconstruct(x)
    assert reconstruction.shape == x.shape
    assert torch.allclose(
        reconstruction, torch.sigmoid(features @ rbm.weights.T + rbm.visible_bias)
    )


def test_log_prob_kind_follows_the_size_of_the_enumerated_layer():
    assert RBM(784, 500).log_prob_kind is probgen.LogProbKind.ESTIMATE
    assert RBM(784, 20).log_prob_kind is probgen.LogProbKind.EXACT
    assert RBM(16, 500).log_prob_kind is probgen.LogProbKind.EXACT  # enumerates the 16 visible
    assert RBM(50, 10, exact_max_units=5).log_prob_kind is probgen.LogProbKind.ESTIMATE


def test_bad_input_is_rejected_with_clear_errors():
    with pytest.raises(DataError, match="n_hidden"):
        RBM(4, 0)
    with pytest.raises(DataError, match="visible"):
        RBM(4, 2, visible="poisson")
    with pytest.raises(DataError, match="n_categories"):
        RBM(4, 2, visible="categorical")
    rbm = _random_rbm(4, 3, seed=15)
    with pytest.raises(DataError, match="other than 0 and 1"):
        rbm.log_prob(torch.tensor([[0.0, 2.0, 1.0, 0.0]]))
    with pytest.raises(DataError, match="other than 0 and 1"):
        rbm.fit(torch.full((10, 4), 0.5))
    with pytest.raises(DataError, match="3 columns.*4 visible units"):
        rbm.log_prob(torch.zeros(2, 3))
    with pytest.raises(DataError, match="NaN"):
        rbm.free_energy(torch.tensor([[0.0, float("nan"), 1.0, 0.0]]))
    with pytest.raises(DataError, match="empty"):
        rbm.fit(torch.zeros(0, 4))
    categorical = _random_rbm(2, 2, "categorical", seed=1, n_categories=3)
    with pytest.raises(DataError, match="one-hot"):
        categorical.log_prob(torch.ones(1, 2, 3))
    with pytest.raises(NotFittedError):
        RBM(4, 2).log_prob(torch.zeros(1, 4))
    with pytest.raises(DataError, match="ais"):
        _random_rbm(30, 30).log_partition("exact")


def test_save_and_load_round_trip(assert_save_load_round_trip):
    rbm = _random_rbm(5, 4, "gaussian", seed=16)
    x = torch.randn(7, 5, dtype=torch.float64)
    assert_save_load_round_trip(rbm, x, n_samples=4, seed=0)


def test_clamped_gibbs_sampling_matches_the_exact_conditional():
    rbm = _random_rbm(4, 3, seed=21, scale=0.8)
    support = rbm.enumerate_support()
    log_p = rbm.log_prob(support)
    # condition on unit 1 = 1 and unit 3 = 0; the free units are 0 and 2
    keep = (support[:, 1] == 1) & (support[:, 3] == 0)
    conditional = torch.softmax(log_p[keep], 0).numpy()
    codes_of_support = (support[keep][:, [0, 2]].numpy() @ np.array([1, 2])).astype(int)
    evidence = {1: 1, 3: 0}
    generator = torch.Generator().manual_seed(0)
    chains = rbm.initial_state(3000, generator=generator, evidence=evidence)
    for _ in range(50):
        chains = rbm.gibbs_step(chains, generator=generator, evidence=evidence)
    assert torch.all(chains[:, 1] == 1) and torch.all(chains[:, 3] == 0)
    codes = (chains[:, [0, 2]].numpy() @ np.array([1, 2])).astype(int)
    expected = np.zeros(4)
    expected[codes_of_support] = conditional * 3000
    _, p_value = stats.chisquare(np.bincount(codes, minlength=4), expected)
    assert p_value > 1e-3
    with pytest.raises(DataError, match="evidence"):
        rbm.gibbs_step(chains, evidence={7: 1})
    with pytest.raises(DataError, match="0 or 1"):
        rbm.initial_state(2, evidence={0: 0.5})


def test_sample_chains_drives_the_rbm_gibbs_interface():
    sample_chains = pytest.importorskip("probgen.samplers.chains").sample_chains

    rbm = _random_rbm(4, 3, seed=22)
    samples = sample_chains(
        rbm, "gibbs", num_chains=2, num_samples=50, warmup=10, seed=0, progress=False
    )
    draws = samples.draws["x"]
    assert draws.shape == (2, 50, 4)
    assert set(np.unique(draws).tolist()) <= {0.0, 1.0}
