"""AutoencoderDetector: reconstruction-error scores, options, seeds, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import probgen
from probgen.anomaly import AutoencoderDetector
from probgen.core.errors import DataError, NoDensityError, NotFittedError


def _plane_data(n=300, n_out=30, seed=0):
    """Points on a 2-D plane in 6-D (with a little noise), and points off the plane."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, -1.0], [0.0, 1.0, 1.0, -1.0, 0.0, 1.0]])
    normal = torch.randn(n, 2, generator=g) @ basis + 0.05 * torch.randn(n, 6, generator=g)
    outliers = torch.randn(n_out, 6, generator=g) * 1.5
    return normal, outliers


SMALL = dict(hidden_dims=(16,), code_dim=2, n_epochs=25, batch_size=64, learning_rate=1e-2)


@pytest.fixture(scope="module")
def fitted():
    normal, _ = _plane_data()
    return AutoencoderDetector(**SMALL, seed=0).fit(normal), normal


def test_detects_points_off_the_plane(fitted):
    detector, _ = fitted
    test_normal, outliers = _plane_data(n=200, n_out=40, seed=1)
    points = torch.cat([test_normal, outliers])
    truth = np.r_[np.zeros(200), np.ones(40)]
    assert roc_auc_score(truth, -detector.score_samples(points)) > 0.95


def test_score_is_minus_the_mean_squared_reconstruction_error(fitted):
    detector, normal = fitted
    expected = -((detector.reconstruct(normal) - normal) ** 2).mean(1)
    np.testing.assert_allclose(detector.score_samples(normal), expected.double().numpy(),
                               rtol=1e-5, atol=1e-7)
    labels = detector.predict(normal)
    assert (labels == -1).sum() == round(0.1 * len(normal))


def test_training_loss_decreases_and_settings_apply(fitted):
    detector, _ = fitted
    losses = [h["train_loss"] for h in detector.history_]
    assert len(losses) == SMALL["n_epochs"]
    assert losses[-1] < 0.5 * losses[0]
    assert detector.history_[0]["steps"] == int(np.ceil(300 / SMALL["batch_size"]))
    assert detector.encoder[-1].out_features == SMALL["code_dim"]
    assert detector.encoder[0].out_features == SMALL["hidden_dims"][0]


def test_standardize_measures_error_in_standard_units():
    normal, _ = _plane_data(seed=2)
    scaled = normal * torch.tensor([1.0, 100.0, 1.0, 1.0, 1.0, 1.0]) + 5.0
    detector = AutoencoderDetector(**SMALL, standardize=True, seed=0).fit(scaled)
    torch.testing.assert_close(detector.feature_mean, scaled.mean(0))
    torch.testing.assert_close(detector.feature_scale, scaled.std(0))
    standard = (scaled - scaled.mean(0)) / scaled.std(0)
    expected = -((detector.reconstruct(scaled) - scaled) / scaled.std(0)).pow(2).mean(1)
    np.testing.assert_allclose(detector.score_samples(scaled), expected.double().numpy(),
                               rtol=1e-4, atol=1e-6)
    plain = AutoencoderDetector(**SMALL, seed=0).fit(scaled)
    assert float(plain.feature_mean.abs().sum()) == 0.0
    assert not np.allclose(plain.score_samples(scaled), detector.score_samples(scaled))
    assert standard.std(0).allclose(torch.ones(6))


def test_weight_decay_shrinks_the_weights():
    normal, _ = _plane_data(seed=3)
    plain = AutoencoderDetector(**SMALL, seed=0).fit(normal)
    decayed = AutoencoderDetector(**SMALL, weight_decay=0.5, seed=0).fit(normal)

    def norm(d):
        return sum(float(p.detach().pow(2).sum()) for p in d.parameters())

    assert norm(decayed) < 0.8 * norm(plain)


def test_seeds_reproduce_and_differ():
    normal, _ = _plane_data(seed=4)
    first = AutoencoderDetector(**{**SMALL, "n_epochs": 3}, seed=1).fit(normal)
    again = AutoencoderDetector(**{**SMALL, "n_epochs": 3}, seed=1).fit(normal)
    other = AutoencoderDetector(**{**SMALL, "n_epochs": 3}, seed=2).fit(normal)
    np.testing.assert_array_equal(first.score_samples(normal), again.score_samples(normal))
    assert not np.allclose(first.score_samples(normal), other.score_samples(normal))
    slower = AutoencoderDetector(**{**SMALL, "n_epochs": 3, "learning_rate": 1e-4}, seed=1)
    assert not np.allclose(slower.fit(normal).score_samples(normal), first.score_samples(normal))


def test_save_load_round_trip(tmp_path, fitted):
    detector, normal = fitted
    path = tmp_path / "ae.probgen"
    detector.save(path)
    loaded = probgen.load(path)
    assert isinstance(loaded, AutoencoderDetector)
    assert loaded.offset_ == detector.offset_
    np.testing.assert_array_equal(loaded.score_samples(normal), detector.score_samples(normal))
    np.testing.assert_array_equal(loaded.predict(normal), detector.predict(normal))
    assert loaded.to("cpu").device.type == "cpu"
    from sklearn.base import clone, is_outlier_detector

    assert is_outlier_detector(loaded)
    copy = clone(loaded)
    assert copy.get_params() == loaded.get_params() and not copy.fitted_


def test_images_are_flattened_and_shapes_checked():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 4, 4, generator=g)
    detector = AutoencoderDetector(hidden_dims=(8,), code_dim=2, n_epochs=2, seed=0).fit(images)
    assert detector.input_shape == (1, 4, 4)
    assert detector.reconstruct(images[:3]).shape == (3, 1, 4, 4)
    with pytest.raises(DataError, match="X has examples of shape"):
        detector.score_samples(torch.rand(3, 16))
    with pytest.raises(DataError, match="X has shape"):
        detector.score_samples(torch.rand(16))
    built = AutoencoderDetector(input_shape=(5,), hidden_dims=(8,), code_dim=2)
    with pytest.raises(DataError, match="X has examples of shape"):
        built.fit(torch.rand(10, 4))


def test_errors_name_the_argument():
    with pytest.raises(DataError, match="code_dim"):
        AutoencoderDetector(code_dim=0)
    with pytest.raises(DataError, match="hidden_dims"):
        AutoencoderDetector(hidden_dims=(8, -1))
    with pytest.raises(DataError, match="contamination"):
        AutoencoderDetector(contamination=0.9)
    with pytest.raises(DataError, match="X contains NaN"):
        AutoencoderDetector().fit(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(NotFittedError):
        AutoencoderDetector().score_samples(torch.rand(3, 2))
    with pytest.raises(NoDensityError, match="score_samples"):
        AutoencoderDetector().log_prob(torch.rand(3, 2))
