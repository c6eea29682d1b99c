"""Input-output HMMs (`HMM(..., transition_inputs=k)`): oracles, recovery, round trips, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import probgen
from probgen.core.errors import DataError
from probgen.core.testing import check_density
from probgen.hmm import HMM

DOUBLE = torch.float64
START = [0.5, 0.3, 0.2]
TRANSITIONS = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]]
EMISSIONS = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]


def _categorical(n_states=3, n_inputs=2, start_inputs=True, seed=0, scale=1.5):
    generator = torch.Generator().manual_seed(seed)
    model = HMM(
        n_states,
        emission="categorical",
        n_symbols=3,
        transition_inputs=n_inputs,
        start_inputs=start_inputs,
    ).to(DOUBLE)
    parameters = dict(
        start_probs=torch.tensor(START[:n_states], dtype=DOUBLE).div(sum(START[:n_states])),
        transition_probs=torch.tensor(TRANSITIONS, dtype=DOUBLE)[:n_states, :n_states],
        emission_probs=EMISSIONS[:n_states],
        transition_input_weights=scale
        * torch.randn(n_states, n_inputs, n_states, dtype=DOUBLE, generator=generator),
    )
    parameters["transition_probs"] /= parameters["transition_probs"].sum(-1, keepdim=True)
    if start_inputs:
        parameters["start_input_weights"] = scale * torch.randn(
            n_inputs, n_states, dtype=DOUBLE, generator=generator
        )
    return model.set_parameters(**parameters)


def _brute_force(model, symbols, inputs):
    """log p(x | u), p(z_t | x, u) and the best path by enumerating every state path."""
    n_states = model.n_states
    length = len(symbols)
    log_start = model.start_probs.log()
    if model.start_inputs:
        log_start = torch.log_softmax(log_start + inputs[0] @ model.start_input_weights, -1)
    weights = model.transition_input_weights
    log_emission = model.emission_probs.log()
    joint = {}
    for path in itertools.product(range(n_states), repeat=length):
        value = log_start[path[0]] + log_emission[path[0], symbols[0]]
        for t in range(1, length):
            logits = model.transition_probs[path[t - 1]].log() + inputs[t] @ weights[path[t - 1]]
            value = value + torch.log_softmax(logits, -1)[path[t]]
            value = value + log_emission[path[t], symbols[t]]
        joint[path] = value
    values = torch.stack(list(joint.values()))
    total = torch.logsumexp(values, 0)
    marginals = torch.zeros(length, n_states, dtype=DOUBLE)
    for path, value in joint.items():
        for t, state in enumerate(path):
            marginals[t, state] += (value - total).exp()
    best = max(joint, key=lambda path: float(joint[path]))
    return total, marginals, best, joint[best]


@pytest.mark.parametrize("n_states", [2, 3])
def test_log_prob_posteriors_and_viterbi_match_brute_force(n_states):
    model = _categorical(n_states=n_states)
    generator = torch.Generator().manual_seed(1)
    sequences = [torch.tensor([0, 2, 1, 1]), torch.tensor([2, 2, 0])]  # ragged
    inputs = [torch.randn(len(s), 2, dtype=DOUBLE, generator=generator) for s in sequences]
    log_probs = model.log_prob(sequences, inputs=inputs)
    padded = torch.zeros(2, 4, 2, dtype=DOUBLE)  # the same inputs, padded as the sequences are
    padded[0], padded[1, :3] = inputs[0], inputs[1]
    assert torch.equal(model.log_prob(sequences, inputs=padded), log_probs)
    posteriors = model.posterior(sequences, inputs=inputs)
    paths, path_log_probs = model.viterbi(sequences, inputs=inputs)
    for index, (symbols, rows) in enumerate(zip(sequences, inputs)):
        total, marginals, best, best_value = _brute_force(model, symbols.tolist(), rows)
        length = len(symbols)
        assert torch.allclose(log_probs[index], total, atol=1e-12)
        assert torch.allclose(posteriors[index, :length], marginals, atol=1e-12)
        assert posteriors[index, length:].abs().sum() == 0
        assert paths[index, :length].tolist() == list(best)
        assert (paths[index, length:] == -1).all()
        assert torch.allclose(path_log_probs[index], best_value, atol=1e-12)


def test_zero_weights_give_the_plain_hmm():
    plain = HMM(3, emission="categorical", n_symbols=3).to(DOUBLE)
    plain.set_parameters(start_probs=START, transition_probs=TRANSITIONS, emission_probs=EMISSIONS)
    driven = _categorical(start_inputs=True, scale=0.0)
    generator = torch.Generator().manual_seed(2)
    sequences = [torch.randint(0, 3, (length,), generator=generator) for length in (7, 3, 5)]
    inputs = [torch.randn(len(s), 2, dtype=DOUBLE, generator=generator) for s in sequences]
    assert torch.allclose(
        driven.log_prob(sequences, inputs=inputs), plain.log_prob(sequences), atol=1e-12, rtol=0
    )
    assert torch.allclose(
        driven.posterior(sequences, inputs=inputs), plain.posterior(sequences), atol=1e-12
    )
    assert torch.equal(driven.predict(sequences, inputs=inputs), plain.predict(sequences))


def test_every_input_and_the_first_step_change_log_prob():
    """Perturbing one step's input moves log p(x | u): no input is ignored."""
    symbols = torch.tensor([[0, 2, 1, 1]])
    inputs = torch.randn(1, 4, 2, dtype=DOUBLE, generator=torch.Generator().manual_seed(3))
    for start_inputs in (True, False):
        model = _categorical(start_inputs=start_inputs)
        base = model.log_prob(symbols, inputs=inputs)
        for t, feature in itertools.product(range(4), range(2)):
            moved = inputs.clone()
            moved[0, t, feature] += 1.0
            changed = not torch.allclose(model.log_prob(symbols, inputs=moved), base)
            # Without start_inputs the first step's input enters nowhere.
            assert changed == (t > 0 or start_inputs), (start_inputs, t, feature)


def _simulated(n_sequences=60, length=80, seed=0):
    truth = HMM(2, emission="gaussian", n_features=1, transition_inputs=2).to(DOUBLE)
    weights = torch.tensor([[[-2.0, 2.0], [1.0, -1.0]], [[1.5, -1.5], [0.0, 0.0]]], dtype=DOUBLE)
    truth.set_parameters(
        transition_probs=[[0.8, 0.2], [0.2, 0.8]],
        means=[[-1.5], [1.5]],
        covariances=[[1.0], [1.0]],
        transition_input_weights=weights,
    )
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n_sequences, length, 2, dtype=DOUBLE, generator=generator)
    observations = truth.sample(n_sequences, length=length, inputs=inputs, seed=seed + 1)
    return truth, observations, inputs


def test_fit_recovers_generating_weights_and_beats_the_plain_hmm():
    truth, observations, inputs = _simulated()
    model = HMM(2, emission="gaussian", transition_inputs=2, seed=0, max_iter=60).to(DOUBLE)
    model.fit(observations, inputs=inputs)
    order = model.means.ravel().argsort()  # align fitted states with the truth's (-1.5, 1.5)
    fitted = model.transition_input_weights[order][:, :, order]
    expected = truth.transition_input_weights
    assert (fitted - expected).abs().max() < 0.5
    correlation = torch.corrcoef(torch.stack([fitted.ravel(), expected.ravel()]))[0, 1]
    assert correlation > 0.95
    history = [record["log_likelihood"] for record in model.history_]
    assert all(b >= a - 1e-6 for a, b in zip(history, history[1:]))  # generalised EM
    _, held_out, held_inputs = _simulated(n_sequences=30, seed=10)
    plain = HMM(2, emission="gaussian", seed=0, max_iter=60).to(DOUBLE).fit(observations)
    driven_score = model.score(held_out, inputs=held_inputs)
    assert driven_score > plain.score(held_out) + 100
    assert abs(driven_score - truth.score(held_out, inputs=held_inputs)) < 30
    assert model.n_parameters() == plain.n_parameters() + 2 * 2 * 1
    n_steps = held_out.shape[0] * held_out.shape[1]
    expected_bic = -2 * driven_score + model.n_parameters() * math.log(n_steps)
    assert model.bic(held_out, inputs=held_inputs) == pytest.approx(expected_bic)


def test_fit_recovers_start_weights():
    truth = HMM(2, emission="categorical", n_symbols=2, transition_inputs=1, start_inputs=True)
    truth = truth.to(DOUBLE).set_parameters(
        transition_probs=[[0.9, 0.1], [0.1, 0.9]],
        emission_probs=[[0.95, 0.05], [0.05, 0.95]],
        start_input_weights=[[-1.5, 1.5]],
    )
    inputs = torch.randn(400, 6, 1, dtype=DOUBLE, generator=torch.Generator().manual_seed(4))
    symbols = truth.sample(400, length=6, inputs=inputs, seed=5)
    model = HMM(2, n_symbols=2, transition_inputs=1, start_inputs=True, seed=0).to(DOUBLE)
    model.fit((symbols, inputs))
    order = model.emission_probs[:, 1].argsort()
    assert torch.allclose(model.start_input_weights[:, order], truth.start_input_weights, atol=0.5)
    without = (
        HMM(2, n_symbols=2, transition_inputs=1, seed=0).to(DOUBLE).fit(symbols, inputs=inputs)
    )
    assert model.score(symbols, inputs=inputs) > without.score(symbols, inputs=inputs) + 20


def test_update_params_without_transitions_keeps_the_weights():
    truth = _categorical(start_inputs=False)
    inputs = torch.randn(5, 6, 2, dtype=DOUBLE, generator=torch.Generator().manual_seed(6))
    symbols = truth.sample(5, length=6, inputs=inputs, seed=0)
    for update, kept in ((("emissions",), True), (("transitions",), False)):
        model = HMM(
            3,
            n_symbols=3,
            transition_inputs=2,
            init_params=("emissions",),
            update_params=update,
            max_iter=3,
        ).to(DOUBLE)
        model.set_parameters(
            transition_probs=truth.transition_probs,
            emission_probs=truth.emission_probs,
            transition_input_weights=truth.transition_input_weights,
        )
        with pytest.warns(Warning):  # stops at max_iter
            model.fit(symbols, inputs=inputs)
        change = (model.transition_input_weights - truth.transition_input_weights).abs().max()
        assert (change < 1e-12) == kept, (update, change)


def test_sample_follows_the_inputs():
    model = HMM(2, emission="categorical", n_symbols=2, transition_inputs=1).to(DOUBLE)
    model.set_parameters(
        emission_probs=[[1.0, 0.0], [0.0, 1.0]],
        transition_input_weights=[[[-30.0, 30.0]], [[-30.0, 30.0]]],
    )
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0], dtype=DOUBLE)
    inputs = signs.reshape(1, 6, 1).expand(50, 6, 1)
    observations, states = model.sample(50, length=6, inputs=inputs, seed=0, return_states=True)
    assert (states[:, 1:] == (signs[1:] > 0).long()).all()
    assert torch.equal(observations, states)


@pytest.mark.filterwarnings("ignore:input-output HMM fit stopped")
def test_save_load_device_and_contract(tmp_path):
    model = _categorical()
    inputs = torch.randn(6, 5, 2, dtype=DOUBLE, generator=torch.Generator().manual_seed(7))
    symbols = model.sample(6, length=5, inputs=inputs, seed=1)
    path = tmp_path / "io.probgen"
    model.save(path)
    restored = probgen.load(path)
    assert restored.transition_inputs == 2 and restored.start_inputs
    assert torch.equal(
        restored.log_prob(symbols, inputs=inputs), model.log_prob(symbols, inputs=inputs)
    )
    assert torch.equal(
        restored.sample(6, length=5, inputs=inputs, seed=3),
        model.sample(6, length=5, inputs=inputs, seed=3),
    )
    assert model.to(torch.float32).transition_input_weights.dtype == torch.float32
    fresh = HMM(3, n_symbols=3, transition_inputs=2, seed=0, max_iter=5)
    report = check_density(
        fresh, (symbols, inputs), check_sampling=False, check_normalization=False
    )
    assert report["save_round_trip"]


def test_bad_inputs_name_the_argument():
    model = _categorical()
    symbols = torch.tensor([[0, 1, 2], [1, 1, 0]])
    good = torch.zeros(2, 3, 2, dtype=DOUBLE)
    cases = [
        (lambda: model.log_prob(symbols), "inputs is required"),
        (lambda: model.fit(symbols), "inputs is required"),
        (lambda: model.sample(2, length=3), "inputs is required"),
        (lambda: model.log_prob(symbols, inputs=torch.zeros(2, 3, 1)), "inputs"),
        (lambda: model.log_prob(symbols, inputs=torch.zeros(3, 3, 2)), "inputs has 3 sequences"),
        (lambda: model.log_prob(symbols, inputs=torch.zeros(2, 4, 2)), "inputs has 4 steps"),
        (lambda: model.log_prob(symbols, inputs=torch.zeros(2, 3)), "inputs has shape"),
        (lambda: model.log_prob([[0, 1], [2]], inputs=[good[0], good[1]]), "inputs[0] has 3"),
        (lambda: model.log_prob(symbols, inputs=good.clone().fill_(float("nan"))), "NaN"),
        (lambda: model.sample(2, length=3, inputs=good[:1]), "inputs has shape"),
        (lambda: model.decode(symbols), "inputs"),
        (lambda: model.posterior(symbols, inputs=good, states=[[0, -1, -1]] * 2), "states"),
        (lambda: HMM(3, transition_inputs=2, batch_size=1).fit(symbols, inputs=good), "batch"),
        (lambda: model.e_step(symbols), "inputs"),
        (lambda: model.to_hmmlearn(), "inputs"),
        (lambda: model.as_pyro(), "inputs"),
        (lambda: model.fit(symbols, inputs=good, states=[[0, -1, -1], [-1, -1, -1]]), "states"),
        (lambda: HMM(2, start_inputs=True), "start_inputs"),
        (lambda: HMM(2, transition_inputs=-1), "transition_inputs"),
        (lambda: HMM(2).set_parameters(transition_input_weights=[[[0.0, 0.0]]]), "transition_in"),
        (lambda: model.set_parameters(transition_input_weights=torch.zeros(3, 1, 3)), "shape"),
    ]
    for call, message in cases:
        with pytest.raises(DataError, match=message.replace("[", r"\[")):
            call()
    plain = HMM(2, n_symbols=3).set_parameters(
        transition_probs=[[0.5, 0.5], [0.5, 0.5]], emission_probs=EMISSIONS[:2]
    )
    with pytest.raises(DataError, match="transition_inputs=0"):
        plain.log_prob(symbols, inputs=good)
