"""HMM against hmmlearn (the reference library) and Pyro, in float64."""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hmmlearn_hmm

from probgen.hmm.model import HMM

RTOL = 1e-6


def _random_probs(rng, *shape):
    values = rng.uniform(0.1, 1.0, size=shape)
    return values / values.sum(-1, keepdims=True)


def _random_spd(rng, n, d):
    factors = rng.normal(size=(n, d, d))
    return factors @ factors.transpose(0, 2, 1) + d * np.eye(d)


def _hmmlearn_model(family: str, covariance: str, rng) -> tuple[object, np.ndarray]:
    """A random hmmlearn model of `family` with parameters set by hand, and data from it."""
    n_states, n_features, n_mix = 3, 2, 2
    common = dict(n_components=n_states, init_params="", params="")
    if family == "categorical":
        model = hmmlearn_hmm.CategoricalHMM(n_features=5, **common)
        model.emissionprob_ = _random_probs(rng, n_states, 5)
    elif family == "gaussian":
        model = hmmlearn_hmm.GaussianHMM(covariance_type=covariance, **common)
        model.n_features = n_features
        model.means_ = rng.normal(scale=2.0, size=(n_states, n_features))
        storage = {
            "diag": rng.uniform(0.5, 2.0, size=(n_states, n_features)),
            "spherical": rng.uniform(0.5, 2.0, size=n_states),
            "full": _random_spd(rng, n_states, n_features),
            "tied": _random_spd(rng, 1, n_features)[0],
        }[covariance]
        model.covars_ = storage
    elif family == "gmm":
        model = hmmlearn_hmm.GMMHMM(n_mix=n_mix, covariance_type=covariance, **common)
        model.n_features = n_features
        model.weights_ = _random_probs(rng, n_states, n_mix)
        model.means_ = rng.normal(scale=2.0, size=(n_states, n_mix, n_features))
        model.covars_ = {
            "diag": rng.uniform(0.5, 2.0, size=(n_states, n_mix, n_features)),
            "spherical": rng.uniform(0.5, 2.0, size=(n_states, n_mix)),
            "full": _random_spd(rng, n_states * n_mix, n_features).reshape(
                n_states, n_mix, n_features, n_features
            ),
        }[covariance]
    else:
        model = hmmlearn_hmm.PoissonHMM(**common)
        model.n_features = n_features
        model.lambdas_ = rng.uniform(0.5, 8.0, size=(n_states, n_features))
    model.startprob_ = _random_probs(rng, n_states)
    model.transmat_ = _random_probs(rng, n_states, n_states)
    data, _ = model.sample(60, random_state=int(rng.integers(1 << 30)))
    return model, data


CASES = [
    ("categorical", "diag"),
    ("gaussian", "diag"),
    ("gaussian", "full"),
    ("gaussian", "spherical"),
    ("gaussian", "tied"),
    ("gmm", "diag"),
    ("gmm", "full"),
    ("gmm", "spherical"),
    ("poisson", "diag"),
]


@pytest.mark.parametrize("family,covariance", CASES)
def test_log_prob_posteriors_and_viterbi_match_hmmlearn(family, covariance):
    # crc32, not hash(): str hashes change between processes, and the case must not.
    rng = np.random.default_rng(zlib.crc32(f"{family}-{covariance}".encode()))
    reference, data = _hmmlearn_model(family, covariance, rng)
    ours = HMM.from_hmmlearn(reference)
    assert ours.dtype == torch.float64
    lengths = [25, 10, 25]
    pieces = np.split(data, np.cumsum(lengths)[:-1])
    sequences = [piece[:, 0] for piece in pieces] if family == "categorical" else pieces

    log_probs = ours.log_prob(sequences).numpy()
    expected = np.array([reference.score(piece) for piece in pieces])
    np.testing.assert_allclose(log_probs, expected, rtol=RTOL)

    posteriors = ours.posterior(sequences).numpy()
    paths, path_log_probs = ours.viterbi(sequences)
    for i, piece in enumerate(pieces):
        np.testing.assert_allclose(
            posteriors[i, : lengths[i]], reference.predict_proba(piece), rtol=RTOL, atol=1e-12
        )
        best_log_prob, best_path = reference.decode(piece, algorithm="viterbi")
        assert paths[i, : lengths[i]].tolist() == best_path.tolist()
        np.testing.assert_allclose(path_log_probs[i].item(), best_log_prob, rtol=RTOL)


@pytest.mark.parametrize("family,covariance", [("gaussian", "diag"), ("categorical", "diag")])
def test_em_from_the_same_start_matches_hmmlearn(family, covariance):
    rng = np.random.default_rng(3)
    generating, _ = _hmmlearn_model(family, covariance, rng)
    data, _ = generating.sample(400, random_state=4)
    lengths = [100] * 4
    start, _ = _hmmlearn_model(family, covariance, np.random.default_rng(5))
    ours = HMM.from_hmmlearn(start, max_iter=8, tol=0.0)
    if family == "gaussian":
        reference = hmmlearn_hmm.GaussianHMM(
            3,
            covariance_type="diag",
            n_iter=8,
            tol=-np.inf,
            init_params="",
            implementation="scaling",
        )
        reference.n_features = 2
        reference.means_ = start.means_.copy()
        reference.covars_ = start._covars_.copy()
        sequences = data.reshape(4, 100, 2)
    else:
        reference = hmmlearn_hmm.CategoricalHMM(
            3, n_features=5, n_iter=8, tol=-np.inf, init_params="", implementation="scaling"
        )
        reference.emissionprob_ = start.emissionprob_.copy()
        sequences = data.reshape(4, 100)
    reference.startprob_ = start.startprob_.copy()
    reference.transmat_ = start.transmat_.copy()
    reference.fit(data, lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(sequences, warm_start=True)
    assert ours.n_iter_ == 8
    np.testing.assert_allclose(ours.score(sequences), reference.score(data, lengths), rtol=RTOL)
    np.testing.assert_allclose(ours.transition_probs.numpy(), reference.transmat_, atol=1e-8)
    if family == "gaussian":
        np.testing.assert_allclose(ours.means.numpy(), reference.means_, rtol=RTOL, atol=1e-9)
        np.testing.assert_allclose(
            ours.covariances.numpy(), reference.covars_, rtol=RTOL, atol=1e-9
        )
    else:
        np.testing.assert_allclose(ours.emission_probs.numpy(), reference.emissionprob_, atol=1e-8)


@pytest.mark.parametrize("family,covariance", CASES)
def test_to_hmmlearn_round_trip(family, covariance):
    rng = np.random.default_rng(11)
    reference, data = _hmmlearn_model(family, covariance, rng)
    ours = HMM.from_hmmlearn(reference)
    back = ours.to_hmmlearn()
    np.testing.assert_allclose(back.score(data), reference.score(data), rtol=1e-10)


@pytest.mark.parametrize(
    "family,covariance",
    [("categorical", "diag"), ("gaussian", "full"), ("gmm", "diag"), ("poisson", "diag")],
)
@pytest.mark.parametrize("with_length", [False, True])
def test_as_pyro_discrete_hmm_has_the_same_log_prob(family, covariance, with_length):
    rng = np.random.default_rng(13)
    reference, data = _hmmlearn_model(family, covariance, rng)
    ours = HMM.from_hmmlearn(reference)
    sequences = torch.from_numpy(data[:40].reshape(2, 20, -1))
    if family == "categorical":
        sequences = sequences[..., 0]
    if family == "poisson":
        sequences = sequences.double()
    pyro_hmm = ours.as_pyro(length=20 if with_length else None)
    torch.testing.assert_close(pyro_hmm.log_prob(sequences), ours.log_prob(sequences))
