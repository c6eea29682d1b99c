"""RBM options that must change what training does: each test fails if its option is ignored.

Momentum and weight decay are checked against a hand computation of the update, parallel
tempering against the Metropolis swap probability, and the default monitoring by counting
the work it does per epoch (a structural check, not a timing).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from probgen.boltzmann import RBM
from probgen.boltzmann import rbm_fit as rbm_fit_module
from probgen.boltzmann.rbm_fit import AUTO_MONITOR_EVERY_ROWS
from probgen.boltzmann.rbm_functions import BaseRates, RBMParams
from probgen.boltzmann.rbm_training import TrainingState, swap_neighbours


def _binary(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, columns, generator=generator) > 0.6).double()


def _state(rbm: RBM, data: torch.Tensor, batch: int, seed: int = 1) -> TrainingState:
    rbm._initialise(data, torch.Generator().manual_seed(0))
    # Larger weights than the default initialisation, so every gradient term matters.
    rbm.weights.copy_(torch.randn(rbm.weights.shape, generator=torch.Generator().manual_seed(2)))
    return TrainingState(
        rbm.params(), rbm.base_rates(), rbm.training_settings(), batch,
        torch.Generator().manual_seed(seed),
    )


def _tensors(rbm: RBM) -> dict[str, torch.Tensor]:
    return {name: getattr(rbm, name).detach().clone() for name in
            ("weights", "visible_bias", "hidden_bias")}


@pytest.mark.parametrize("method", ["cd", "pcd"])
def test_weight_decay_subtracts_learning_rate_times_decay_times_weights(method):
    data = _binary(32, 6)
    rate, decay = 0.1, 0.05
    plain = RBM(6, 4, method=method, seed=0).double()
    decayed = RBM(6, 4, method=method, weight_decay=decay, seed=0).double()
    states = [_state(plain, data, 32), _state(decayed, data, 32)]
    start = _tensors(decayed)
    for state in states:
        state.update(data, rate)  # the same draws: same seed, same parameters before the step
    after_plain, after_decay = _tensors(plain), _tensors(decayed)
    expected = after_plain["weights"] - rate * decay * start["weights"]
    torch.testing.assert_close(after_decay["weights"], expected, rtol=0, atol=1e-12)
    # Decay is an L2 penalty on the weights only.
    for name in ("visible_bias", "hidden_bias"):
        torch.testing.assert_close(after_decay[name], after_plain[name], rtol=0, atol=1e-12)
    assert (after_decay["weights"] - after_plain["weights"]).abs().max() > 1e-3


@pytest.mark.parametrize("method", ["cd", "pcd"])
def test_momentum_adds_momentum_times_the_previous_step(method):
    data = _binary(32, 6, seed=1)
    rate, momentum = 0.1, 0.7
    plain = RBM(6, 4, method=method, seed=0).double()
    heavy = RBM(6, 4, method=method, momentum=momentum, seed=0).double()
    states = [_state(plain, data, 16), _state(heavy, data, 16)]
    start = _tensors(plain)
    for state in states:
        state.update(data[:16], rate)
    # The first step has no velocity yet: both models agree.
    first = _tensors(plain)
    for name, value in _tensors(heavy).items():
        torch.testing.assert_close(value, first[name], rtol=0, atol=1e-12)
    for state in states:
        state.update(data[16:], rate)
    # Second step: plain SGD moves by g2; momentum by g2 + momentum * (first step).
    for name, value in _tensors(heavy).items():
        expected = _tensors(plain)[name] + momentum * (first[name] - start[name])
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-12)
    assert (heavy.weights - plain.weights).abs().max() > 1e-3


def test_momentum_and_weight_decay_reach_the_updates_through_fit():
    """The constructor options travel to the training state (not only `TrainingState`)."""
    data = _binary(64, 6, seed=2).float()
    common = dict(n_epochs=3, batch_size=16, method="cd", learning_rate=0.1, seed=0)
    plain = RBM(6, 4, **common).fit(data)
    for option in ({"momentum": 0.5}, {"weight_decay": 0.5}):
        changed = RBM(6, 4, **common, **option).fit(data)
        assert changed.training_settings() != plain.training_settings()
        assert (changed.weights - plain.weights).abs().max() > 1e-4, option
    # Strong decay shrinks the weights.
    decayed = RBM(6, 4, **{**common, "n_epochs": 20}, weight_decay=2.0).fit(data)
    free = RBM(6, 4, **{**common, "n_epochs": 20}).fit(data)
    assert decayed.weights.norm() < 0.8 * free.weights.norm()


# ---- parallel tempering -----------------------------------------------------------------


def _tiny_params() -> tuple[RBMParams, BaseRates]:
    generator = torch.Generator().manual_seed(5)
    weights = torch.randn(3, 2, generator=generator, dtype=torch.float64) * 1.5
    visible_bias = torch.tensor([0.5, -1.0, 0.3], dtype=torch.float64)
    hidden_bias = torch.tensor([0.2, -0.4], dtype=torch.float64)
    base = BaseRates(torch.tensor([-0.7, 0.4, 0.1], dtype=torch.float64), None)
    return RBMParams("bernoulli", 1, weights, visible_bias, hidden_bias, None), base


def _brute_force_tempered_log(params: RBMParams, base: BaseRates, v, beta: float) -> float:
    """log sum_h exp(-(1 - beta) E_base(v) - beta E(v, h)), summing the hidden states."""
    v = torch.as_tensor(v, dtype=torch.float64)
    terms = []
    for bits in itertools.product((0.0, 1.0), repeat=params.weights.shape[1]):
        h = torch.tensor(bits, dtype=torch.float64)
        energy = -(v @ params.visible_bias) - (h @ params.hidden_bias) - v @ params.weights @ h
        terms.append(float((1 - beta) * (v @ base.visible_bias) - beta * energy))
    return math.log(sum(math.exp(t) for t in terms))


def test_tempering_swaps_follow_the_metropolis_probability():
    params, base = _tiny_params()
    betas = [1.0, 0.0]
    rows = 20000
    v_a, v_b = [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]
    log_ratio = (
        _brute_force_tempered_log(params, base, v_b, betas[0])
        + _brute_force_tempered_log(params, base, v_a, betas[1])
        - _brute_force_tempered_log(params, base, v_a, betas[0])
        - _brute_force_tempered_log(params, base, v_b, betas[1])
    )
    for first, second, sign in ((v_a, v_b, 1.0), (v_b, v_a, -1.0)):
        expected = min(1.0, math.exp(sign * log_ratio))
        chains = torch.stack([
            torch.tensor([first], dtype=torch.float64).expand(rows, 3),
            torch.tensor([second], dtype=torch.float64).expand(rows, 3),
        ]).clone()
        swapped, accepted, attempted = swap_neighbours(
            params, base, chains, betas, torch.Generator().manual_seed(0)
        )
        assert attempted == rows
        moved = (swapped[0] == torch.tensor(second, dtype=torch.float64)).all(-1)
        # A swap exchanges the states: the other chain holds the first state.
        assert torch.equal(moved, (swapped[1] == torch.tensor(first, dtype=torch.float64)).all(-1))
        assert int(moved.sum()) == int(accepted)
        rate = float(moved.double().mean())
        stderr = math.sqrt(max(expected * (1 - expected), 1e-12) / rows)
        assert abs(rate - expected) < 5 * stderr + 1e-12, (rate, expected)
    # The chosen states make the test sensitive: one direction is accepted only sometimes.
    assert 0.2 < math.exp(-abs(log_ratio)) < 0.8


def test_tempering_swaps_even_then_odd_neighbour_pairs():
    params, base = _tiny_params()
    betas = [1.0, 2 / 3, 1 / 3, 0.0]
    chains = (torch.rand(4, 500, 3, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    _, accepted, attempted = swap_neighbours(
        params, base, chains, betas, torch.Generator().manual_seed(0)
    )
    assert attempted == 3 * 500  # pairs (0, 1) and (2, 3), then (1, 2)
    assert 0 < int(accepted) < attempted


def test_parallel_tempering_swaps_during_fit_and_reports_the_rate():
    data = _binary(96, 6, seed=3).float()
    rbm = RBM(6, 4, n_temperatures=4, n_epochs=3, batch_size=16, learning_rate=0.1, seed=0)
    rbm.fit(data)
    rates = [record["swap_acceptance"] for record in rbm.history_]
    # Neighbouring temperatures a third apart on a small model: most swaps are accepted,
    # but not all (an always-accept rule would give exactly 1).
    assert all(0.2 < rate < 1.0 for rate in rates), rates
    assert "swap_acceptance" not in RBM(6, 4, n_epochs=1, seed=0).fit(data).history_[0]


# ---- default monitoring -------------------------------------------------------------------


def _count_monitoring(monkeypatch) -> dict[str, list[int]]:
    calls: dict[str, list[int]] = {"reconstruction": [], "pseudo": [], "log_z": []}
    original = RBM._reconstruct_flat

    def reconstruct(self, x):
        calls["reconstruction"].append(x.shape[0])
        return original(self, x)

    def pseudo(params, x):
        calls["pseudo"].append(x.shape[0])
        return torch.zeros(x.shape[0])

    def log_z(params):
        calls["log_z"].append(1)
        return torch.zeros(())

    monkeypatch.setattr(RBM, "_reconstruct_flat", reconstruct)
    monkeypatch.setattr(rbm_fit_module, "pseudo_log_likelihood", pseudo)
    monkeypatch.setattr(rbm_fit_module, "exact_log_partition", log_z)
    return calls


@pytest.mark.parametrize(("n_visible", "n_hidden", "rows"), [(64, 256, 1797), (12, 6, 400)])
def test_default_monitoring_costs_a_small_share_of_an_epoch(monkeypatch, n_visible, n_hidden,
                                                            rows):
    """The issue's workload (RBM(64, 256) on 1797 digits rows) and a small model.

    One training row of PCD-1 costs about four products with the weights (positive hidden,
    negative visible, negative hidden, gradient); a monitored reconstruction two. Monitoring
    at most a tenth of the rows, with no pseudo-likelihood (~70x a training row with 64
    visible units) and no exact log Z, keeps it near 5% of an epoch (about 3% measured).
    """
    calls = _count_monitoring(monkeypatch)
    data = _binary(rows, n_visible, seed=4).float()
    epochs = 2
    rbm = RBM(n_visible, n_hidden, method="pcd", cd_steps=1, batch_size=64,
              learning_rate=0.05, n_epochs=epochs)
    assert rbm.monitor == "auto"  # the default
    rbm.fit(data)
    assert calls["pseudo"] == [] and calls["log_z"] == []
    assert len(calls["reconstruction"]) == epochs
    per_epoch = max(calls["reconstruction"])
    assert per_epoch <= math.ceil(rows / AUTO_MONITOR_EVERY_ROWS)
    # Products with the weights: monitoring against training, about 5%.
    assert per_epoch * 2 / (rows * 4) <= 0.06
    assert set(rbm.history_[0]) == {"epoch", "learning_rate", "seconds", "reconstruction_error"}
    # Validation data (the user's request) adds at most as many rows again.
    calls["reconstruction"].clear()
    rbm.fit(data, validation_data=data[:300])
    assert len(calls["reconstruction"]) == 2 * epochs
    assert max(calls["reconstruction"]) <= per_epoch
    assert calls["pseudo"] == [] and calls["log_z"] == []
    assert set(rbm.history_[0]) == {
        "epoch", "learning_rate", "seconds", "reconstruction_error",
        "validation_reconstruction_error",
    }


def test_requested_figures_use_monitor_size_rows(monkeypatch):
    calls = _count_monitoring(monkeypatch)
    data = _binary(400, 8, seed=5).float()
    RBM(8, 4, n_epochs=1, monitor=["reconstruction_error", "pseudo_log_likelihood",
                                   "log_likelihood"], monitor_size=150, seed=0).fit(data)
    assert calls["reconstruction"] == [150] and calls["pseudo"] == [150]
    assert calls["log_z"] == [1]


def test_default_monitoring_rows_are_spread_over_the_data_and_fixed():
    data = _binary(300, 6, seed=6).float()
    rbm = RBM(6, 3, n_epochs=1, seed=0)
    rows, validation = rbm._monitor_subsets(data, data[:100], torch.Generator().manual_seed(0))
    assert rows.shape[0] == 30 and validation.shape[0] == 30
    index = torch.linspace(0, 299, 30).round().long()
    assert torch.equal(rows, data[index])
    # Seeded fits do not depend on what is monitored.
    quiet = RBM(6, 3, n_epochs=2, monitor=(), seed=0).fit(data)
    default = RBM(6, 3, n_epochs=2, seed=0).fit(data)
    assert torch.equal(quiet.weights, default.weights)
