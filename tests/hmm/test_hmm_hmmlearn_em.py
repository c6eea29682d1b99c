"""EM against hmmlearn from the same start, and `from_hmmlearn` on hand-built models (issue 11)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hmmlearn_hmm

import probgen
from probgen.core.errors import DataError, LikelihoodDecreaseWarning
from probgen.hmm.model import HMM

RTOL = 1e-6
N_ITER = 10


def _spd(rng, n, d):
    factors = rng.normal(size=(n, d, d))
    return factors @ factors.transpose(0, 2, 1) + d * np.eye(d)


def _probs(rng, *shape):
    values = rng.uniform(0.2, 1.0, size=shape)
    return values / values.sum(-1, keepdims=True)


def _data(rng, n_features=3, n_sequences=4, length=80):
    """Sequences from three well separated clusters, as one hmmlearn array and as a list."""
    centres = np.array([[-2.0, 0.0, 1.0], [1.5, 2.0, -1.0], [0.0, -2.5, 0.5]])[:, :n_features]
    labels = rng.integers(0, 3, size=n_sequences * length)
    data = centres[labels] + rng.normal(size=(labels.size, n_features)) * 0.8
    return data, [length] * n_sequences, list(data.reshape(n_sequences, length, n_features))


def _gaussian_start(rng, covariance, n_states=3, n_features=3):
    model = hmmlearn_hmm.GaussianHMM(
        n_states,
        covariance_type=covariance,
        n_iter=N_ITER,
        tol=-np.inf,
        init_params="",
        implementation="scaling",
    )
    model.startprob_ = _probs(rng, n_states)
    model.transmat_ = _probs(rng, n_states, n_states)
    model.means_ = rng.normal(size=(n_states, n_features))
    model.covars_ = {
        "diag": rng.uniform(0.5, 2.0, size=(n_states, n_features)),
        "spherical": rng.uniform(0.5, 2.0, size=n_states),
        "full": _spd(rng, n_states, n_features),
        "tied": _spd(rng, 1, n_features)[0],
    }[covariance]
    return model


def _storage(reference, covariance):
    covars = np.asarray(reference._covars_)
    return covars.reshape(covars.shape[0], -1)[:, 0] if covariance == "spherical" else covars


@pytest.mark.parametrize("covariance", ["diag", "full", "spherical", "tied"])
def test_gaussian_em_with_the_default_prior_matches_hmmlearn(covariance):
    # hmmlearn adds its scalar covars_prior (default 1e-2, probgen's default too) to every
    # entry of the scatter matrix; an identity prior differs by about 1e-4 in the means.
    rng = np.random.default_rng(21)
    data, lengths, sequences = _data(rng)
    reference = _gaussian_start(rng, covariance)
    ours = HMM.from_hmmlearn(reference, max_iter=N_ITER, tol=0.0)
    assert ours.covariance_prior == reference.covars_prior == 1e-2
    reference.fit(data, lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(sequences, warm_start=True)
    assert ours.n_iter_ == N_ITER
    np.testing.assert_allclose(ours.score(sequences), reference.score(data, lengths), rtol=RTOL)
    np.testing.assert_allclose(ours.start_probs.numpy(), reference.startprob_, atol=1e-8)
    np.testing.assert_allclose(ours.transition_probs.numpy(), reference.transmat_, atol=1e-8)
    np.testing.assert_allclose(ours.means.numpy(), reference.means_, rtol=RTOL, atol=1e-9)
    storage = ours.emission.components.covariance_storage.numpy()
    np.testing.assert_allclose(storage, _storage(reference, covariance), rtol=RTOL, atol=1e-9)


def _gmm_start(covariance, n_iter):
    rng = np.random.default_rng(22)
    data, lengths, sequences = _data(rng, n_features=2, length=100)
    n_states, n_mix, d = 2, 2, 2
    reference = hmmlearn_hmm.GMMHMM(
        n_states,
        n_mix=n_mix,
        covariance_type=covariance,
        n_iter=n_iter,
        tol=-np.inf,
        init_params="",
        implementation="scaling",
    )
    reference.startprob_ = _probs(rng, n_states)
    reference.transmat_ = _probs(rng, n_states, n_states)
    reference.weights_ = _probs(rng, n_states, n_mix)
    reference.means_ = rng.normal(size=(n_states, n_mix, d)) * 1.5
    reference.covars_ = {
        "diag": rng.uniform(0.5, 2.0, size=(n_states, n_mix, d)),
        "full": _spd(rng, n_states * n_mix, d).reshape(n_states, n_mix, d, d),
        "tied": _spd(rng, n_states, d),
    }[covariance]
    ours = HMM.from_hmmlearn(reference, max_iter=n_iter, tol=0.0)
    # GMMHMM._init runs k-means (10 starts per state, seconds) even with init_params="",
    # and then sets nothing; its _check, which fit also runs, sets the default priors.
    reference._init = lambda X, lengths=None: None
    return reference, ours, data, lengths, sequences


@pytest.mark.parametrize("covariance", ["diag", "full", "tied"])
def test_gmm_em_iteration_matches_hmmlearn_gmmhmm(covariance):
    # GMMHMM's default priors make these m-steps maximum likelihood (from_hmmlearn sets
    # covariance_prior=0 to match); "tied" ties the components of each state. One known
    # difference: hmmlearn 0.3 takes the covariance scatter about the means of the previous
    # iteration, where the exact m-step (probgen) uses the new means; the two differ by
    # exactly the outer product of the mean shift, which is checked here.
    reference, ours, data, lengths, sequences = _gmm_start(covariance, 1)
    old_means = reference.means_.copy()
    assert ours.covariance_prior == 0.0
    np.testing.assert_allclose(ours.score(sequences), reference.score(data, lengths), rtol=1e-10)
    reference.fit(data, lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(sequences, warm_start=True)
    np.testing.assert_allclose(ours.start_probs.numpy(), reference.startprob_, atol=1e-10)
    np.testing.assert_allclose(ours.transition_probs.numpy(), reference.transmat_, atol=1e-10)
    np.testing.assert_allclose(ours.mixture_weights.numpy(), reference.weights_, atol=1e-10)
    np.testing.assert_allclose(ours.means.numpy(), reference.means_, rtol=RTOL, atol=1e-10)
    shift = reference.means_ - old_means  # (n_states, n_mix, d)
    outer = shift[..., :, None] * shift[..., None, :]
    covariances = ours.covariances.numpy()
    if covariance == "tied":
        np.testing.assert_allclose(covariances[:, 0], covariances[:, 1])  # tied within a state
        weighted = np.einsum("sk,skij->sij", reference.weights_, outer)
        expected = reference.covars_ - weighted
        np.testing.assert_allclose(covariances[:, 0], expected, rtol=RTOL, atol=1e-10)
    elif covariance == "diag":
        diagonal = np.diagonal(covariances, axis1=-2, axis2=-1)
        np.testing.assert_allclose(diagonal, reference.covars_ - shift**2, rtol=RTOL, atol=1e-10)
    else:
        np.testing.assert_allclose(covariances, reference.covars_ - outer, rtol=RTOL, atol=1e-10)
    # And back: to_hmmlearn keeps the per-state tied shape.
    back = ours.to_hmmlearn()
    np.testing.assert_allclose(back.score(data, lengths), ours.score(sequences), rtol=1e-10)


@pytest.mark.parametrize("covariance", ["diag", "full", "tied"])
def test_gmm_em_increases_the_likelihood_every_iteration_to_near_hmmlearn(covariance):
    # Over several iterations the two m-steps (see above) follow different paths; probgen's,
    # the exact one, must never decrease the likelihood and ends no lower than
    # hmmlearn's by more than 0.1%.
    reference, ours, data, lengths, sequences = _gmm_start(covariance, N_ITER)
    reference.fit(data, lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        ours.fit(sequences, warm_start=True)
    history = [record["log_likelihood"] for record in ours.history_]
    assert len(history) == N_ITER and history[-1] > history[0] + 10
    expected = reference.score(data, lengths)
    assert ours.score(sequences) >= expected - 1e-3 * abs(expected)


def _assigned_gaussian(covars, covariance="spherical"):
    """A GaussianHMM whose parameters were assigned directly (no n_features attribute)."""
    model = hmmlearn_hmm.GaussianHMM(3, covariance_type=covariance, init_params="")
    model.startprob_ = np.array([0.5, 0.3, 0.2])
    model.transmat_ = np.full((3, 3), 1 / 3)
    model.means_ = np.array([[0.0, 1.0], [2.0, -1.0], [-2.0, 0.5]])
    model.covars_ = covars
    assert not hasattr(model, "n_features")
    return model


@pytest.mark.parametrize(
    "shape", [(3,), (3, 1), (3, 1, 1, 1), (3, 2)], ids=["flat", "column", "4d", "tiled"]
)
def test_from_hmmlearn_takes_spherical_variances_in_every_shape_hmmlearn_accepts(shape):
    variances = np.array([0.5, 1.5, 2.5])
    covars = np.broadcast_to(variances.reshape(3, *([1] * (len(shape) - 1))), shape).copy()
    ours = HMM.from_hmmlearn(_assigned_gaussian(covars))
    np.testing.assert_allclose(ours.emission.components.covariance_storage.numpy(), variances)
    x = np.random.default_rng(0).normal(size=(20, 2))
    # hmmlearn accepts the (3, 1, 1, 1) shape but cannot score with it; score with (3,).
    expected = _assigned_gaussian(variances).score(x)
    np.testing.assert_allclose(ours.score([x]), expected, rtol=1e-10)


@pytest.mark.parametrize("family", ["gaussian", "categorical", "poisson", "gmm"])
def test_from_hmmlearn_converts_models_with_directly_assigned_parameters(family):
    rng = np.random.default_rng(5)
    if family == "gaussian":
        reference = _assigned_gaussian(_spd(rng, 3, 2), "full")
        x = rng.normal(size=(25, 2))
    elif family == "categorical":
        reference = hmmlearn_hmm.CategoricalHMM(3, init_params="")
        reference.emissionprob_ = _probs(rng, 3, 4)
        x = rng.integers(0, 4, size=(25, 1))
    elif family == "poisson":
        reference = hmmlearn_hmm.PoissonHMM(3, init_params="")
        reference.lambdas_ = rng.uniform(1, 5, size=(3, 2))
        x = rng.poisson(3, size=(25, 2))
    else:
        reference = hmmlearn_hmm.GMMHMM(3, n_mix=2, covariance_type="diag", init_params="")
        reference.weights_ = _probs(rng, 3, 2)
        reference.means_ = rng.normal(size=(3, 2, 2))
        reference.covars_ = rng.uniform(0.5, 2, size=(3, 2, 2))
        x = rng.normal(size=(25, 2))
    if family != "gaussian":
        reference.startprob_ = _probs(rng, 3)
        reference.transmat_ = _probs(rng, 3, 3)
    assert "n_features" not in vars(reference) or reference.n_features is None
    ours = HMM.from_hmmlearn(reference)
    sequence = x[:, 0] if family == "categorical" else x
    np.testing.assert_allclose(ours.score([sequence]), reference.score(x), rtol=1e-10)


def _multinomial_reference(n_iter=1):
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # its "has undergone changes" notice
    reference = hmmlearn_hmm.MultinomialHMM(
        2, n_trials=5, n_iter=n_iter, tol=-np.inf, init_params="", implementation="scaling"
    )
    reference.startprob_ = np.array([0.6, 0.4])
    reference.transmat_ = np.array([[0.8, 0.2], [0.3, 0.7]])
    reference.emissionprob_ = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    return reference


def test_multinomial_hmm_converts_and_refits_like_hmmlearn(tmp_path):
    reference = _multinomial_reference(N_ITER)
    assert "n_features" not in vars(reference)
    data, _ = reference.sample(240, random_state=0)
    lengths = [80] * 3
    ours = HMM.from_hmmlearn(reference, max_iter=N_ITER, tol=0.0)
    assert ours.family == "multinomial" and ours.n_trials == 5
    sequences = list(data.reshape(3, 80, 3))
    np.testing.assert_allclose(ours.score(sequences), reference.score(data, lengths), rtol=1e-10)
    paths, _ = ours.viterbi(sequences)
    assert paths.reshape(-1).tolist() == reference.predict(data, lengths).tolist()
    # EM from the same start: hmmlearn's m-step is the maximum-likelihood one, as probgen's.
    reference.emissionprob_ = np.array([[0.3, 0.3, 0.4], [0.4, 0.2, 0.4]])
    ours.set_parameters(emission_probs=reference.emissionprob_)
    reference.fit(data, lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(sequences, warm_start=True)
    np.testing.assert_allclose(ours.emission_probs.numpy(), reference.emissionprob_, atol=1e-9)
    np.testing.assert_allclose(ours.transition_probs.numpy(), reference.transmat_, atol=1e-9)
    np.testing.assert_allclose(ours.score(sequences), reference.score(data, lengths), rtol=RTOL)
    # Sampling draws n_trials counts per step; the model round-trips through a file and back.
    draws = ours.sample(4, length=6, seed=1)
    assert draws.shape == (4, 6, 3) and bool((draws.sum(-1) == 5).all())
    ours.save(tmp_path / "multinomial.pg")
    loaded = probgen.load(tmp_path / "multinomial.pg")
    np.testing.assert_allclose(loaded.score(sequences), ours.score(sequences), rtol=1e-12)
    back = ours.to_hmmlearn()
    np.testing.assert_allclose(back.score(data, lengths), ours.score(sequences), rtol=1e-10)


def test_covariance_prior_is_added_to_every_entry_as_in_hmmlearn():
    # One state, full covariance: the m-step is (prior + scatter) / weight entrywise, so the
    # off-diagonal entries carry the prior too (an identity prior would leave them alone).
    x = torch.tensor([[0.0, 1.0], [2.0, -1.0], [1.0, 3.0], [-1.0, 0.0]], dtype=torch.float64)
    model = HMM(1, "gaussian", covariance="full", covariance_prior=0.5).double()
    model.set_parameters(means=[[0.0, 0.0]], covariances=[[[1.0, 0.0], [0.0, 1.0]]])
    statistics, _ = model.e_step([x])
    model.m_step(statistics)
    centred = x - x.mean(0)
    expected = (0.5 + centred.t() @ centred) / 4
    torch.testing.assert_close(model.covariances[0], expected)


def test_from_hmmlearn_refuses_priors_probgen_cannot_carry_over():
    reference = _assigned_gaussian(np.array([0.5, 1.0, 2.0]))
    reference.covars_prior = np.array([0.1, 0.2, 0.3])  # one prior per state
    with pytest.raises(DataError, match="scalar covars_prior"):
        HMM.from_hmmlearn(reference)
    reference.covars_prior, reference.means_weight = 1e-2, 1.0
    with pytest.raises(DataError, match="means_weight"):
        HMM.from_hmmlearn(reference)
