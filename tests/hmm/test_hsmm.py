"""Hidden semi-Markov models: brute force over every segmentation on tiny cases, the HMM as an
HSMM with geometric durations, EM, sampling and the contract."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

import probgen
from probgen.core.errors import ConvergenceWarning, DataError, NotFittedError
from probgen.core.testing import check_density
from probgen.hmm.durations import duration_pmf
from probgen.hmm.model import HMM
from probgen.hmm.semi_markov import HSMM, segments


def _tiny(self_transitions: bool = True) -> HSMM:
    model = HSMM(2, "categorical", n_symbols=3, max_duration=3).double()
    transition = [[0.3, 0.7], [0.6, 0.4]] if self_transitions else [[0.0, 1.0], [1.0, 0.0]]
    return model.set_parameters(
        start_probs=[0.6, 0.4],
        transition_probs=transition,
        duration_probs=[[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]],
        emission_probs=[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]],
    )


def _compositions(length: int):
    for cuts in itertools.product([False, True], repeat=length - 1):
        durations, current = [], 1
        for cut in cuts:
            if cut:
                durations.append(current)
                current = 1
            else:
                current += 1
        yield durations + [current]


def _brute_force(model: HSMM, x: torch.Tensor):
    """log p(x), p(z_t | x) and the best segmentation's (path, log p(x, segmentation))."""
    pmf = model.duration_probs
    tail = pmf.flip(-1).cumsum(-1).flip(-1)
    emission = model.emission_probs[:, x].T  # (T, S)
    length, n_states = len(x), model.n_states
    total, marginals, best = 0.0, torch.zeros(length, n_states, dtype=torch.float64), None
    for durations in _compositions(length):
        if max(durations) > model.max_duration:
            continue
        for labels in itertools.product(range(n_states), repeat=len(durations)):
            p = float(model.start_probs[labels[0]])
            for a, b in zip(labels, labels[1:]):
                p *= float(model.transition_probs[a, b])
            for k, (state, d) in enumerate(zip(labels, durations)):
                p *= float(pmf[state, d - 1] if k < len(durations) - 1 else tail[state, d - 1])
            path = [state for state, d in zip(labels, durations) for _ in range(d)]
            for t, state in enumerate(path):
                p *= float(emission[t, state])
            total += p
            marginals[torch.arange(length), torch.tensor(path)] += p
            if best is None or p > best[1]:
                best = (path, p)
    return math.log(total), marginals / total, best[0], math.log(best[1])


@pytest.mark.parametrize("self_transitions", [True, False])
def test_log_prob_posteriors_and_viterbi_match_brute_force(self_transitions):
    model = _tiny(self_transitions)
    sequences = [torch.tensor([0, 2, 2, 1, 0]), torch.tensor([2, 0, 2]), torch.tensor([1])]
    log_probs = model.log_prob(sequences)
    posteriors = model.posterior(sequences)
    paths, scores = model.viterbi(sequences)
    for index, x in enumerate(sequences):
        log_p, marginals, best_path, best_score = _brute_force(model, x)
        assert float(log_probs[index]) == pytest.approx(log_p, abs=1e-12)
        torch.testing.assert_close(posteriors[index, : len(x)], marginals, atol=1e-12, rtol=0)
        assert (posteriors[index, len(x) :] == 0).all()
        assert paths[index, : len(x)].tolist() == best_path
        assert (paths[index, len(x) :] == -1).all()
        assert float(scores[index]) == pytest.approx(best_score, abs=1e-12)
    # Each sequence alone gives what it gives in the ragged batch.
    torch.testing.assert_close(model.log_prob(sequences[1:2]), log_probs[1:2])


def test_probabilities_sum_to_one_over_all_sequences():
    report = check_density(_tiny(), [torch.tensor([0, 2, 2, 1]), torch.tensor([2, 0, 2, 1])])
    assert abs(report["log_total_probability"]) < 1e-9


def test_geometric_durations_equal_the_hmm():
    generator = torch.Generator().manual_seed(0)
    hmm = HMM(3, "gaussian", n_features=2).double()
    transition = torch.tensor(
        [[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.3, 0.1, 0.6]], dtype=torch.float64
    )
    hmm.set_parameters(
        start_probs=[0.2, 0.5, 0.3],
        transition_probs=transition,
        means=torch.randn(3, 2, generator=generator),
        covariances=torch.rand(3, 2, generator=generator) + 0.5,
    )
    x = [torch.randn(length, 2, generator=generator) for length in (12, 7, 1)]
    stay = transition.diagonal().double()
    max_duration = 13  # one more than the longest sequence: the truncation is never seen
    d = torch.arange(1, max_duration + 1, dtype=torch.float64)
    pmf = (1 - stay[:, None]) * stay[:, None] ** (d - 1)
    pmf[:, -1] = stay ** (max_duration - 1)  # the rest of the mass
    leave = transition.double() * (1 - torch.eye(3, dtype=torch.float64))
    hsmm = HSMM(3, "gaussian", n_features=2, max_duration=max_duration).double()
    hsmm.set_parameters(
        start_probs=hmm.start_probs,
        transition_probs=leave / leave.sum(1, keepdim=True),
        duration_probs=pmf,
        means=hmm.means,
        covariances=hmm.covariances,
    )
    torch.testing.assert_close(hsmm.log_prob(x), hmm.log_prob(x), atol=1e-10, rtol=0)
    torch.testing.assert_close(hsmm.posterior(x), hmm.posterior(x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("family", ["poisson", "negative_binomial"])
def test_parametric_duration_pmfs(family):
    parameters = torch.tensor([[2.5, 0.4], [0.7, 0.8]], dtype=torch.float64)
    pmf = duration_pmf(family, parameters, 6)
    k = torch.arange(6, dtype=torch.float64)
    if family == "poisson":
        raw = torch.distributions.Poisson(parameters[:, :1]).log_prob(k).exp()
    else:
        # torch's NegativeBinomial counts successes k with probability `probs` each.
        raw = torch.distributions.NegativeBinomial(parameters[:, :1], parameters[:, 1:]).log_prob(k)
        raw = raw.exp()
    torch.testing.assert_close(pmf, raw / raw.sum(1, keepdim=True))


@pytest.mark.parametrize("family", ["nonparametric", "poisson"])
def test_em_recovers_the_durations(family):
    truth = HSMM(2, "gaussian", n_features=1, duration="poisson", max_duration=15).double()
    truth.set_parameters(
        start_probs=[0.5, 0.5],
        transition_probs=[[0.0, 1.0], [1.0, 0.0]],
        duration_parameters=[[6.0, 0.0], [1.5, 0.0]],
        means=[[-1.5], [1.5]],
        covariances=[[0.5], [0.5]],
    )
    x = truth.sample(8, length=60, seed=1)
    model = HSMM(2, "gaussian", duration=family, max_duration=15, seed=0, max_iter=25, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.double().fit(x)
    history = [record["log_likelihood"] for record in model.history_]
    assert all(b >= a - 1e-8 * abs(a) for a, b in zip(history, history[1:]))
    order = model.means[:, 0].argsort()
    mean_duration = (model.duration_probs * torch.arange(1, 16)).sum(1)[order]
    assert mean_duration.tolist() == pytest.approx([7.0, 2.5], abs=0.8)
    assert model.score(x) >= truth.score(x) - 1.0


def test_sampling_save_load_to_and_seeding(tmp_path):
    model = _tiny(self_transitions=False)
    x, z = model.sample(5, length=9, seed=3, return_states=True)
    again = model.sample(5, length=9, seed=3)
    assert torch.equal(x, again) and x.shape == (5, 9)
    for path in z:
        assert all(d <= model.max_duration for _, _, d in segments(path))
    path = tmp_path / "hsmm"
    model.save(path)
    loaded = probgen.load(path)
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))
    assert loaded.duration == "nonparametric" and loaded.max_duration == 3
    fits = [HSMM(2, "categorical", max_duration=3, seed=5, max_iter=3) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for fit in fits:
            fit.fit(x)
    assert torch.equal(fits[0].duration_probs, fits[1].duration_probs)
    assert model.to(torch.float32).log_prob(x).dtype == torch.float32


def test_bad_input():
    with pytest.raises(DataError, match="duration"):
        HSMM(2, duration="weibull")
    with pytest.raises(DataError, match="max_duration"):
        HSMM(2, max_duration=0)
    with pytest.raises(DataError, match="emission"):
        HSMM(2, torch.distributions.Normal(torch.zeros(2), torch.ones(2)))
    model = _tiny()
    with pytest.raises(DataError, match="sequences"):
        model.log_prob([torch.tensor([0, 3])])
    with pytest.raises(DataError, match="duration_probs"):
        model.set_parameters(duration_probs=[[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(DataError, match="duration_parameters"):
        model.set_parameters(duration_parameters=[[1.0, 0.0], [1.0, 0.0]])
    poisson = HSMM(2, "categorical", n_symbols=2, duration="poisson", max_duration=4)
    with pytest.raises(DataError, match="duration_parameters"):
        poisson.set_parameters(duration_parameters=[[-1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(NotFittedError):
        HSMM(2, "categorical", n_symbols=2).log_prob([torch.tensor([0])])


def test_restarts_fit_a_fresh_model_and_keep_the_best():
    truth = _tiny()
    x = truth.sample(6, length=12, seed=3)
    settings = dict(max_duration=truth.max_duration, seed=0, max_iter=4, tol=0.0)
    one = HSMM(truth.n_states, "categorical", n_symbols=truth.n_symbols, n_init=1, **settings)
    several = HSMM(truth.n_states, "categorical", n_symbols=truth.n_symbols, n_init=3, **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one.fit(x)
        several.fit(x)  # scoring a restart must not need the model to be marked fitted
    # the first restart draws what the single fit draws; the best of three is at least as good
    assert several.score(x) >= one.score(x) - 1e-9
