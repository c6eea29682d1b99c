"""Missing observations, checked by brute force: every state path enumerated, every missing
entry integrated out explicitly (torch.distributions on the observed sub-vector)."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

import probgen
from probgen.core.errors import LikelihoodDecreaseWarning
from probgen.hmm.model import HMM

NAN = float("nan")
D = torch.distributions


def _gaussian_model(covariance: str, n_states: int = 2) -> HMM:
    model = HMM(n_states, "gaussian", n_features=3, covariance=covariance).double()
    covariances = torch.tensor(
        [
            [[1.0, 0.4, -0.2], [0.4, 0.8, 0.1], [-0.2, 0.1, 0.6]],
            [[0.7, -0.3, 0.2], [-0.3, 1.2, 0.3], [0.2, 0.3, 0.9]],
        ],
        dtype=torch.float64,
    )[:n_states]
    return model.set_parameters(
        start_probs=[0.6, 0.4],
        transition_probs=[[0.7, 0.3], [0.25, 0.75]],
        means=[[0.0, 1.0, -1.0], [1.5, -0.5, 0.5]],
        covariances=covariances[0] if covariance == "tied" else covariances,
    )


def _gaussian_oracle(model: HMM):
    """log p(x_t | state) with the missing entries of x_t integrated out."""
    means, covariances = model.means, model.covariances

    def log_prob(row: torch.Tensor) -> torch.Tensor:
        observed = ~torch.isnan(row)
        if not observed.any():
            return torch.zeros(model.n_states, dtype=torch.float64)
        index = observed.nonzero().squeeze(1)
        return torch.stack(
            [
                D.MultivariateNormal(means[k][index], covariances[k][index][:, index]).log_prob(
                    row[index]
                )
                for k in range(model.n_states)
            ]
        )

    return log_prob


def _brute_force(model: HMM, sequence: torch.Tensor, emission_log_prob):
    """(log p(x), state marginals (T, S), best path, its log p(x, z)) over all paths."""
    n_states, length = model.n_states, sequence.shape[0]
    emissions = torch.stack([emission_log_prob(sequence[t]) for t in range(length)])
    log_start, log_transition = model.start_probs.log(), model.transition_probs.log()
    joint = []
    paths = list(itertools.product(range(n_states), repeat=length))
    for path in paths:
        value = log_start[path[0]] + emissions[0, path[0]]
        for t in range(1, length):
            value = value + log_transition[path[t - 1], path[t]] + emissions[t, path[t]]
        joint.append(value)
    joint = torch.stack(joint)
    total = torch.logsumexp(joint, 0)
    weights = (joint - total).exp()
    marginals = torch.zeros(length, n_states, dtype=torch.float64)
    for weight, path in zip(weights, paths):
        for t, state in enumerate(path):
            marginals[t, state] += weight
    best = int(joint.argmax())
    return total, marginals, torch.tensor(paths[best]), joint[best]


def _check_against_brute_force(model: HMM, sequences: list[torch.Tensor], oracle) -> None:
    log_probs = model.log_prob(sequences)
    posteriors = model.posterior(sequences)
    paths, path_log_probs = model.viterbi(sequences)
    for i, sequence in enumerate(sequences):
        total, marginals, best, best_value = _brute_force(model, sequence, oracle)
        length = sequence.shape[0]
        torch.testing.assert_close(log_probs[i].double(), total, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(posteriors[i, :length].double(), marginals, rtol=1e-8, atol=1e-9)
        assert paths[i, :length].tolist() == best.tolist()
        torch.testing.assert_close(path_log_probs[i].double(), best_value, rtol=1e-9, atol=1e-9)


def _gappy_gaussian() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    second = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    first[1, 0] = NAN  # one entry missing
    first[2] = NAN  # whole row missing
    first[4, 1:] = NAN  # two entries missing
    second[0, 2] = NAN
    second[3, :2] = NAN
    return [first, second]


@pytest.mark.parametrize("covariance", ["full", "tied", "diag", "spherical"])
def test_gaussian_rows_with_missing_entries_are_marginalised_exactly(covariance):
    model = _gaussian_model(covariance)
    _check_against_brute_force(model, _gappy_gaussian(), _gaussian_oracle(model))


def test_partly_observed_rows_are_not_dropped():
    # Dropping a partly observed row (treating it as wholly missing) changes log p(x) by the
    # log-density of its observed entries, about a nat per row here.
    model = _gaussian_model("full")
    sequences = _gappy_gaussian()
    dropped = [sequence.clone() for sequence in sequences]
    for sequence in dropped:
        sequence[torch.isnan(sequence).any(-1)] = NAN
    gap = (model.log_prob(sequences) - model.log_prob(dropped)).abs()
    assert (gap > 0.5).all()


def test_gmm_rows_with_missing_entries_are_marginalised_exactly():
    model = HMM(2, "gmm", n_features=3, n_mix=2, covariance="full").double()
    generator = torch.Generator().manual_seed(3)
    factors = torch.randn(4, 3, 3, generator=generator, dtype=torch.float64)
    model.set_parameters(
        start_probs=[0.3, 0.7],
        transition_probs=[[0.6, 0.4], [0.2, 0.8]],
        mixture_weights=[[0.3, 0.7], [0.5, 0.5]],
        means=torch.randn(2, 2, 3, generator=generator, dtype=torch.float64),
        covariances=(factors @ factors.transpose(-1, -2) + torch.eye(3)).reshape(2, 2, 3, 3),
    )

    def oracle(row):
        observed = ~torch.isnan(row)
        if not observed.any():
            return torch.zeros(2, dtype=torch.float64)
        index = observed.nonzero().squeeze(1)
        values = []
        for k in range(2):
            mixture = D.MixtureSameFamily(
                D.Categorical(model.mixture_weights[k]),
                D.MultivariateNormal(
                    model.means[k][:, index], model.covariances[k][:, index][:, :, index]
                ),
            )
            values.append(mixture.log_prob(row[index]))
        return torch.stack(values)

    _check_against_brute_force(model, _gappy_gaussian(), oracle)


def _categorical_model() -> HMM:
    return (
        HMM(2, "categorical", n_symbols=3)
        .double()
        .set_parameters(
            start_probs=[0.6, 0.4],
            transition_probs=[[0.7, 0.3], [0.25, 0.75]],
            emission_probs=[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]],
        )
    )


@pytest.mark.parametrize("form", ["minus_one", "nan"])
def test_missing_symbols_are_marginalised_exactly(form):
    model = _categorical_model()
    codes = [torch.tensor([0, -1, 2, -1, 1]), torch.tensor([-1, 2, 2, 0])]
    if form == "nan":
        codes = [code.double().masked_fill(code < 0, NAN) for code in codes]
    sequences = codes

    def oracle(symbol):
        symbol = int(torch.nan_to_num(torch.as_tensor(symbol, dtype=torch.float64), -1.0))
        if symbol < 0:
            return torch.zeros(2, dtype=torch.float64)
        return model.emission_probs[:, symbol].log()

    _check_against_brute_force(model, sequences, oracle)


def _poisson_model() -> HMM:
    return (
        HMM(2, "poisson", n_features=2)
        .double()
        .set_parameters(
            start_probs=[0.6, 0.4],
            transition_probs=[[0.7, 0.3], [0.25, 0.75]],
            rates=[[1.0, 4.0], [5.0, 0.5]],
        )
    )


def _poisson_oracle(model: HMM):
    def oracle(row):
        observed = ~torch.isnan(row)
        return torch.stack(
            [
                D.Poisson(model.rates[k][observed]).log_prob(row[observed]).sum()
                for k in range(model.n_states)
            ]
        )

    return oracle


def _gappy_counts() -> list[torch.Tensor]:
    return [
        torch.tensor([[1.0, 3.0], [NAN, 5.0], [4.0, NAN], [NAN, NAN], [6.0, 0.0]]).double(),
        torch.tensor([[0.0, NAN], [2.0, 2.0], [NAN, 1.0]]).double(),
    ]


def test_missing_counts_are_marginalised_exactly():
    model = _poisson_model()
    _check_against_brute_force(model, _gappy_counts(), _poisson_oracle(model))


# ---- EM with missing values: one iteration against the brute-force expected statistics -------
def _one_em_iteration(model: HMM, sequences) -> HMM:
    model.max_iter, model.tol = 1, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        return model.fit(sequences, warm_start=True)


def _brute_force_marginals(model: HMM, sequences, oracle) -> list[torch.Tensor]:
    return [_brute_force(model, sequence, oracle)[1] for sequence in sequences]


def test_em_counts_missing_symbols_and_counts_nowhere():
    model = _categorical_model()
    sequences = [torch.tensor([0, -1, 2, -1, 1]), torch.tensor([-1, 2, 2, 0])]
    marginals = _brute_force_marginals(
        model,
        sequences,
        lambda s: (
            torch.zeros(2, dtype=torch.float64) if s < 0 else model.emission_probs[:, int(s)].log()
        ),
    )
    counts = torch.zeros(2, 3, dtype=torch.float64)
    for sequence, gamma in zip(sequences, marginals):
        for t, symbol in enumerate(sequence.tolist()):
            if symbol >= 0:
                counts[:, symbol] += gamma[t]
    _one_em_iteration(model, sequences)
    torch.testing.assert_close(model.emission_probs, counts / counts.sum(-1, keepdim=True))

    model = _poisson_model()
    sequences = _gappy_counts()
    marginals = _brute_force_marginals(model, sequences, _poisson_oracle(model))
    sums = torch.zeros(2, 2, dtype=torch.float64)
    weights = torch.zeros(2, 2, dtype=torch.float64)
    for sequence, gamma in zip(sequences, marginals):
        observed = ~torch.isnan(sequence)
        sums += gamma.t() @ sequence.nan_to_num(0.0)
        weights += gamma.t() @ observed.double()
    _one_em_iteration(model, sequences)
    torch.testing.assert_close(model.rates, sums / weights)


@pytest.mark.parametrize("covariance", ["full", "tied"])
def test_em_with_partly_observed_rows_is_the_exact_e_step(covariance):
    # Expected statistics written row by row: a missing block takes its conditional mean
    # mu_m + S_mo S_oo^-1 (x_o - mu_o) under each state, and its second moment adds the
    # conditional covariance; wholly missing rows add nothing.
    model = _gaussian_model(covariance)
    model.covariance_prior = model.emission.components.covariance_prior = 0.05
    sequences = _gappy_gaussian()
    marginals = _brute_force_marginals(model, sequences, _gaussian_oracle(model))
    means, covariances = model.means, model.covariances
    weight = torch.zeros(2, dtype=torch.float64)
    first = torch.zeros(2, 3, dtype=torch.float64)
    second = torch.zeros(2, 3, 3, dtype=torch.float64)
    for sequence, gamma in zip(sequences, marginals):
        for t, row in enumerate(sequence):
            observed = ~torch.isnan(row)
            if not observed.any():
                continue
            o, m = observed.nonzero().squeeze(1), (~observed).nonzero().squeeze(1)
            for k in range(2):
                s = covariances[k]
                gain = s[m][:, o] @ torch.linalg.inv(s[o][:, o])
                expected = row.clone()
                expected[m] = means[k][m] + gain @ (row[o] - means[k][o])
                moment = torch.outer(expected, expected)
                moment[m.unsqueeze(1), m] += s[m][:, m] - gain @ s[o][:, m]
                weight[k] += gamma[t, k]
                first[k] += gamma[t, k] * expected
                second[k] += gamma[t, k] * moment
    new_means = first / weight[:, None]
    scatter = second - weight[:, None, None] * new_means[:, :, None] * new_means[:, None, :]
    if covariance == "tied":
        expected_covariances = ((0.05 + scatter.sum(0)) / weight.sum()).expand(2, 3, 3)
    else:
        expected_covariances = (0.05 + scatter) / weight[:, None, None]
    _one_em_iteration(model, sequences)
    torch.testing.assert_close(model.means, new_means)
    torch.testing.assert_close(model.covariances, expected_covariances)


@pytest.mark.parametrize(
    "options",
    [
        dict(emission="gaussian", covariance="full"),
        dict(emission="gaussian", covariance="tied"),
        dict(emission="gmm", covariance="full", n_mix=2),
        dict(emission="poisson"),
        dict(emission="categorical"),
    ],
)
def test_em_with_missing_values_never_decreases_the_likelihood(options):
    generator = torch.Generator().manual_seed(8)
    if options["emission"] == "categorical":
        sequences = [torch.randint(0, 4, (40,), generator=generator) for _ in range(4)]
        for sequence in sequences:
            sequence[torch.rand(40, generator=generator) < 0.2] = -1
    else:
        sequences = [torch.randn(40, 3, generator=generator, dtype=torch.float64) for _ in range(4)]
        if options["emission"] == "poisson":
            sequences = [torch.poisson(3 * sequence.abs()) for sequence in sequences]
        for sequence in sequences:
            sequence[torch.rand(40, 3, generator=generator) < 0.2] = NAN
    model = HMM(2, seed=0, max_iter=25, tol=0.0, **options).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        model.fit(sequences)
    history = [record["log_likelihood"] for record in model.history_]
    assert history[-1] > history[0]
    assert math.isfinite(model.score(sequences))
