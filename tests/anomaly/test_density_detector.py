"""DensityDetector and VAEDetector: scores are the model's own log_prob / bounds, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import probgen
from probgen.anomaly import DensityDetector, VAEDetector
from probgen.core.errors import DataError, NotFittedError


def _gaussian_with_outliers(n=300, n_out=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(n, 2, generator=g) * 0.5
    angles = torch.rand(n_out, generator=g) * 2 * torch.pi
    outliers = 4.0 * torch.stack([angles.cos(), angles.sin()], 1)
    return normal, outliers


@pytest.fixture(scope="module")
def fitted_gmm():
    normal, _ = _gaussian_with_outliers()
    return probgen.GaussianMixture(2, seed=0).fit(normal)


def test_score_is_the_mixture_log_prob(fitted_gmm):
    normal, outliers = _gaussian_with_outliers(seed=1)
    detector = DensityDetector(fitted_gmm).fit(normal)
    points = torch.cat([normal, outliers])
    np.testing.assert_allclose(
        detector.score_samples(points), fitted_gmm.log_prob(points).double().numpy(), rtol=1e-6
    )
    assert detector.score_kind == "exact"


def test_scoring_in_batches_equals_scoring_at_once(fitted_gmm):
    normal, _ = _gaussian_with_outliers(seed=2)
    detector = DensityDetector(fitted_gmm, fit_model="never").fit(normal)
    whole = detector.score_samples(normal)
    detector.scoring_batch_size = 7
    np.testing.assert_allclose(detector.score_samples(normal), whole, rtol=1e-6)


@pytest.mark.parametrize("contamination", [0.01, 0.05, 0.1, 0.25, 0.5])
def test_contamination_flags_that_fraction_of_training_data(fitted_gmm, contamination):
    normal, _ = _gaussian_with_outliers(n=400, seed=3)
    detector = DensityDetector(fitted_gmm, contamination=contamination, fit_model="never")
    labels = detector.fit_predict(normal)
    assert set(np.unique(labels)) <= {-1, 1}
    assert (labels == -1).sum() == round(contamination * len(normal))
    decision = detector.decision_function(normal)
    np.testing.assert_allclose(decision, detector.score_samples(normal) - detector.offset_)
    assert np.array_equal(labels == -1, decision < 0)


def test_predict_flips_when_contamination_changes(fitted_gmm):
    normal, _ = _gaussian_with_outliers(n=400, seed=4)
    low = DensityDetector(fitted_gmm, contamination=0.02, fit_model="never").fit(normal)
    high = DensityDetector(fitted_gmm, contamination=0.4, fit_model="never").fit(normal)
    assert high.offset_ > low.offset_
    between = (low.predict(normal) == 1) & (high.predict(normal) == -1)
    assert between.sum() == round(0.4 * 400) - round(0.02 * 400)
    low.set_contamination(0.4, normal)
    assert low.offset_ == pytest.approx(high.offset_)
    assert np.array_equal(low.predict(normal), high.predict(normal))


def test_fit_model_policy():
    normal, _ = _gaussian_with_outliers(seed=5)
    shifted = normal + 3.0
    model = probgen.GaussianMixture(1, seed=0)
    DensityDetector(model).fit(normal)  # "auto": an unfitted model is fitted
    mean = model.means.clone()
    torch.testing.assert_close(mean[0], normal.mean(0), rtol=1e-4, atol=1e-4)
    DensityDetector(model).fit(shifted)  # "auto": a fitted model is kept
    torch.testing.assert_close(model.means, mean)
    DensityDetector(model, fit_model="never").fit(shifted)
    torch.testing.assert_close(model.means, mean)
    DensityDetector(model, fit_model="always").fit(shifted)
    torch.testing.assert_close(model.means[0], shifted.mean(0), rtol=1e-4, atol=1e-4)
    with pytest.raises(DataError, match="fit_model"):
        DensityDetector(model, fit_model="sometimes")
    with pytest.raises(NotFittedError):
        DensityDetector(probgen.GaussianMixture(1), fit_model="never").fit(normal)


def test_flow_plugs_in_unchanged_and_ranks_outliers():
    normal, outliers = _gaussian_with_outliers(seed=6)
    flow = probgen.Flow(2, n_layers=2, hidden_dims=(16,), n_epochs=30, batch_size=64, seed=0)
    detector = DensityDetector(flow, contamination=0.05).fit(normal)
    test_normal, test_out = _gaussian_with_outliers(n=200, n_out=40, seed=7)
    points = torch.cat([test_normal, test_out])
    truth = np.r_[np.zeros(200), np.ones(40)]
    assert roc_auc_score(truth, -detector.score_samples(points)) > 0.95
    np.testing.assert_allclose(
        detector.score_samples(points), flow.log_prob(points).double().numpy(), rtol=1e-5
    )
    assert detector.score_kind == str(flow.log_prob_kind) == "exact"


def test_rbm_plugs_in_unchanged():
    g = torch.Generator().manual_seed(0)
    prototypes = torch.tensor([[1.0] * 6 + [0.0] * 6, [0.0] * 6 + [1.0] * 6])
    rows = prototypes[torch.randint(0, 2, (400,), generator=g)]
    flips = torch.rand(rows.shape, generator=g) < 0.05
    normal = (rows + flips.float()) % 2
    anomalies = torch.bernoulli(torch.full((40, 12), 0.5), generator=g)
    rbm = probgen.RBM(12, 4, n_epochs=30, learning_rate=0.1, seed=0)
    detector = DensityDetector(rbm).fit(normal[:300])
    points = torch.cat([normal[300:], anomalies])
    truth = np.r_[np.zeros(100), np.ones(40)]
    assert roc_auc_score(truth, -detector.score_samples(points)) > 0.95
    assert detector.score_kind == "exact"
    np.testing.assert_allclose(
        detector.score_samples(points), rbm.log_prob(points).double().numpy(), rtol=1e-5
    )


def test_models_without_density_are_refused():
    gan = probgen.GAN(2, latent_dim=2, hidden_dims=(8,))
    with pytest.raises(DataError, match="log_prob_kind 'none'"):
        DensityDetector(gan)
    with pytest.raises(DataError, match="model must have log_prob"):
        DensityDetector(object())
    with pytest.raises(DataError, match="vae must be a probgen VAE"):
        VAEDetector(probgen.GaussianMixture(1))


@pytest.mark.parametrize("bad", [0, 0.0, 0.6, -0.1, "0.1", True, float("nan")])
def test_bad_contamination_names_the_argument(bad):
    with pytest.raises(DataError, match="contamination"):
        DensityDetector(probgen.GaussianMixture(1), contamination=bad)


def test_not_fitted_detector_says_so(fitted_gmm):
    detector = DensityDetector(fitted_gmm)
    for method in (detector.score_samples, detector.decision_function, detector.predict):
        with pytest.raises(NotFittedError, match="fit"):
            method(torch.zeros(2, 2))


def test_sklearn_params_round_trip(fitted_gmm):
    detector = DensityDetector(fitted_gmm, contamination=0.2)
    assert detector.get_params()["contamination"] == 0.2
    detector.set_params(contamination=0.3)
    assert detector.contamination == 0.3 and detector.offset_ is None
    with pytest.raises(DataError, match="unknown"):
        detector.set_params(nonsense=1)
    assert detector.to("cpu") is detector
    from sklearn.base import is_outlier_detector

    assert is_outlier_detector(detector)


@pytest.fixture(scope="module")
def fitted_vae():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g) @ torch.randn(4, 4, generator=g)
    vae = probgen.VAE((4,), latent_dim=2, likelihood="gaussian", hidden_dims=(16,),
                      n_epochs=5, seed=0).fit(x)
    return vae, x


def test_vae_detector_scores_are_the_vae_bounds(fitted_vae):
    vae, x = fitted_vae
    elbo = VAEDetector(vae, estimator="elbo", n_samples=4, seed=3).fit(x)
    iwae = VAEDetector(vae, estimator="iwae", n_samples=32, seed=3).fit(x)
    assert (elbo.score_kind, iwae.score_kind) == ("lower_bound", "estimate")
    np.testing.assert_allclose(
        elbo.score_samples(x[:20]), vae.elbo(x[:20], n_samples=4, seed=3).double().numpy(),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        iwae.score_samples(x[:20]), vae.iwae(x[:20], k=32, seed=3).double().numpy(), rtol=1e-5
    )
    # The IWAE bound with k samples is never below the ELBO averaged over the same draws,
    # and changing n_samples changes the scores.
    assert iwae.score_samples(x).mean() > elbo.score_samples(x).mean()
    other = VAEDetector(vae, estimator="elbo", n_samples=8, seed=3).fit(x)
    assert not np.allclose(other.score_samples(x[:20]), elbo.score_samples(x[:20]))
    reseeded = VAEDetector(vae, estimator="elbo", n_samples=4, seed=4).fit(x)
    assert not np.allclose(reseeded.score_samples(x[:20]), elbo.score_samples(x[:20]))
    with pytest.raises(DataError, match="estimator"):
        VAEDetector(vae, estimator="exact")
