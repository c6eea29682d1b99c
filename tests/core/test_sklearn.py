"""scikit-learn interoperability: `get_params` / `set_params` / `score` on every probgen Model.

`clone`, `GridSearchCV` and `cross_val_score` work on probgen models, with the mean held-out
`log_prob` as the score (higher is better).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

import probgen
from probgen.core.contract import LogProbKind, Model
from probgen.core.errors import DataError, NoDensityError

pytestmark = pytest.mark.filterwarnings("ignore::probgen.core.errors.ConvergenceWarning")


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = np.array([[-6.0, 0.0], [6.0, 0.0], [0.0, 8.0]])
    points = np.concatenate([center + rng.normal(size=(150, 2)) for center in centers])
    rng.shuffle(points)
    return points


@pytest.fixture(scope="module")
def rolls() -> list[np.ndarray]:
    from probgen.recipes import hmm_casino

    return [hmm_casino.simulate(60, seed=seed)[0].numpy() for seed in range(16)]


def casino_hmm(n_states: int = 2) -> probgen.HMM:
    return probgen.HMM(n_states, emission="categorical", n_symbols=6, max_iter=30, seed=0)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(probgen.GaussianMixture(2, covariance="diag", seed=3), id="GaussianMixture"),
        pytest.param(casino_hmm(3), id="HMM"),
    ],
)
def test_clone_rebuilds_an_unfitted_copy_with_the_same_settings(model):
    copy = clone(model)
    assert type(copy) is type(model) and copy is not model
    assert copy.get_params() == model.get_params()
    assert not copy.fitted_


def test_grid_search_picks_three_components_for_three_blobs(blobs):
    search = GridSearchCV(
        probgen.GaussianMixture(1, covariance="full", seed=0),
        {"n_components": [1, 2, 3, 4, 5]},
        cv=KFold(3, shuffle=True, random_state=0),
    )
    search.fit(blobs)
    assert search.best_params_ == {"n_components": 3}
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert len(search.best_estimator_.weights) == 3


def test_grid_search_and_cross_validation_over_hmm_states_on_sequences(rolls):
    search = GridSearchCV(casino_hmm(1), {"n_states": [1, 2]}, cv=KFold(2))
    search.fit(rolls)
    assert search.best_params_["n_states"] in (1, 2)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.n_states == search.best_params_["n_states"]
    scores = cross_val_score(casino_hmm(2), rolls, cv=2)
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_score_is_the_mean_log_prob(blobs):
    model = probgen.GaussianMixture(3, seed=0).fit(blobs)
    expected = model.log_prob(blobs).double().mean().item()
    assert model.score(blobs) == pytest.approx(expected)


def test_set_params_rejects_an_unknown_name():
    with pytest.raises(DataError, match="n_componets"):
        probgen.GaussianMixture(2).set_params(n_componets=3)
    with pytest.raises(DataError, match="n_hidden"):
        casino_hmm().set_params(n_hidden=3)


def test_set_params_changes_the_setting_that_fit_uses(blobs, rolls):
    mixture = probgen.GaussianMixture(2, seed=0)
    assert mixture.set_params(n_components=3) is mixture
    mixture.fit(blobs)
    assert mixture.n_components == 3 and len(mixture.weights) == 3
    hmm = casino_hmm(2).set_params(n_states=3, max_iter=5)
    hmm.fit(rolls)
    assert hmm.transition_probs.shape == (3, 3)
    assert hmm.n_iter_ <= 5


class _Sampler(Model):
    """A toy model with no density (like a GAN): it can only sample."""

    log_prob_kind = LogProbKind.NONE

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def fit(self, data):
        self._mark_fitted()
        self.history_ = []
        return self

    def sample(self, n, *, seed=None):
        return self.scale * torch.randn(n, generator=self.make_generator(seed))


def test_score_without_a_density_raises_no_density_error():
    model = _Sampler(2.0).fit(None)
    assert model.get_params() == {"scale": 2.0}
    with pytest.raises(NoDensityError):
        model.score(torch.zeros(4))
