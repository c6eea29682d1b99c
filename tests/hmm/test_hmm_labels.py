"""Partially labelled sequences: the clamped forward-backward against brute force over every
state path consistent with the labels, and fully labelled fits against counting."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from probgen.core.errors import DataError
from probgen.hmm.model import HMM


def _categorical() -> HMM:
    model = HMM(3, "categorical", n_symbols=2).double()
    return model.set_parameters(
        start_probs=[0.5, 0.3, 0.2],
        transition_probs=[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]],
        emission_probs=[[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]],
    )


def _gaussian() -> HMM:
    model = HMM(2, "gaussian", n_features=1).double()
    return model.set_parameters(
        start_probs=[0.7, 0.3],
        transition_probs=[[0.8, 0.2], [0.3, 0.7]],
        means=[[0.0], [1.5]],
        covariances=[[1.0], [0.5]],
    )


def _brute_force(model: HMM, x: torch.Tensor, labels: list[int]):
    """log p(x, known states) and p(z_t | x, known states) over all consistent paths."""
    log_start = model.start_probs.log()
    log_transition = model.transition_probs.log()
    emission = model.emission.log_prob(x)  # (T, S)
    n_states, length = model.n_states, len(labels)
    joint, paths = [], []
    for path in itertools.product(range(n_states), repeat=length):
        if any(known >= 0 and known != state for known, state in zip(labels, path)):
            continue
        score = log_start[path[0]] + emission[0, path[0]]
        for t in range(1, length):
            score = score + log_transition[path[t - 1], path[t]] + emission[t, path[t]]
        joint.append(score)
        paths.append(path)
    joint_t = torch.stack(joint)
    total = torch.logsumexp(joint_t, 0)
    weights = (joint_t - total).exp()
    marginals = torch.zeros(length, n_states, dtype=torch.float64)
    for weight, path in zip(weights, paths):
        marginals[torch.arange(length), torch.tensor(path)] += weight
    return float(total), marginals


@pytest.mark.parametrize("make", [_categorical, _gaussian])
def test_clamped_log_likelihood_and_posteriors_match_brute_force(make):
    model = make()
    if model.family == "categorical":
        sequences = [torch.tensor([0, 1, 1, 0, 1]), torch.tensor([1, 0, 0])]
    else:
        sequences = [
            torch.tensor([[0.3], [1.9], [-0.4], [1.1], [0.8]], dtype=torch.float64),
            torch.tensor([[1.2], [0.1], [2.0]], dtype=torch.float64),
        ]
    labels = [[-1, 1, -1, 0, -1], [-1, -1, 1]]
    _, log_likelihoods = model.e_step(sequences, states=labels)
    posterior = model.posterior(sequences, states=labels)
    for index, (x, known) in enumerate(zip(sequences, labels)):
        total, marginals = _brute_force(model, x, known)
        assert float(log_likelihoods[index]) == pytest.approx(total, abs=1e-10)
        torch.testing.assert_close(posterior[index, : len(known)], marginals, atol=1e-10, rtol=0)
    # All -1 is the unlabelled model.
    unlabelled = [[-1] * len(x) for x in sequences]
    torch.testing.assert_close(
        model.e_step(sequences, states=unlabelled)[1], model.log_prob(sequences)
    )


def test_fully_labelled_categorical_fit_is_counting():
    x = [torch.tensor([0, 1, 1, 2, 0, 0]), torch.tensor([2, 2, 1])]
    z = [torch.tensor([0, 0, 1, 1, 0, 0]), torch.tensor([1, 1, 0])]
    model = HMM(2, "categorical", n_symbols=3, seed=3).double().fit(x, states=z)
    starts = torch.zeros(2, dtype=torch.float64)
    transitions = torch.zeros(2, 2, dtype=torch.float64)
    emissions = torch.zeros(2, 3, dtype=torch.float64)
    for symbols, states in zip(x, z):
        starts[states[0]] += 1
        for t in range(len(states)):
            emissions[states[t], symbols[t]] += 1
            if t:
                transitions[states[t - 1], states[t]] += 1
    torch.testing.assert_close(model.start_probs, starts / starts.sum())
    torch.testing.assert_close(
        model.transition_probs, transitions / transitions.sum(1, keepdim=True)
    )
    torch.testing.assert_close(model.emission_probs, emissions / emissions.sum(1, keepdim=True))
    assert model.n_iter_ == 1 and model.converged_ and len(model.history_) == 1
    assert model.history_[0]["log_likelihood"] == pytest.approx(
        float(model.e_step(x, states=z)[1].sum())
    )


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_fully_labelled_gaussian_fit_is_counting(covariance):
    generator = torch.Generator().manual_seed(0)
    x = [torch.randn(7, 2, generator=generator, dtype=torch.float64) for _ in range(3)]
    z = [torch.randint(0, 2, (7,), generator=generator) for _ in range(3)]
    model = HMM(
        2, "gaussian", covariance=covariance, covariance_prior=0.0, covariance_floor=0.0, seed=1
    ).double()
    model.fit(x, states=z)
    values, states = torch.cat(x), torch.cat(z)
    for k in range(2):
        rows = values[states == k]
        mean = rows.mean(0)
        scatter = (rows - mean).T @ (rows - mean) / len(rows)
        torch.testing.assert_close(model.means[k], mean)
        expected = scatter if covariance == "full" else torch.diag(scatter.diagonal())
        torch.testing.assert_close(model.covariances[k], expected)


def test_semi_supervised_em_follows_the_labels():
    truth = _gaussian()
    x, z = truth.sample(6, length=40, seed=0, return_states=True)
    plain = HMM(2, "gaussian", n_features=1, seed=0).double().fit(x)
    high = int(plain.means[:, 0].argmax())
    # Label a tenth of the steps with the opposite naming of the unlabelled fit's states.
    # The truth's high state is 1; the labels call it 1 - high.
    labels = torch.where(torch.arange(40) % 10 == 0, z if high == 0 else 1 - z, -1)
    model = HMM(2, "gaussian", n_features=1, seed=0).double().fit(x, states=labels)
    assert int(model.means[:, 0].argmax()) == 1 - high
    clamped = model.e_step(x, states=labels)[1].sum()
    assert clamped >= plain.e_step(x, states=labels)[1].sum()
    history = [record["log_likelihood"] for record in model.history_]
    assert all(b >= a - 1e-9 for a, b in zip(history, history[1:]))
    assert float(clamped) - 1e-2 < history[-1] <= float(clamped) + 1e-9  # one m-step behind
    # Minibatch EM takes the labels too.
    online = HMM(2, "gaussian", n_features=1, seed=0, batch_size=3, max_iter=60, tol=1e-5)
    online = online.double()
    online.fit(x, states=labels)
    assert int(online.means[:, 0].argmax()) == int(model.means[:, 0].argmax())


def test_bad_states_name_the_argument():
    model = HMM(2, "categorical", n_symbols=2)
    x = [torch.tensor([0, 1, 1]), torch.tensor([1, 0])]
    for states, fragment in [
        ([[0, 1, 1], [1, 0, 0]], "states[1] has length 3"),
        ([[0, 2, 1], [1, 0]], "states"),
        ([[0, -2, 1], [1, 0]], "states"),
        ([[0, 1, 1]], "states has 1 sequences"),
        ([[0.5, 1, 1], [1, 0]], "states"),
    ]:
        with pytest.raises(DataError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            model.fit(x, states=states)
    fitted = _categorical()
    with pytest.raises(DataError, match="states"):
        fitted.posterior([torch.tensor([0, 1])], states=[[0, 3]])
    assert math.isfinite(float(fitted.posterior([torch.tensor([0, 1])], states=[[0, 2]]).sum()))
