"""DeepSVDD: centre from the initial forward pass, bias-free nets, objectives, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import probgen
from probgen.anomaly import DeepSVDD
from probgen.core.errors import DataError, NoDensityError

SMALL = dict(hidden_dims=(16,), rep_dim=4, n_epochs=20, batch_size=64, learning_rate=1e-2)


def _blobs(n=300, n_out=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(n, 5, generator=g) * 0.3 + 1.0
    outliers = torch.randn(n_out, 5, generator=g) * 0.3 - 1.0
    return normal, outliers


def test_center_is_the_mean_of_the_initial_network():
    normal, _ = _blobs()
    svdd = DeepSVDD(input_shape=(5,), **SMALL, center_eps=0.0, seed=3)
    with torch.no_grad():
        initial_mean = svdd.encoder(normal).mean(0)
    svdd.fit(normal)  # rebuilds the same seeded network before taking the centre
    torch.testing.assert_close(svdd.center, initial_mean, rtol=1e-5, atol=1e-6)
    eps = float(initial_mean.abs().max()) + 1.0  # pushes every entry out to +-eps
    pushed = DeepSVDD(**SMALL, center_eps=eps, seed=3).fit(normal)
    torch.testing.assert_close(pushed.center, eps * torch.sign(initial_mean))


def test_one_class_loss_decreases_and_detects_outliers():
    normal, outliers = _blobs()
    svdd = DeepSVDD(**SMALL, seed=0).fit(normal)
    losses = [h["train_loss"] for h in svdd.history_]
    assert len(losses) == SMALL["n_epochs"]
    assert losses[-1] < 0.5 * losses[0]
    test_normal, test_out = _blobs(n=200, seed=1)
    points = torch.cat([test_normal, test_out])
    truth = np.r_[np.zeros(200), np.ones(40)]
    assert roc_auc_score(truth, -svdd.score_samples(points)) > 0.95
    distances = ((svdd.encoder(points) - svdd.center) ** 2).sum(1).detach()
    np.testing.assert_allclose(svdd.score_samples(points), -distances.double().numpy(),
                               rtol=1e-5)
    assert float(svdd.radius) == 0.0
    assert (svdd.predict(normal) == -1).sum() == round(0.1 * len(normal))


def test_networks_have_no_bias():
    for architecture, data in (("mlp", torch.rand(16, 5)), ("conv", torch.rand(16, 1, 8, 8))):
        svdd = DeepSVDD(architecture=architecture, hidden_dims=(8,), rep_dim=4, n_epochs=1,
                        seed=0).fit(data)
        names = [name for name, _ in svdd.named_parameters()]
        assert names and not any("bias" in name for name in names)
        batch_norms = [m for m in svdd.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(not m.affine for m in batch_norms)
        assert len(batch_norms) == (2 if architecture == "conv" else 0)


def test_soft_boundary_leaves_about_nu_outside_and_waits_for_warm_up():
    normal, _ = _blobs(n=400)
    nu = 0.2
    svdd = DeepSVDD(**SMALL, objective="soft-boundary", nu=nu, warm_up_epochs=5, seed=0)
    svdd.fit(normal)
    radii = [h["radius"] for h in svdd.history_]
    assert radii[:5] == [0.0] * 5 and radii[5] > 0
    distances = ((svdd.encoder(normal) - svdd.center) ** 2).sum(1).detach()
    outside = float((distances > svdd.radius**2).double().mean())
    assert abs(outside - nu) <= 1.5 / len(normal)
    np.testing.assert_allclose(
        svdd.score_samples(normal), -(distances - svdd.radius**2).double().numpy(), rtol=1e-4,
        atol=1e-6,
    )
    never = DeepSVDD(**SMALL, objective="soft-boundary", warm_up_epochs=100, seed=0).fit(normal)
    assert float(never.radius) == 0.0


def test_pretraining_changes_the_network():
    normal, _ = _blobs(n=128)
    plain = DeepSVDD(**{**SMALL, "n_epochs": 1}, seed=0).fit(normal)
    pretrained = DeepSVDD(**{**SMALL, "n_epochs": 1}, pretrain_epochs=3, seed=0).fit(normal)
    assert not torch.allclose(plain.center, pretrained.center)


def test_seeds_and_save_load(tmp_path):
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    options = dict(architecture="conv", rep_dim=4, n_epochs=2, batch_size=16)
    first = DeepSVDD(**options, seed=5).fit(images)
    again = DeepSVDD(**options, seed=5).fit(images)
    other = DeepSVDD(**options, seed=6).fit(images)
    np.testing.assert_array_equal(first.score_samples(images), again.score_samples(images))
    assert not np.allclose(first.score_samples(images), other.score_samples(images))
    path = tmp_path / "svdd.probgen"
    first.save(path)
    loaded = probgen.load(path)
    np.testing.assert_array_equal(loaded.score_samples(images), first.score_samples(images))
    assert loaded.offset_ == first.offset_
    torch.testing.assert_close(loaded.center, first.center)
    # (H, W) images are taken as one channel
    flat_channel = DeepSVDD(**options, seed=5).fit(images[:, 0])
    np.testing.assert_allclose(flat_channel.score_samples(images[:, 0]),
                               first.score_samples(images), rtol=1e-5)


def test_errors_name_the_argument():
    with pytest.raises(DataError, match="objective"):
        DeepSVDD(objective="two-class")
    with pytest.raises(DataError, match="nu"):
        DeepSVDD(nu=0.0)
    with pytest.raises(DataError, match="architecture"):
        DeepSVDD(architecture="transformer")
    with pytest.raises(DataError, match="pretrain_epochs"):
        DeepSVDD(pretrain_epochs=-1)
    with pytest.raises(DataError, match="architecture='conv'"):
        DeepSVDD(architecture="conv").fit(torch.rand(8, 5))
    with pytest.raises(NoDensityError):
        DeepSVDD().log_prob(torch.rand(2, 2))


def test_training_settings_are_used():
    normal, _ = _blobs(n=128)
    base = dict(SMALL, n_epochs=2)
    reference = DeepSVDD(**base, seed=0).fit(normal)
    assert reference.history_[0]["steps"] == 2  # 128 examples in batches of 64
    assert DeepSVDD(**{**base, "batch_size": 16}, seed=0).fit(normal).history_[0]["steps"] == 8
    for change in ({"learning_rate": 1e-3}, {"weight_decay": 10.0}, {"hidden_dims": (8,)}):
        other = DeepSVDD(**{**base, **change}, seed=0).fit(normal)
        assert not np.allclose(other.score_samples(normal), reference.score_samples(normal))


@pytest.mark.gpu
def test_detectors_fit_and_score_on_cuda():
    from probgen.anomaly import AutoencoderDetector

    normal, outliers = _blobs()
    for detector in (DeepSVDD(**SMALL, seed=0), AutoencoderDetector(n_epochs=5, seed=0)):
        detector.to("cuda").fit(normal)
        assert detector.device.type == "cuda"
        scores = detector.score_samples(torch.cat([normal, outliers]))
        assert np.isfinite(scores).all() and (detector.predict(normal) == -1).sum() == 30
