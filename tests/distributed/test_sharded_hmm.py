"""Sharded HMM EM: 2 processes (gloo), each holding whole sequences of a ragged set, give the
single-process fit on all sequences, iteration by iteration."""

from __future__ import annotations

import pytest
import sharded_workers as workers
import torch

from probgen import distributed
from probgen.errors import DataError
from probgen.hmm import HMM

pytestmark = pytest.mark.filterwarnings("ignore::probgen.errors.ConvergenceWarning")


def _truth(emission: str, **settings: object) -> HMM:
    model = HMM(3, emission, **settings).double()
    transitions = [[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]]
    model.set_parameters(start_probs=[0.5, 0.3, 0.2], transition_probs=transitions)
    return model


def _ragged(observations: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    return [observations[i, :length] for i, length in enumerate(lengths)]


def _lengths(n: int, low: int, high: int, seed: int) -> list[int]:
    return torch.randint(low, high, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _gaussian_sequences(n: int, low: int, high: int, seed: int) -> list[torch.Tensor]:
    truth = _truth("gaussian", n_features=2, covariance="full")
    means = [[-2.0, 0.0], [0.0, 2.0], [2.0, -1.0]]
    covariances = torch.eye(2, dtype=torch.float64).expand(3, 2, 2) * 0.5
    truth.set_parameters(means=means, covariances=covariances)
    observations = truth.sample(n, length=high, seed=seed)
    return _ragged(observations, _lengths(n, low, high, seed))


def _categorical_sequences(n: int, seed: int) -> list[torch.Tensor]:
    truth = _truth("categorical", n_symbols=4)
    probs = [[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4]]
    truth.set_parameters(emission_probs=probs)
    sequences = _ragged(truth.sample(n, length=40, seed=seed), _lengths(n, 5, 40, seed))
    sequences[1] = sequences[1].clone()
    sequences[1][2] = -1  # a missing symbol
    return sequences


def _counts(emission: str, n: int, seed: int, **settings: object) -> list[torch.Tensor]:
    truth = _truth(emission, n_features=3, **settings)
    if emission == "poisson":
        truth.set_parameters(rates=[[1.0, 2.0, 0.5], [5.0, 1.0, 2.0], [9.0, 6.0, 4.0]])
    else:
        truth.set_parameters(emission_probs=[[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.3, 0.1, 0.6]])
    return _ragged(truth.sample(n, length=25, seed=seed).double(), _lengths(n, 4, 25, seed))


def _labelled(n: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    truth = _truth("categorical", n_symbols=3)
    truth.set_parameters(emission_probs=[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    observations, states = truth.sample(n, length=20, seed=seed, return_states=True)
    lengths = _lengths(n, 3, 20, seed)
    return _ragged(observations, lengths), _ragged(states, lengths)


def _jobs() -> list[tuple[list[torch.Tensor], dict[str, object], list[torch.Tensor] | None]]:
    gaussian = _gaussian_sequences(31, 3, 30, 0)
    gaussian[4] = gaussian[4].clone()
    gaussian[4][1, 0] = float("nan")  # a missing feature: the start uses complete rows only
    categorical = _categorical_sequences(27, 1)
    # Labels on the first steps of a few sequences only: semi-supervised EM.
    partial = [torch.full((len(s),), -1, dtype=torch.long) for s in categorical]
    for labels in partial[:5]:
        labels[:3] = torch.tensor([0, 0, 1])
    # The symbol 3 only in the last sequence (rank 1's): the ranks must agree on n_symbols.
    rare = [s.clamp_max(2) for s in categorical[:-1]] + [categorical[-1].clone()]
    rare[-1][0] = 3
    # Over 20,000 observed steps: k-means clusters a random subset, drawn alike on each rank.
    large = _gaussian_sequences(400, 30, 71, 2)
    poisson = _counts("poisson", 21, 5)
    poisson[3] = poisson[3].clone()
    poisson[3][0, 1] = float("nan")  # a missing count: filled by its feature's mean to start
    multinomial = _counts("multinomial", 19, 6, n_trials=4)
    labelled, states = _labelled(17, 7)
    return [
        (gaussian, {"n_states": 3, "emission": "gaussian", "covariance": "full", "max_iter": 8,
                    "tol": 0.0, "seed": 0}, None),
        (gaussian, {"n_states": 2, "emission": "gaussian", "covariance": "diag", "n_init": 2,
                    "max_iter": 5, "tol": 0.0, "seed": 1}, None),
        (rare, {"n_states": 3, "emission": "categorical", "max_iter": 10, "tol": 0.0,
                       "seed": 2}, None),
        (categorical, {"n_states": 3, "emission": "categorical", "n_symbols": 4,
                       "max_iter": 6, "tol": 0.0, "seed": 3, "pseudocount": 0.5}, partial),
        (large, {"n_states": 3, "emission": "gaussian", "covariance": "diag", "max_iter": 2,
                 "tol": 0.0, "seed": 4}, None),
        (gaussian, {"n_states": 2, "emission": "gaussian", "covariance": "tied", "max_iter": 4,
                    "tol": 0.0, "seed": 5}, None),
        (gaussian, {"n_states": 2, "emission": "gaussian", "covariance": "spherical",
                    "max_iter": 4, "tol": 0.0, "seed": 6}, None),
        (gaussian, {"n_states": 2, "emission": "gmm", "n_mix": 2, "covariance": "diag",
                    "max_iter": 4, "tol": 0.0, "seed": 7}, None),
        (poisson, {"n_states": 3, "emission": "poisson", "max_iter": 5, "tol": 0.0,
                   "seed": 8}, None),
        (multinomial, {"n_states": 3, "emission": "multinomial", "max_iter": 5, "tol": 0.0,
                       "seed": 9}, None),
        # Minibatch EM: minibatches drawn from both ranks' sequences (some all on one rank).
        (gaussian, {"n_states": 2, "emission": "gaussian", "batch_size": 3, "max_iter": 3,
                    "tol": 0.0, "seed": 11}, None),
        (categorical, {"n_states": 3, "emission": "categorical", "n_symbols": 4,
                       "batch_size": 5, "max_iter": 2, "tol": 0.0, "seed": 12}, partial),
        # Every state known: the closed-form fit from the label counts of both ranks.
        (labelled, {"n_states": 3, "emission": "categorical", "n_symbols": 3, "tol": 0.0,
                    "seed": 10}, states),
    ]


def test_two_processes_fit_the_single_process_hmm():
    jobs = _jobs()
    launched = distributed.spawn_local(
        workers.fit_hmms_and_helpers, 2, args=(jobs,), deadline=120
    )
    ranks = [fits for fits, _ in launched]
    helpers = [values for _, values in launched]
    for values in helpers:
        assert values["steps"] == 21 and values["total"] == 2.0
        assert values["all_true"] and not values["one_false"]
        assert values["given_seed"] == 7
    assert helpers[0]["seed"] == helpers[1]["seed"] is not None
    assert len(ranks[0]) == len(ranks[1]) == len(jobs)
    for index, (sequences, config, states) in enumerate(jobs):
        expected = workers.hmm_record(workers.fit_hmm(sequences, config, states))
        fit0, fit1 = ranks[0][index], ranks[1][index]
        assert fit0["n_symbols"] == fit1["n_symbols"] == expected["n_symbols"]
        # every rank holds the same parameters, bit for bit ...
        for name in expected["state"]:
            assert torch.equal(fit0["state"][name], fit1["state"][name]), (index, name)
        assert fit0["history"] == fit1["history"]
        # ... and they are the single-process fit's (the sums differ only in rounding)
        for name, value in expected["state"].items():
            torch.testing.assert_close(fit0["state"][name], value, rtol=0, atol=1e-10)
        closed_form = states is not None and all(bool((s >= 0).all()) for s in states)
        iterations = 1 if closed_form else config["max_iter"]
        assert len(fit0["history"]) == len(expected["history"]) == iterations
        for ours, theirs in zip(fit0["history"], expected["history"]):
            assert abs(ours["log_likelihood"] - theirs["log_likelihood"]) < 1e-9


def test_unsharded_hmm_fits_are_refused_under_distributed(monkeypatch):
    # Both refusals come before any collective, so a pretended process group suffices.
    monkeypatch.setattr("probgen.hmm.sharded.is_distributed", lambda: True)
    sequences = [torch.randn(6, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    custom = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    with pytest.raises(DataError, match="custom torch-distribution"):
        HMM(2, custom, max_iter=2).fit(sequences)
    inputs = [torch.zeros(6, 1) for _ in sequences]
    with pytest.raises(DataError, match="input-output"):
        HMM(2, "gaussian", transition_inputs=1, max_iter=2).fit(sequences, inputs=inputs)
