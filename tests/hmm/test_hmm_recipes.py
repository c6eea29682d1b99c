"""The HMM recipes reproduce their known answers."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from probgen.recipes import hmm_casino, hmm_earthquakes, hmm_gaussian

from probgen.core.errors import ConvergenceWarning
from probgen.hmm.inference import log_likelihood


def stationary_distribution(transition: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eig(transition.T)
    vector = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    return vector / vector.sum()


@pytest.mark.parametrize("n_states", [2, 3])
def test_published_stationary_fit_has_the_published_log_likelihood(n_states):
    """Cross-checks the embedded counts against the book's parameters and log-likelihood."""
    published = hmm_earthquakes.REFERENCE[n_states]["stationary"]
    transition = np.array(published["transition_probs"])
    rates = torch.tensor(published["rates"], dtype=torch.float64)
    counts = hmm_earthquakes.data()[0]
    emission = torch.distributions.Poisson(rates).log_prob(counts)
    value = log_likelihood(
        torch.from_numpy(stationary_distribution(transition)),
        torch.from_numpy(transition),
        emission.unsqueeze(0),
    )
    # The published parameters are rounded to three decimals.
    assert value.item() == pytest.approx(published["log_likelihood"], abs=2e-3)


@pytest.mark.parametrize("n_states", [2, 3])
def test_earthquake_fit_reproduces_the_published_maximum_likelihood(n_states):
    reference = hmm_earthquakes.REFERENCE[n_states]
    model = hmm_earthquakes.build(n_states, n_init=6, max_iter=1500)
    model.fit(hmm_earthquakes.data())
    assert model.score(hmm_earthquakes.data()) == pytest.approx(
        reference["free_start_log_likelihood"], abs=1e-3
    )
    # Free and stationary starts give nearly the same rates.
    np.testing.assert_allclose(
        np.sort(model.rates.numpy().ravel()), reference["stationary"]["rates"], atol=0.15
    )


def test_casino_fit_recovers_the_true_parameters():
    rolls = torch.stack([hmm_casino.simulate(1000, seed=seed)[0] for seed in range(12)])
    model = hmm_casino.build(n_init=1)
    model.fit(rolls)
    loaded = int(model.emission_probs[:, 5].argmax())
    order = [1 - loaded, loaded]
    truth = hmm_casino.true_model()
    np.testing.assert_allclose(model.emission_probs[order], truth.emission_probs, atol=0.04)
    np.testing.assert_allclose(
        model.transition_probs[order][:, order], truth.transition_probs, atol=0.03
    )
    rolls_alone, dice = hmm_casino.simulate(500, seed=3)
    decoded = model.predict([rolls_alone])[0]
    accuracy = (torch.tensor(order)[decoded] == dice).double().mean()
    assert accuracy > 0.75


def test_gaussian_recipe_recovers_the_true_parameters():
    model = hmm_gaussian.build(n_init=1, max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(hmm_gaussian.data(n_sequences=20))
    truth = hmm_gaussian.true_model()
    order = min(
        itertools.permutations(range(3)),
        key=lambda o: float((model.means[list(o)] - truth.means).abs().sum()),
    )
    order = list(order)
    np.testing.assert_allclose(model.means[order], truth.means, atol=0.15)
    np.testing.assert_allclose(model.covariances[order], truth.covariances, atol=0.12)
