"""Annealed importance sampling against exact partition functions."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.boltzmann import RBM, BoltzmannMachine
from probgen.boltzmann.ais import (
    annealed_importance_sampling,
    check_betas,
    log_mean_exp_with_stderr,
    temperature_schedule,
)
from probgen.core.errors import DataError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrix products crawl with 2 threads on a shared, oversubscribed machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_ais_within_a_tenth_of_a_nat_for_an_rbm_with_20_hidden_units_trained_on_digits():
    from sklearn.datasets import load_digits

    data = torch.tensor(load_digits().data > 7, dtype=torch.float64)
    rbm = RBM(64, 20, n_epochs=8, batch_size=16, monitor=(), seed=0).double().fit(data)
    exact = rbm.log_partition("exact")
    estimate = rbm.log_partition("ais", n_runs=100, n_betas=3000, seed=0)
    assert exact.method == "exact" and estimate.method == "ais"
    assert abs(estimate.estimate - exact.estimate) < 0.1
    assert 0 < estimate.stderr < 0.1
    # trained weights are far from zero, so the check is not trivial
    assert float(rbm.weights.abs().max()) > 0.5


def test_ais_on_gaussian_path_recovers_the_ratio_of_normalisers():
    def log_density(x, beta):
        return -0.5 * x**2 * ((1 - beta) + beta / 0.09)

    def move(x, beta, generator):
        std = ((1 - beta) + beta / 0.09) ** -0.5
        return torch.randn(x.shape, generator=generator, dtype=x.dtype) * std

    generator = torch.Generator().manual_seed(0)
    initial = torch.randn(2000, generator=generator, dtype=torch.float64)
    betas = temperature_schedule(200, "sigmoid")
    log_weights = annealed_importance_sampling(initial, log_density, move, betas, generator)
    estimate, stderr = log_mean_exp_with_stderr(log_weights)
    assert estimate == pytest.approx(math.log(0.3), abs=max(4 * stderr, 0.01))


def test_ais_for_gaussian_and_categorical_rbms_and_boltzmann_machines():
    generator = torch.Generator().manual_seed(1)
    gaussian = (
        RBM(3, 4, "gaussian")
        .double()
        .set_parameters(
            weights=0.5 * torch.randn(3, 4, generator=generator, dtype=torch.float64),
            hidden_bias=torch.randn(4, generator=generator, dtype=torch.float64),
        )
    )
    categorical = (
        RBM(3, 5, "categorical", n_categories=3)
        .double()
        .set_parameters(
            weights=torch.randn(9, 5, generator=generator, dtype=torch.float64),
            visible_bias=torch.randn(9, generator=generator, dtype=torch.float64),
        )
    )
    machine = (
        BoltzmannMachine(8)
        .double()
        .set_parameters(
            couplings=0.5 * torch.randn(8, 8, generator=generator, dtype=torch.float64),
            biases=torch.randn(8, generator=generator, dtype=torch.float64),
        )
    )
    for model in (gaussian, categorical, machine):
        exact = model.log_partition("exact").estimate
        estimate = model.log_partition("ais", n_runs=200, n_betas=1000, seed=0)
        assert abs(estimate.estimate - exact) < max(4 * estimate.stderr, 0.03)


def test_estimate_kind_uses_ais_and_is_repeatable():
    rbm = RBM(30, 30, ais_runs=20, ais_betas=200).set_parameters(
        weights=0.1 * torch.randn(30, 30, generator=torch.Generator().manual_seed(0))
    )
    x = torch.zeros(3, 30)
    assert rbm.log_prob_kind.value == "estimate"
    assert torch.equal(rbm.log_prob(x), rbm.log_prob(x))
    first = rbm.log_partition("ais", seed=1)
    assert first == rbm.log_partition("ais", seed=1)
    assert first != rbm.log_partition("ais", seed=2)


def test_schedules_and_bad_arguments():
    for kind in ("linear", "sigmoid", "piecewise"):
        betas = temperature_schedule(1000, kind)
        assert betas.shape == (1000,) and betas[0] == 0 and betas[-1] == 1
        assert (betas[1:] >= betas[:-1]).all()
    with pytest.raises(DataError, match="n_betas"):
        temperature_schedule(1)
    with pytest.raises(DataError, match="kind"):
        temperature_schedule(10, "cosine")
    with pytest.raises(DataError, match="start at 0"):
        check_betas([0.1, 1.0])
    with pytest.raises(DataError, match="non-decreasing"):
        check_betas([0.0, 0.6, 0.5, 1.0])
    with pytest.raises(DataError, match="NaN"):
        log_mean_exp_with_stderr(torch.tensor([0.0, float("nan")]))
