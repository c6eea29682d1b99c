"""Fully connected Boltzmann machines against brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

import probgen
from probgen.boltzmann import BoltzmannMachine
from probgen.core.errors import DataError, FitError, NotFittedError


def _random_machine(n_units, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    couplings = scale * torch.randn(n_units, n_units, generator=generator, dtype=torch.float64)
    biases = torch.randn(n_units, generator=generator, dtype=torch.float64)
    return BoltzmannMachine(n_units).double().set_parameters(couplings=couplings, biases=biases)


def _brute_force_log_probs(machine):
    states = torch.tensor(
        list(itertools.product([0, 1], repeat=machine.n_units)), dtype=torch.float64
    )
    energies = []
    for state in states:
        value = float(state @ machine.biases)
        for i in range(machine.n_units):
            for j in range(i + 1, machine.n_units):
                value += float(machine.couplings[i, j] * state[i] * state[j])
        energies.append(value)
    scores = torch.tensor(energies, dtype=torch.float64)
    return states, scores - torch.logsumexp(scores, 0)


def test_couplings_are_symmetric_with_zero_diagonal():
    machine = _random_machine(5, seed=1)
    assert torch.equal(machine.couplings, machine.couplings.T)
    assert torch.all(machine.couplings.diagonal() == 0)


def test_exact_log_prob_matches_brute_force():
    machine = _random_machine(6, seed=2)
    states, expected = _brute_force_log_probs(machine)
    assert torch.allclose(machine.log_prob(states), expected, atol=1e-10)
    support = machine.enumerate_support()
    assert float(torch.logsumexp(machine.log_prob(support), 0)) == pytest.approx(0.0, abs=1e-10)


def test_gibbs_chains_match_the_exact_distribution():
    machine = _random_machine(4, seed=3, scale=0.8)
    generator = torch.Generator().manual_seed(0)
    chains = machine.initial_state(3000, generator=generator)
    for _ in range(60):
        chains = machine.gibbs_step(chains, generator=generator)
    codes = (chains.numpy() @ np.array([1, 2, 4, 8])).astype(int)
    expected = machine.log_prob(machine.enumerate_support()).exp().numpy() * 3000
    _, p_value = stats.chisquare(np.bincount(codes, minlength=16), expected)
    assert p_value > 1e-3
    gibbs_draws = machine.sample(3000, seed=1, gibbs_steps=30)
    codes = (gibbs_draws.numpy() @ np.array([1, 2, 4, 8])).astype(int)
    _, p_value = stats.chisquare(np.bincount(codes, minlength=16), expected)
    assert p_value > 1e-3


def test_exact_fit_matches_data_moments():
    # Maximum likelihood in an exponential family: model moments equal data moments.
    teacher = _random_machine(5, seed=4, scale=0.7)
    data = teacher.sample(3000, seed=0)
    student = BoltzmannMachine(5, n_epochs=400, learning_rate=0.5, momentum=0.5, seed=0).double()
    student.fit(data)
    probabilities = student.log_prob(student.enumerate_support()).exp()
    support = student.enumerate_support()
    model_first = probabilities @ support
    model_second = (support * probabilities[:, None]).T @ support
    assert torch.allclose(model_first, data.mean(0), atol=2e-3)
    assert torch.allclose(model_second, data.T @ data / data.shape[0], atol=2e-3)
    history = [record["log_likelihood"] for record in student.history_]
    assert history[-1] > history[0]


def test_pcd_fit_approaches_the_maximum_likelihood_fit():
    teacher = _random_machine(6, seed=5, scale=1.5)
    data = teacher.sample(2000, seed=0)
    exact = BoltzmannMachine(6, n_epochs=300, learning_rate=0.5, seed=0).double().fit(data)
    student = BoltzmannMachine(6, method="pcd", n_epochs=15, learning_rate=0.05, seed=0).double()
    student.fit(data)
    history = [record["log_likelihood"] for record in student.history_]
    best = exact.history_[-1]["log_likelihood"]
    assert history[-1] > history[0]
    assert best - 0.03 < history[-1] <= best + 1e-9
    assert student.log_prob_kind is probgen.LogProbKind.EXACT


def test_bad_input_and_divergence():
    with pytest.raises(DataError, match="n_units"):
        BoltzmannMachine(0)
    with pytest.raises(NotFittedError):
        BoltzmannMachine(3).log_prob(torch.zeros(1, 3))
    machine = _random_machine(4, seed=6)
    with pytest.raises(DataError, match="other than 0 and 1"):
        machine.log_prob(torch.tensor([[0.0, 3.0, 1.0, 0.0]]))
    with pytest.raises(DataError, match="5 columns"):
        machine.log_prob(torch.zeros(2, 5))
    with pytest.raises(DataError, match="NaN"):
        machine.fit(torch.full((3, 4), float("nan")))
    data = (torch.rand(50, 4, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    exploding = BoltzmannMachine(4, learning_rate=1e9, n_epochs=3, seed=0).double()
    with pytest.raises(FitError, match="diverged"):
        exploding.fit(data)
    assert torch.isfinite(exploding.couplings).all()
    assert float(exploding.couplings.abs().max()) < exploding.max_abs_weight


def test_save_and_load_round_trip(assert_save_load_round_trip):
    machine = _random_machine(5, seed=7)
    assert_save_load_round_trip(machine, machine.enumerate_support(), n_samples=5, seed=0)


def test_clamped_gibbs_matches_the_exact_conditional():
    machine = _random_machine(4, seed=8, scale=0.8)
    support = machine.enumerate_support()
    log_p = machine.log_prob(support)
    keep = support[:, 2] == 1
    conditional = torch.softmax(log_p[keep], 0).numpy()
    free = [0, 1, 3]
    weights = np.array([1, 2, 4])
    expected = np.zeros(8)
    expected[(support[keep][:, free].numpy() @ weights).astype(int)] = conditional * 3000
    generator = torch.Generator().manual_seed(0)
    chains = machine.initial_state(3000, generator=generator, evidence={2: 1})
    for _ in range(40):
        chains = machine.gibbs_step(chains, generator=generator, evidence={2: 1})
    assert torch.all(chains[:, 2] == 1)
    codes = (chains[:, free].numpy() @ weights).astype(int)
    _, p_value = stats.chisquare(np.bincount(codes, minlength=8), expected)
    assert p_value > 1e-3
