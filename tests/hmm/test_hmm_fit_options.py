"""Fit options that must change what `HMM.fit` does: fixed parameters (init_params,
update_params), minibatch EM's batch_size and record, and the choice among n_init restarts."""

from __future__ import annotations

import warnings

import pytest
import torch

import probgen
from probgen.core.errors import DataError
from probgen.hmm.model import HMM


def _truth() -> HMM:
    return (
        HMM(3, "gaussian", n_features=2)
        .double()
        .set_parameters(
            start_probs=[0.6, 0.3, 0.1],
            transition_probs=[[0.8, 0.1, 0.1], [0.1, 0.85, 0.05], [0.15, 0.05, 0.8]],
            means=[[-3.0, 0.0], [0.0, 3.0], [3.0, -1.0]],
            covariances=[[0.3, 0.5], [0.4, 0.2], [0.6, 0.6]],
        )
    )


def _quiet_fit(model: HMM, data, **options) -> HMM:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        return model.fit(data, **options)


# ---- init_params / update_params -------------------------------------------------------------
def test_left_right_model_keeps_its_fixed_start_probabilities():
    truth = (
        HMM(3, "gaussian", n_features=1)
        .double()
        .set_parameters(
            start_probs=[1.0, 0.0, 0.0],
            transition_probs=[[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]],
            means=[[-2.0], [0.0], [2.0]],
            covariances=[[0.2], [0.2], [0.2]],
        )
    )
    data = truth.sample(6, length=40, seed=1)
    model = HMM(
        3,
        "gaussian",
        seed=0,
        max_iter=30,
        init_params=(),
        update_params=("transitions", "emissions"),
    ).double()
    start = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    left_right = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    model.set_parameters(
        start_probs=start,
        transition_probs=left_right,
        means=[[-1.0], [0.0], [1.0]],
        covariances=[[1.0], [1.0], [1.0]],
    )
    _quiet_fit(model, data)
    assert torch.equal(model.start_probs, start)  # fixed: exactly unchanged
    assert (model.transition_probs[left_right == 0] == 0).all()  # the structure is kept
    assert not torch.equal(model.transition_probs, left_right.double())  # updated
    torch.testing.assert_close(model.means, truth.means, atol=0.15, rtol=0)


def test_refitting_only_the_emissions_leaves_start_and_transitions_alone():
    data = _truth().sample(8, length=50, seed=2)
    model = _truth()
    model.set_parameters(means=[[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    start, transitions = model.start_probs.clone(), model.transition_probs.clone()
    model.init_params, model.update_params = (), ("emissions",)
    model.max_iter = 20
    _quiet_fit(model, data)
    assert torch.equal(model.start_probs, start)
    assert torch.equal(model.transition_probs, transitions)
    torch.testing.assert_close(model.means, _truth().means, atol=0.2, rtol=0)


def test_parameters_left_out_of_init_params_are_the_starting_point():
    # One EM iteration from the given parameters, done by hand, is what fit must produce.
    data = _truth().sample(5, length=30, seed=3)
    given = dict(means=[[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], covariances=[[1.0, 1.0]] * 3)
    model = HMM(3, "gaussian", max_iter=1, tol=0.0, seed=0, init_params=()).double()
    model.set_parameters(start_probs=[0.2, 0.3, 0.5], **given)
    by_hand = HMM(3, "gaussian").double().set_parameters(start_probs=[0.2, 0.3, 0.5], **given)
    by_hand.m_step(by_hand.e_step(data)[0])
    _quiet_fit(model, data)
    for name in ("start_probs", "transition_probs", "means", "covariances"):
        torch.testing.assert_close(getattr(model, name), getattr(by_hand, name))


def test_init_params_are_kept_across_restarts():
    data = _truth().sample(5, length=30, seed=4)
    model = _truth()
    model.n_init, model.max_iter, model.seed = 3, 5, 0
    model.init_params, model.update_params = ("emissions",), ("emissions",)
    transitions = model.transition_probs.clone()
    _quiet_fit(model, data)
    assert torch.equal(model.transition_probs, transitions)


def test_parameter_groups_are_checked_and_saved(tmp_path):
    with pytest.raises(DataError, match="tuple of names"):
        HMM(2, update_params="ste")
    with pytest.raises(DataError, match="unknown names"):
        HMM(2, init_params=("start", "means"))
    with pytest.raises(DataError, match="set_parameters first"):
        HMM(2, "gaussian", init_params=("start",)).fit(torch.randn(2, 10, 1))
    model = _truth()
    model.update_params = ("emissions",)
    path = tmp_path / "model.pg"
    model.save(path)
    assert tuple(probgen.load(path).update_params) == ("emissions",)


# ---- minibatch EM ------------------------------------------------------------------------------
def test_minibatch_em_takes_one_step_per_batch_of_batch_size(monkeypatch):
    data = _truth().sample(10, length=20, seed=5)
    model = HMM(3, "gaussian", seed=0, batch_size=3, max_iter=2, tol=0.0).double()
    batch_sizes, m_steps = [], []
    e_step, m_step = model.e_step, model.m_step

    def counting_e_step(sequences):
        statistics, log_likelihoods = e_step(sequences)
        batch_sizes.append(int(log_likelihoods.shape[0]))
        return statistics, log_likelihoods

    monkeypatch.setattr(model, "e_step", counting_e_step)
    monkeypatch.setattr(model, "m_step", lambda statistics: m_steps.append(1) or m_step(statistics))
    _quiet_fit(model, data)
    assert model.n_iter_ == 2
    assert sorted(batch_sizes) == sorted([3, 3, 3, 1] * 2)  # ceil(10 / 3) minibatches per epoch
    assert len(m_steps) == 8


def test_minibatch_history_is_the_log_likelihood_of_the_returned_parameters():
    data = _truth().sample(12, length=30, seed=6)
    model = HMM(3, "gaussian", seed=0, batch_size=4, max_iter=6, n_init=2).double()
    _quiet_fit(model, data)
    last = model.history_[-1]["log_likelihood"]
    assert last == pytest.approx(model.score(data), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("batch_size", [None, 4])
def test_the_kept_restart_is_the_best_by_score(batch_size, monkeypatch):
    data = _truth().sample(12, length=30, seed=7)
    # Five states for three clusters and few iterations: restarts end at different places.
    model = HMM(5, "gaussian", seed=0, n_init=5, max_iter=3, batch_size=batch_size).double()
    scores = []
    name = "_fit_em" if batch_size is None else "_fit_online"
    run = getattr(model, name)

    def scored_run(*args, **kwargs):
        result = run(*args, **kwargs)
        scores.append(float(model.e_step(data)[1].sum()))  # log p(data) at its parameters
        return result

    monkeypatch.setattr(model, name, scored_run)
    _quiet_fit(model, data)
    assert len(scores) == 5
    # The test has teeth only when the restarts differ and the best is not the last one.
    assert max(scores) - min(scores) > 1.0
    assert scores.index(max(scores)) != len(scores) - 1
    assert model.score(data) == pytest.approx(max(scores), rel=1e-12)


def test_gradient_fits_of_custom_emissions_keep_fixed_parameters_too():
    data = _truth().sample(4, length=40, seed=8)[..., 0]
    template = torch.distributions.Normal(
        torch.tensor([-0.5, 0.5], dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    )
    model = HMM(2, template, max_iter=20, seed=0, update_params=("emissions",))
    start, transitions = model.start_probs.clone(), model.transition_probs.clone()
    _quiet_fit(model, data)
    assert torch.equal(model.start_probs, start)
    assert torch.equal(model.transition_probs, transitions)
    assert not torch.equal(model.emission_distribution().mean, template.mean)
