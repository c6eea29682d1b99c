"""HMM fitting, sampling, bad input and persistence."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

import probgen
from probgen.core.data import Sequences
from probgen.core.errors import (
    DataError,
    LikelihoodDecreaseWarning,
    ModelFileError,
    NotFittedError,
)
from probgen.hmm import inference
from probgen.hmm.model import HMM


def casino(dtype=torch.float64) -> HMM:
    model = HMM(2, "categorical", n_symbols=6).to(dtype)
    return model.set_parameters(
        start_probs=[0.5, 0.5],
        transition_probs=[[0.95, 0.05], [0.1, 0.9]],
        emission_probs=[[1 / 6] * 6, [0.1] * 5 + [0.5]],
    )


def gaussian_truth(covariance="diag") -> HMM:
    model = HMM(3, "gaussian", n_features=2, covariance=covariance).double()
    covariances = torch.tensor([[0.3, 0.5], [0.4, 0.2], [0.6, 0.6]], dtype=torch.float64)
    if covariance == "full":
        covariances = torch.diag_embed(covariances) + 0.05
    return model.set_parameters(
        start_probs=[0.6, 0.3, 0.1],
        transition_probs=[[0.8, 0.1, 0.1], [0.1, 0.85, 0.05], [0.15, 0.05, 0.8]],
        means=[[-3.0, 0.0], [0.0, 3.0], [3.0, -1.0]],
        covariances=covariances,
    )


def best_permutation(estimated: torch.Tensor, truth: torch.Tensor) -> tuple[int, ...]:
    n_states = truth.shape[0]
    return min(
        itertools.permutations(range(n_states)),
        key=lambda order: float((estimated[list(order)] - truth).abs().sum()),
    )


# ---- fitting ---------------------------------------------------------------------------------
def test_categorical_refit_recovers_casino_parameters():
    truth = casino()
    rolls = truth.sample(300, length=50, seed=0)
    model = HMM(2, "categorical", n_symbols=6, n_init=2, seed=1, max_iter=300).double()
    model.fit(rolls)
    order = list(best_permutation(model.emission_probs, truth.emission_probs))
    np.testing.assert_allclose(model.emission_probs[order], truth.emission_probs, atol=0.04)
    np.testing.assert_allclose(
        model.transition_probs[order][:, order], truth.transition_probs, atol=0.03
    )
    assert model.converged_
    assert model.n_iter_ == len(model.history_)
    assert [r["iteration"] for r in model.history_] == list(range(1, model.n_iter_ + 1))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gaussian_refit_recovers_parameters(covariance):
    truth = gaussian_truth(covariance)
    sequences = truth.sample(30, length=100, seed=2)
    model = HMM(3, "gaussian", covariance=covariance, seed=0, n_init=2).double().fit(sequences)
    order = list(best_permutation(model.means, truth.means))
    np.testing.assert_allclose(model.means[order], truth.means, atol=0.1)
    np.testing.assert_allclose(model.covariances[order], truth.covariances, atol=0.08)
    np.testing.assert_allclose(
        model.transition_probs[order][:, order], truth.transition_probs, atol=0.04
    )


def test_poisson_and_gmm_refit():
    truth = HMM(2, "poisson", n_features=1).double()
    truth.set_parameters(
        start_probs=[0.5, 0.5], transition_probs=[[0.9, 0.1], [0.2, 0.8]], rates=[[2.0], [12.0]]
    )
    counts = truth.sample(10, length=200, seed=3)
    model = HMM(2, "poisson", seed=0).double().fit(counts)
    order = list(best_permutation(model.rates, truth.rates))
    np.testing.assert_allclose(model.rates[order], truth.rates, rtol=0.06)

    # Two Gaussians per state fitted to data from one per state: EM climbs every iteration,
    # ends above the generating model's log-likelihood (it nests it), and each state's
    # mixture mean recovers the generating mean.
    truth = gaussian_truth()
    data = truth.sample(10, length=60, seed=4)
    gmm = HMM(3, "gmm", n_mix=2, seed=0, max_iter=30).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        gmm.fit(data)
    np.testing.assert_allclose(gmm.mixture_weights.sum(-1).numpy(), 1.0)
    history = [record["log_likelihood"] for record in gmm.history_]
    assert history[-1] > history[0] + 50
    assert gmm.score(data) > truth.score(data) + 5
    state_means = (gmm.mixture_weights.unsqueeze(-1) * gmm.means).sum(1)
    order = list(best_permutation(state_means, truth.means))
    np.testing.assert_allclose(state_means[order], truth.means, atol=0.2)


@pytest.mark.parametrize(
    "options",
    [
        dict(emission="categorical"),
        dict(emission="gaussian", covariance="diag"),
        dict(emission="gaussian", covariance="full"),
        dict(emission="gaussian", covariance="spherical"),
        dict(emission="gaussian", covariance="tied"),
        dict(emission="gmm", n_mix=2, covariance="full"),
        dict(emission="poisson"),
    ],
)
def test_em_never_decreases_the_penalised_log_likelihood(options):
    if options["emission"] == "categorical":
        data = casino().sample(8, length=80, seed=5)
    elif options["emission"] == "poisson":
        data = torch.poisson(torch.rand(8, 80, 1, generator=torch.Generator().manual_seed(0)) * 6)
    else:
        data = gaussian_truth().sample(8, length=80, seed=5)
    model = HMM(3, seed=0, max_iter=25, tol=0.0, **options).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        model.fit(data)
    history = np.array([record["log_likelihood"] for record in model.history_])
    assert np.all(np.diff(history) > -1e-6 * np.abs(history[:-1]))
    assert np.isfinite(history).all()


def test_decrease_warning_is_raised(monkeypatch):
    model = casino()
    rolls = model.sample(4, length=50, seed=6)

    def harmful_m_step(statistics):
        model.transition_probs = torch.flip(model.transition_probs, dims=(0,))

    monkeypatch.setattr(model, "m_step", harmful_m_step)
    model.max_iter = 3
    model.tol = 0.0
    with pytest.warns(LikelihoodDecreaseWarning):
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        model.fit(rolls, warm_start=True)


def test_restarts_keep_the_best_and_seed_makes_fits_reproducible():
    rolls = casino().sample(10, length=60, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        single = [HMM(2, n_symbols=6, seed=s, max_iter=40).double().fit(rolls) for s in range(3)]
        multi = HMM(2, n_symbols=6, seed=0, n_init=3, max_iter=40).double().fit(rolls)
        again = HMM(2, n_symbols=6, seed=0, n_init=3, max_iter=40).double().fit(rolls)
    best = max(m.history_[-1]["log_likelihood"] for m in single[:1])
    assert multi.history_[-1]["log_likelihood"] >= best - 1e-9
    torch.testing.assert_close(multi.emission_probs, again.emission_probs)


def test_minibatch_em_reaches_the_full_batch_fit():
    truth = gaussian_truth()
    sequences = truth.sample(40, length=50, seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        full = HMM(3, "gaussian", seed=0).double().fit(sequences)
        online = HMM(3, "gaussian", seed=0, batch_size=8, max_iter=15).double().fit(sequences)
    assert online.score(sequences) > full.score(sequences) - 0.01 * abs(full.score(sequences))


def test_statistics_are_additive_for_sharded_em():
    model = gaussian_truth()
    sequences = model.sample(6, length=30, seed=9)
    whole, _ = model.e_step(sequences)
    first, _ = model.e_step(sequences[:2])
    second, _ = model.e_step(sequences[2:])
    for key in whole:
        torch.testing.assert_close(whole[key], first[key] + second[key])


def test_custom_torch_distribution_is_fitted_by_gradient():
    truth = (
        HMM(2, "gaussian", n_features=1)
        .double()
        .set_parameters(
            start_probs=[0.5, 0.5],
            transition_probs=[[0.9, 0.1], [0.1, 0.9]],
            means=[[-2.0], [2.0]],
            covariances=[[1.0], [1.0]],
        )
    )
    data = truth.sample(10, length=100, seed=10)
    template = torch.distributions.Normal(
        torch.tensor([-0.5, 0.5], dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    )
    model = HMM(2, template, max_iter=300, learning_rate=0.05, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        model.fit(data[..., 0])
    fitted = model.emission_distribution()
    np.testing.assert_allclose(sorted(fitted.mean.tolist()), [-2.0, 2.0], atol=0.15)
    assert model.history_[-1]["log_likelihood"] > model.history_[0]["log_likelihood"]
    # The same data under the generating parameters is at most slightly more likely.
    assert model.score(data[..., 0]) > truth.score(data) - 5.0


# ---- inference API ---------------------------------------------------------------------------
def test_log_prob_posterior_viterbi_on_ragged_input():
    model = casino()
    rolls = [np.array([5, 5, 5, 0, 1]), np.array([2, 5]), np.array([5])]
    log_probs = model.log_prob(rolls)
    assert log_probs.shape == (3,)
    for i, roll in enumerate(rolls):
        torch.testing.assert_close(log_probs[i], model.log_prob([roll])[0])
    posteriors = model.posterior(rolls)
    assert posteriors.shape == (3, 5, 2)
    torch.testing.assert_close(posteriors[0].sum(-1), torch.ones(5, dtype=torch.float64))
    paths, _ = model.viterbi(rolls)
    assert paths[1, 2:].tolist() == [-1, -1, -1]
    assert model.predict(rolls).shape == (3, 5)


def test_enumerate_support_normalises_and_sampling_matches():
    model = casino()
    support = model.enumerate_support(3)
    assert support.shape == (216, 3)
    total = torch.logsumexp(model.log_prob(support), 0)
    assert abs(total.item()) < 1e-10
    samples = model.sample(4000, length=3, seed=11)
    codes = (samples * torch.tensor([36, 6, 1])).sum(-1)
    frequencies = torch.bincount(codes, minlength=216).double() / 4000
    expected = model.log_prob(support).exp()
    assert (frequencies - expected).abs().max() < 0.02


def test_sample_shapes_seeds_and_states():
    model = gaussian_truth()
    observations, states = model.sample(5, length=7, seed=12, return_states=True)
    assert observations.shape == (5, 7, 2) and states.shape == (5, 7)
    assert states.dtype == torch.long
    torch.testing.assert_close(model.sample(5, length=7, seed=12), observations)
    assert not torch.equal(model.sample(5, length=7, seed=13), observations)


def test_missing_gaussian_rows_are_marginalised():
    model = gaussian_truth()
    sequence = model.sample(1, length=6, seed=14)[0].clone()
    with_gap = sequence.clone()
    with_gap[2] = float("nan")
    with_gap[5] = float("nan")
    # Oracle: the emission factor of a missing row is 1 (log 0) in every state.
    emission_log_probs = model.emission.log_prob(sequence).unsqueeze(0).clone()
    emission_log_probs[0, [2, 5]] = 0.0
    expected = inference.log_likelihood(
        model.start_probs, model.transition_probs, emission_log_probs
    )
    torch.testing.assert_close(model.log_prob([with_gap]), expected)
    # Partly missing rows are marginalised per feature with diagonal covariances.
    partial = sequence.clone()
    partial[1, 0] = float("nan")
    assert torch.isfinite(model.log_prob([partial])).all()
    fitted = HMM(3, "gaussian", seed=0, max_iter=5).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        fitted.fit([with_gap, sequence, partial])
    assert torch.isfinite(fitted.means).all()


def test_aic_bic():
    model = gaussian_truth()
    data = model.sample(3, length=20, seed=15)
    n_parameters = 2 + 6 + 3 * 2 + 3 * 2
    assert model.n_parameters() == n_parameters
    log_likelihood = model.score(data)
    assert model.aic(data) == pytest.approx(-2 * log_likelihood + 2 * n_parameters)
    assert model.bic(data) == pytest.approx(-2 * log_likelihood + n_parameters * math.log(60))


def test_parallel_scan_method_agrees():
    model = casino()
    rolls = model.sample(2, length=3000, seed=16)
    torch.testing.assert_close(
        model.log_prob(rolls, method="scan"), model.log_prob(rolls, method="sequential")
    )


def test_float32_model_close_to_float64():
    exact = gaussian_truth()
    single = gaussian_truth().float()
    data = exact.sample(4, length=50, seed=17)
    assert single.dtype == torch.float32
    torch.testing.assert_close(
        single.log_prob(data.float()).double(), exact.log_prob(data), rtol=1e-5, atol=1e-3
    )


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_constructor_arguments():
    with pytest.raises(DataError, match="n_states"):
        HMM(0)
    with pytest.raises(DataError, match="emission"):
        HMM(2, "binomial")
    with pytest.raises(DataError, match="covariance"):
        HMM(2, "gaussian", covariance="banded")


def test_bad_sequences():
    model = casino()
    with pytest.raises(DataError, match="empty"):
        model.log_prob([])
    with pytest.raises(DataError, match="length 0"):
        model.log_prob([np.array([1, 2]), np.array([], dtype=int)])
    with pytest.raises(DataError, match="above the largest"):
        model.log_prob([np.array([1, 6])])
    with pytest.raises(DataError, match="below"):
        model.log_prob([np.array([-2, 2])])  # -1 is a missing symbol, -2 nothing
    with pytest.raises(DataError, match="all missing"):
        model.log_prob([np.array([-1, -1])])
    with pytest.raises(DataError, match="whole numbers"):
        model.log_prob([np.array([1.5, 2.0])])
    gaussian = gaussian_truth()
    with pytest.raises(DataError, match=r"sequences\[1\] has 3 features, the model has 2"):
        gaussian.log_prob([np.zeros((4, 2)), np.zeros((4, 3))])
    with pytest.raises(DataError, match="infinite"):
        gaussian.log_prob([np.full((4, 2), np.inf)])
    poisson = HMM(2, "poisson", n_features=1)
    with pytest.raises(DataError, match="all NaN"):
        poisson.fit([np.array([np.nan, np.nan])])
    with pytest.raises(DataError, match="whole numbers"):
        poisson.fit([np.array([1.0, 0.5, 2.0])])
    with pytest.raises(DataError, match="rows must sum to 1"):
        HMM(2, n_symbols=2).set_parameters(start_probs=[0.5, 0.6])


def test_not_fitted_errors():
    model = HMM(2, "gaussian", n_features=1)
    for call in (
        lambda: model.log_prob([np.zeros((3, 1))]),
        lambda: model.sample(2, length=3),
        lambda: model.viterbi([np.zeros((3, 1))]),
    ):
        with pytest.raises(NotFittedError):
            call()


@pytest.mark.parametrize("covariance", ["diag", "full", "spherical", "tied"])
def test_constant_data_gives_a_finite_fit(covariance):
    constant = [np.full((30, 2), 4.0) for _ in range(3)]
    model = HMM(2, "gaussian", covariance=covariance, seed=0, max_iter=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        model.fit(constant)
    assert torch.isfinite(model.covariances).all()
    assert torch.isfinite(model.log_prob(constant)).all()


def test_constant_counts_and_symbols_give_finite_fits():
    counts = HMM(2, "poisson", seed=0, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        counts.fit([np.zeros(20)])
        assert torch.isfinite(counts.log_prob([np.zeros(20)])).all()
        symbols = HMM(3, "categorical", n_symbols=4, seed=0, max_iter=5)
        symbols.fit([np.ones(20, dtype=int)])
    assert torch.isfinite(symbols.log_prob([np.ones(20, dtype=int)])).all()


# ---- persistence ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("emission", ["categorical", "gaussian", "gmm", "poisson", "custom"])
def test_save_load_round_trip(tmp_path, dtype, emission):
    if emission == "categorical":
        data = casino().sample(3, length=20, seed=18)
        model = HMM(2, "categorical", seed=0, max_iter=5)
    elif emission == "poisson":
        data = torch.poisson(torch.full((3, 20, 1), 3.0))
        model = HMM(2, "poisson", seed=0, max_iter=5)
    elif emission == "custom":
        data = gaussian_truth().sample(3, length=20, seed=18)[..., 0]
        template = torch.distributions.StudentT(
            torch.tensor([4.0, 4.0]), torch.tensor([-1.0, 1.0]), torch.ones(2)
        )
        model = HMM(2, template, seed=0, max_iter=5)
    else:
        data = gaussian_truth().sample(3, length=20, seed=18)
        model = HMM(2, emission, n_mix=2, covariance="full", seed=0, max_iter=5)
    model = model.to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        model.fit(data if emission == "categorical" else data.to(dtype))
    path = tmp_path / "model.probgen"
    model.save(path)
    loaded = probgen.load(path)
    assert isinstance(loaded, HMM) and loaded.dtype == dtype
    torch.testing.assert_close(loaded.log_prob(data), model.log_prob(data), rtol=0, atol=0)
    torch.testing.assert_close(
        loaded.sample(3, length=5, seed=1), model.sample(3, length=5, seed=1)
    )
    assert loaded.history_ == model.history_ and loaded.n_iter_ == model.n_iter_


def test_corrupt_model_file(tmp_path):
    path = tmp_path / "casino.probgen"
    casino().save(path)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError):
        probgen.load(path)


def test_sequences_input_and_device_moves():
    model = casino()
    padded = Sequences(torch.tensor([[5, 5, 0], [1, 0, 0]]), torch.tensor([3, 1]))
    torch.testing.assert_close(
        model.log_prob(padded), model.log_prob([np.array([5, 5, 0]), np.array([1])])
    )
    assert model.to("cpu") is model


# ---- the state-major e-step against the generic time-major route ------------------------------
def _reference_e_step(model: HMM, sequences: Sequences) -> tuple[dict, torch.Tensor]:
    """Statistics by the generic route: (B, T, S) log-densities, then weighted `statistics`."""
    emission = model.emission
    expected = inference.expected_statistics(
        model.start_probs,
        model.transition_probs,
        emission.log_prob(sequences.values),
        sequences.lengths,
        method="sequential",
    )
    mask = sequences.mask
    statistics = {"start": expected.start_counts, "transition": expected.transition_counts}
    for key, value in emission.statistics(
        sequences.values[mask], expected.posteriors[mask]
    ).items():
        statistics[f"emission.{key}"] = value
    return statistics, expected.log_likelihood


@pytest.mark.parametrize(
    "options",
    [
        dict(emission="categorical", n_symbols=5),
        dict(emission="gaussian", covariance="diag"),
        dict(emission="gaussian", covariance="spherical"),
        dict(emission="gaussian", covariance="full"),
        dict(emission="gaussian", covariance="tied"),
        dict(emission="gmm", n_mix=2, covariance="diag"),
        dict(emission="gmm", n_mix=2, covariance="tied"),
        dict(emission="poisson"),
    ],
)
def test_state_major_e_step_matches_the_generic_route(options):
    generator = torch.Generator().manual_seed(30)
    lengths = [7, 3, 5, 1]
    if options["emission"] == "categorical":
        parts = [torch.randint(5, (n,), generator=generator) for n in lengths]
        parts[0][3] = -1  # one missing symbol
    elif options["emission"] == "poisson":
        parts = [torch.poisson(3 * torch.rand(n, 2, generator=generator)) for n in lengths]
        parts[0][2, 1] = float("nan")  # one missing count
    else:
        parts = [torch.randn(n, 2, generator=generator, dtype=torch.float64) for n in lengths]
        parts[0][2, 1] = float("nan")  # one missing entry
        parts[2][1] = float("nan")  # one missing row
    model = HMM(3, seed=0, max_iter=2, **options).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        model.fit(parts)
    sequences = model._prepare(parts)
    statistics, log_likelihoods = model.e_step(sequences)
    expected, expected_log_likelihoods = _reference_e_step(model, sequences)
    torch.testing.assert_close(log_likelihoods, expected_log_likelihoods, rtol=1e-10, atol=1e-10)
    assert statistics.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(statistics[key], expected[key], rtol=1e-9, atol=1e-9)


def test_prepared_emission_inputs_follow_a_new_centre():
    from probgen.hmm.sequences import _Batch

    model = gaussian_truth()
    sequences = model.sample(4, length=20, seed=31)
    batch = _Batch.of(model._prepare(sequences))
    model.e_step(batch)  # caches quadratic features taken about the current centre
    model.set_parameters(means=[[-1.0, 0.5], [0.0, 2.0], [4.0, -2.0]])  # moves the centre
    reused, reused_log_likelihoods = model.e_step(batch)
    fresh, fresh_log_likelihoods = model.e_step(sequences)
    torch.testing.assert_close(reused_log_likelihoods, fresh_log_likelihoods)
    for key in fresh:
        torch.testing.assert_close(reused[key], fresh[key])


@pytest.mark.parametrize("missing", [False, True])
def test_gaussian_scaled_probs_agree_in_every_buffer_storage(missing):
    """Diagonal Gaussian emissions write log2-densities into any (T, S, B) buffer correctly."""
    from probgen.hmm.emissions import GaussianEmission

    generator = torch.Generator().manual_seed(7)
    emission = GaussianEmission(n_states=3, n_features=2).double()
    emission.components.means = torch.randn(3, 2, dtype=torch.float64, generator=generator)
    emission.components.covariance_storage = 0.5 + torch.rand(
        3, 2, dtype=torch.float64, generator=generator
    )
    values_tm = torch.randn(5, 4, 2, dtype=torch.float64, generator=generator)  # (T, B, D)
    if missing:
        values_tm[1, 2, 0] = math.nan
    inputs = emission.prepare(values_tm)
    assert emission.state_outer(inputs)
    # Oracle: torch's own densities, scaled per step by their largest value.
    log_probs = emission.distribution().log_prob(values_tm.nan_to_num().unsqueeze(-2))
    if missing:
        observed = emission.components.means.new_tensor([1.0, 1.0]).expand(5, 4, 2).clone()
        observed[1, 2, 0] = 0.0
        variances = emission.components.variances()
        centred = values_tm.nan_to_num().unsqueeze(-2) - emission.components.means
        per_feature = -0.5 * (centred.square() / variances + torch.log(2 * math.pi * variances))
        log_probs = (per_feature * observed.unsqueeze(-2)).sum(-1)
    expected_offsets = log_probs.amax(-1)
    expected = (log_probs - expected_offsets.unsqueeze(-1)).exp().transpose(1, 2)
    shape = (5, 3, 4)
    for out in (
        None,
        torch.empty(shape, dtype=torch.float64),
        inference.state_major_empty(shape, values_tm),
    ):
        probs, offsets = emission.scaled_probs(inputs, None, out=out)
        torch.testing.assert_close(probs, expected)
        torch.testing.assert_close(offsets, expected_offsets)
        if out is not None:
            assert probs.data_ptr() == out.data_ptr()


def test_fit_seed_is_a_deprecated_alias_that_still_overrides_the_constructor():
    rolls = casino().sample(6, length=40, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        reference = HMM(2, n_symbols=6, seed=5, max_iter=5).double().fit(rolls)
        model = HMM(2, n_symbols=6, seed=0, max_iter=5).double()
        with pytest.warns(DeprecationWarning, match=r"HMM\(\.\.\., seed=\.\.\.\)"):
            model.fit(rolls, seed=5)
    assert model.seed == 0  # the override applies to this fit only
    torch.testing.assert_close(model.emission_probs, reference.emission_probs, rtol=0, atol=0)
    assert model.history_ == reference.history_


def test_fit_progress_is_a_deprecated_alias_that_still_overrides_the_constructor(monkeypatch):
    import probgen.hmm.fit as hmm_fit

    shown: list[bool] = []
    monkeypatch.setattr(hmm_fit, "_progress_bar", lambda show, total: shown.append(show))
    rolls = casino().sample(4, length=30, seed=3)
    model = HMM(2, n_symbols=6, seed=0, max_iter=3, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        with pytest.warns(DeprecationWarning, match=r"HMM\(\.\.\., progress=\.\.\.\)"):
            model.fit(rolls, progress=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            model.fit(rolls, warm_start=True)  # warm_start is a real fit option: no warning
    assert shown == [True, False]
