"""RBM training: CD/PCD/tempering improve held-out likelihood; divergence is caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from probgen.recipes._shared_data import SharedDataMissing

import probgen
from probgen.boltzmann import DBN, RBM
from probgen.core.errors import DataError, FitError


def _nltcs(split, rows=None):
    from probgen.recipes._shared_data import debd

    try:
        values = debd("nltcs", split)
    except SharedDataMissing as error:
        pytest.skip(str(error))
    return torch.tensor(values[:rows], dtype=torch.float32)


def _independent_log_likelihood(train, test):
    """Held-out log-likelihood of independent Bernoulli units fitted to `train` (smoothed)."""
    p = (train.sum(0) + 1) / (train.shape[0] + 2)
    return float((test * p.log() + (1 - test) * (1 - p).log()).sum(-1).mean())


@pytest.mark.parametrize("method", ["cd", "pcd"])
def test_cd_and_pcd_increase_held_out_log_likelihood_on_nltcs(method):
    train, valid = _nltcs("train", 4000), _nltcs("valid", 1000)
    rbm = RBM(16, 10, method=method, learning_rate=0.05, n_epochs=4, batch_size=16, seed=0,
              monitor=["log_likelihood"])
    rbm.fit(train, validation_data=valid)
    history = [record["validation_log_likelihood"] for record in rbm.history_]
    baseline = _independent_log_likelihood(train, valid)
    assert rbm.log_prob_kind is probgen.LogProbKind.EXACT
    assert history[-1] > history[0]
    # The initial model is the independent model; a trained RBM beats it clearly.
    assert float(rbm.log_prob(valid).mean()) > baseline + 0.5
    assert float(rbm.log_prob(valid).mean()) == pytest.approx(history[-1], abs=1e-4)


def test_parallel_tempering_momentum_decay_and_schedule_train_a_good_model():
    train, valid = _nltcs("train", 3000), _nltcs("valid", 1000)
    rbm = RBM(
        16,
        8,
        method="pcd",
        n_temperatures=4,
        momentum=0.5,
        weight_decay=1e-4,
        learning_rate_schedule="linear",
        batch_size=16,
        n_epochs=4,
        seed=1,
    )
    rbm.fit(train)
    rates = [record["learning_rate"] for record in rbm.history_]
    assert rates == pytest.approx([0.05, 0.0375, 0.025, 0.0125])
    # The default monitoring stays cheap; tempering adds its swap rate.
    figures = {"reconstruction_error", "swap_acceptance"}
    assert all(set(record) >= figures for record in rbm.history_)
    assert float(rbm.log_prob(valid).mean()) > _independent_log_likelihood(train, valid) + 0.3


def test_pcd_improves_pseudo_likelihood_on_digits_and_history_matches_the_method():
    from sklearn.datasets import load_digits

    data = torch.tensor(load_digits().data[:640] > 7, dtype=torch.float32)
    rbm = RBM(64, 32, n_epochs=4, batch_size=16, seed=0, monitor=["pseudo_log_likelihood"])
    rbm.fit(data)
    pseudo = [record["pseudo_log_likelihood"] for record in rbm.history_]
    assert pseudo[-1] > pseudo[0]
    assert float(rbm.pseudo_log_likelihood(data).mean()) == pytest.approx(pseudo[-1], abs=1e-4)


def test_gaussian_rbm_learns_variances_and_improves_likelihood():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[2.0, -1.0, 0.0], [-2.0, 1.0, 0.5]])
    data = centres[torch.randint(0, 2, (2000,), generator=generator)]
    data = data + 0.3 * torch.randn(data.shape, generator=generator)
    data = (data - data.mean(0)) / data.std(0)  # Gaussian units learn best on standardised data
    rbm = RBM(3, 4, "gaussian", method="cd", batch_size=16, n_epochs=6, seed=0)
    rbm.fit(data)
    assert rbm.log_prob_kind is probgen.LogProbKind.EXACT
    initial_variance = data.var(0, unbiased=False)
    assert not torch.allclose(rbm.log_variance.exp(), initial_variance)
    # A single Gaussian per dimension (the initial model) is beaten by the learned mixture.
    independent = torch.distributions.Normal(data.mean(0), initial_variance.sqrt())
    assert float(rbm.log_prob(data).mean()) > float(independent.log_prob(data).sum(-1).mean()) + 0.5


def test_categorical_rbm_trains_on_one_hot_data():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 3, (500, 1), generator=generator).repeat(1, 4)  # all equal
    noise = torch.randint(0, 3, codes.shape, generator=generator)
    codes = torch.where(torch.rand(codes.shape, generator=generator) < 0.1, noise, codes)
    data = torch.nn.functional.one_hot(codes, 3).float()
    rbm = RBM(
        4, 6, "categorical", n_categories=3, n_epochs=20, batch_size=16, learning_rate=0.1, seed=0
    )
    rbm.fit(data)
    support = rbm.enumerate_support()
    assert float(torch.logsumexp(rbm.log_prob(support), 0)) == pytest.approx(0.0, abs=1e-4)
    # the 3 "all equal" states should carry most of the mass (about 0.93**4 of it)
    equal = (support.argmax(-1) == support.argmax(-1)[:, :1]).all(-1)
    assert float(rbm.log_prob(support)[equal].exp().sum()) > 0.5


def test_diverging_fit_raises_and_keeps_last_good_parameters():
    train = _digits_like()
    rbm = RBM(train.shape[1], 5, n_epochs=2, seed=0).fit(train)
    good = [t.clone() for t in (rbm.weights, rbm.visible_bias, rbm.hidden_bias)]
    rbm.learning_rate = 1e9
    rbm.warm_start = True
    with pytest.raises(FitError, match="diverged"):
        rbm.fit(train)
    for kept, original in zip((rbm.weights, rbm.visible_bias, rbm.hidden_bias), good):
        assert torch.equal(kept, original)
    assert rbm.fitted_ and rbm.n_iter_ == 2
    assert torch.isfinite(rbm.log_prob(train)).all()


def test_fused_pcd1_update_matches_the_general_update_including_a_short_batch():
    from probgen.boltzmann.rbm_training import TrainingState

    data = _digits_like().double()
    models, states = [], []
    for fused in (True, False):
        rbm = RBM(data.shape[1], 5, batch_size=32, seed=0).double()
        rbm._initialise(data, torch.Generator().manual_seed(0))
        state = TrainingState(
            rbm.params(),
            rbm.base_rates(),
            rbm.training_settings(),
            32,
            torch.Generator().manual_seed(1),
        )
        assert state.fused  # PCD-1, Bernoulli units, plain SGD
        state.fused = fused
        models.append(rbm)
        states.append(state)
    # Full batches, a short one (it writes only the leading chains), then full ones again.
    for size in (32, 32, 7, 32, 32, 7, 32):
        batch = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(size))]
        for state in states:
            state.update(batch[:size], 0.1)
    fused_rbm, general_rbm = models
    assert torch.equal(states[0].chain_hidden, states[1].chain_hidden)
    for name in ("weights", "visible_bias", "hidden_bias"):
        torch.testing.assert_close(
            getattr(fused_rbm, name), getattr(general_rbm, name), rtol=0, atol=1e-12
        )
    assert not torch.equal(fused_rbm.weights, RBM(data.shape[1], 5).double().weights)


def test_bad_training_settings_are_rejected():
    with pytest.raises(DataError, match="learning_rate"):
        RBM(4, 2, learning_rate=-1.0)
    with pytest.raises(DataError, match="momentum"):
        RBM(4, 2, momentum=1.5)
    with pytest.raises(DataError, match="n_temperatures"):
        RBM(4, 2, method="cd", n_temperatures=3)
    with pytest.raises(DataError, match="monitor"):
        RBM(4, 2, monitor=["accuracy"])
    with pytest.raises(DataError, match="monitor"):
        RBM(4, 2, monitor=3)
    with pytest.raises(DataError, match="validation_data"):
        RBM(4, 2).fit(torch.zeros(5, 4), validation_data=torch.zeros(5, 3))


def test_monitor_none_records_nothing_like_an_empty_list():
    data = (torch.arange(40).reshape(10, 4) % 3 == 0).float()
    quiet = RBM(4, 2, n_epochs=2, seed=0, monitor=None).fit(data)
    empty = RBM(4, 2, n_epochs=2, seed=0, monitor=()).fit(data)
    auto = RBM(4, 2, n_epochs=2, seed=0).fit(data)
    assert "reconstruction_error" in auto.history_[-1]
    assert set(quiet.history_[-1]) == set(empty.history_[-1])
    assert "reconstruction_error" not in quiet.history_[-1]
    assert torch.equal(quiet.weights, empty.weights)


def test_dbn_pretrains_greedily_samples_and_bounds_log_likelihood():
    train, valid = _nltcs("train", 3000), _nltcs("valid", 500)
    dbn = DBN([16, 12, 6], n_epochs=3, batch_size=16, seed=0).fit(train)
    assert [layer.fitted_ for layer in dbn.layers] == [True, True]
    assert [record["layer"] for record in dbn.history_] == [0, 0, 0, 1, 1, 1]
    assert [record["epoch"] for record in dbn.history_] == [1, 2, 3, 1, 2, 3]
    draws = dbn.sample(50, seed=0)
    assert draws.shape == (50, 16) and set(draws.unique().tolist()) <= {0.0, 1.0}
    bound = dbn.log_prob(valid)
    assert dbn.log_prob_kind is probgen.LogProbKind.LOWER_BOUND
    assert torch.equal(bound, dbn.log_prob(valid))  # seeded estimate
    # a finite bound, better than the uniform model over 16 bits
    assert float(bound.mean()) > -16 * np.log(2)
    single = DBN([16, 5], n_epochs=2, seed=0).fit(train)
    assert single.log_prob_kind is probgen.LogProbKind.EXACT
    assert torch.allclose(single.log_prob(valid), single.layers[0].log_prob(valid))


def test_dbn_kind_is_an_estimate_when_the_top_log_z_comes_from_ais(tmp_path):
    data = _digits_like()
    options = dict(n_epochs=2, batch_size=16, seed=0, ais_runs=50, ais_betas=500)
    exact_top = DBN([12, 8, 4], **options).fit(data)
    ais_top = DBN([12, 8, 4], exact_max_units=2, **options).fit(data)
    assert exact_top.layers[-1].log_prob_kind is probgen.LogProbKind.EXACT
    assert exact_top.log_prob_kind is probgen.LogProbKind.LOWER_BOUND
    assert ais_top.layers[-1].log_prob_kind is probgen.LogProbKind.ESTIMATE
    assert ais_top.log_prob_kind is probgen.LogProbKind.ESTIMATE
    # The same training; only the top log Z differs (AIS's error on 4 hidden units is small).
    assert torch.equal(exact_top.layers[0].weights, ais_top.layers[0].weights)
    bound, estimate = exact_top.log_prob(data[:20]), ais_top.log_prob(data[:20])
    assert not torch.equal(bound, estimate)
    torch.testing.assert_close(estimate, bound, rtol=0, atol=0.05)
    ais_top.save(tmp_path / "dbn")
    assert probgen.load(tmp_path / "dbn").log_prob_kind is probgen.LogProbKind.ESTIMATE
    # One layer: the RBM's own kind.
    single = DBN([12, 8], exact_max_units=2, **options)
    assert single.log_prob_kind is probgen.LogProbKind.ESTIMATE


def _digits_like():
    generator = torch.Generator().manual_seed(3)
    return (torch.rand(256, 12, generator=generator) > 0.6).float()


def _small_binary(rows=60, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, 6, generator=generator) > 0.5).float()


def test_history_is_one_dict_per_epoch_and_old_shapes_convert_on_load(tmp_path):
    data = _small_binary()
    rbm = RBM(6, 3, n_epochs=2, seed=0, monitor=["reconstruction_error"]).fit(
        data, validation_data=data[:10]
    )
    assert [record["epoch"] for record in rbm.history_] == [1, 2]
    assert set(rbm.history_[0]) == {
        "epoch",
        "learning_rate",
        "seconds",
        "reconstruction_error",
        "validation_reconstruction_error",
    }
    rbm.save(tmp_path / "rbm")
    assert probgen.load(tmp_path / "rbm").history_ == rbm.history_
    # A file written with the old dict of lists loads as the list of records.
    state = rbm.get_fitted_state()
    state["history_"] = {k: [r[k] for r in rbm.history_] for k in rbm.history_[0]}
    shell = RBM(6, 3)
    shell.set_fitted_state(state)
    assert shell.history_ == rbm.history_


def test_fit_settings_are_deprecated_aliases_that_still_apply():
    data = _small_binary()
    reference = RBM(6, 3, n_epochs=1, seed=5).fit(data)
    rbm = RBM(6, 3, n_epochs=3, seed=0)
    with pytest.warns(DeprecationWarning, match=r"RBM\.fit\(n_epochs=\.\.\.\).*RBM constructor"):
        with pytest.warns(DeprecationWarning, match=r"RBM\.fit\(seed=\.\.\.\)"):
            with pytest.warns(DeprecationWarning, match=r"RBM\.fit\(progress=\.\.\.\)"):
                rbm.fit(data, n_epochs=1, seed=5, progress=False)
    assert rbm.n_iter_ == 1 and len(rbm.history_) == 1
    assert torch.equal(rbm.weights, reference.weights)
    assert rbm.n_epochs == 3  # the override is for that call only

    dbn = DBN([6, 4, 2], n_epochs=3, seed=0)
    with pytest.warns(DeprecationWarning, match=r"DBN\.fit\(n_epochs=\.\.\.\).*DBN constructor"):
        dbn.fit(data, n_epochs=1)
    assert [record["layer"] for record in dbn.history_] == [0, 1]

    from probgen.boltzmann import BoltzmannMachine

    machine = BoltzmannMachine(4, n_epochs=5, seed=0)
    with pytest.warns(DeprecationWarning, match=r"BoltzmannMachine\.fit\(n_epochs"):
        machine.fit(data[:, :4], n_epochs=2)
    assert machine.n_iter_ == 2 and [r["epoch"] for r in machine.history_] == [1, 2]
    assert set(machine.history_[0]) == {"epoch", "learning_rate", "seconds", "log_likelihood"}
