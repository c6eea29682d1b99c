"""probgen.GAN: contract details, conditional sampling, seeding, divergence, EMA, resume, errors."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from probgen.core.errors import DataError, FitError, NoDensityError, NotFittedError
from probgen.fitting.checkpoint import load_checkpoint
from probgen.gan import GAN
from probgen.gan.stability import ema_decay


def _blobs(n=128, seed=0):
    """Two well-separated 2-D clusters, class 0 at (-4, 0) and class 1 at (4, 0)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 2, generator=g)
    x[:, 0] += 8.0 * labels - 4.0
    return x, labels


def _small(**overrides):
    settings = dict(latent_dim=2, hidden_dims=(16,), n_epochs=2, batch_size=32, seed=0)
    settings.update(overrides)
    return GAN(2, **settings)


def test_no_density_and_not_fitted():
    gan = _small()
    with pytest.raises(NoDensityError, match="probgen.evaluate"):
        gan.log_prob(torch.zeros(3, 2))
    with pytest.raises(NotFittedError):
        gan.sample(2)
    assert gan.log_prob_kind.value == "none"


def test_conditional_samples_obey_labels():
    x, labels = _blobs(256)
    gan = GAN(2, latent_dim=2, hidden_dims=(32, 32), n_classes=2, n_epochs=40, batch_size=64,
              generator_learning_rate=2e-3, discriminator_learning_rate=2e-3, seed=0)
    gan.fit(x, labels=labels)
    left = gan.sample(200, labels=0, seed=1)
    right = gan.sample(200, labels=torch.ones(200, dtype=torch.long), seed=1)
    assert (left[:, 0] < 0).float().mean() > 0.95
    assert (right[:, 0] > 0).float().mean() > 0.95
    mixed = gan.sample(4, labels=[0, 1, 0, 1], seed=2)
    assert (mixed[:, 0] < 0).tolist() == [True, False, True, False]


def test_seeded_fits_are_identical_and_history_has_diagnostics():
    x = torch.randn(96, 2)
    first, second = _small(pack=2, n_critic=2).fit(x), _small(pack=2, n_critic=2).fit(x)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in first.history_]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in second.history_]
    record = first.history_[-1]
    assert set(record["losses"]) == set(record["grad_norms"]) == {"discriminator", "generator"}
    assert all(v > 0 for v in record["grad_norms"].values())
    assert 0.0 <= record["discriminator_accuracy"] <= 1.0
    assert torch.equal(first.sample(5, seed=3), second.sample(5, seed=3))
    other = _small(pack=2, n_critic=2, seed=1).fit(x)
    assert not torch.equal(first.sample(5, seed=3), other.sample(5, seed=3))


def test_wgan_gp_records_critic_gap_and_n_critic_and_learning_rates(tmp_path):
    x = torch.randn(64, 2)
    gan = _small(loss="wgan_gp", n_critic=3, n_epochs=1, generator_learning_rate=1e-4,
                 discriminator_learning_rate=3e-4)
    gan.fit(x, checkpoint_dir=tmp_path)
    record = gan.history_[0]
    assert {"critic_gap", "gradient_penalty", "max_abs_score"} <= set(record)
    assert "discriminator_accuracy" not in record
    tensors, meta = load_checkpoint(tmp_path)
    steps = {
        name: int(value) for name, value in tensors.items() if name.endswith("/step")
    }
    d_steps = {v for k, v in steps.items() if k.startswith("optimizer:discriminator/")}
    g_steps = {v for k, v in steps.items() if k.startswith("optimizer:generator/")}
    assert d_steps == {3 * 2} and g_steps == {2}  # 2 minibatches, n_critic = 3
    groups = meta["optimizers"]
    assert groups["optimizer:discriminator"]["param_groups"][0]["lr"] == 3e-4
    assert groups["optimizer:generator"]["param_groups"][0]["lr"] == 1e-4
    assert groups["optimizer:generator"]["param_groups"][0]["betas"] == [0.5, 0.999]


def test_huge_learning_rate_raises_fit_error_and_keeps_finite_parameters():
    x = torch.randn(128, 2) * 10
    gan = _small(generator_learning_rate=1e6, discriminator_learning_rate=1e6, n_epochs=5,
                 loss="wgan_gp", gp_weight=0.0)
    with pytest.raises(FitError, match="diverged"):
        gan.fit(x)
    assert all(bool(torch.isfinite(v).all()) for v in gan.state_dict().values())


def test_exploding_scores_stop_the_fit_with_the_epoch_start_parameters():
    x = torch.randn(64, 2)
    gan = _small(divergence_threshold=1e-3, n_epochs=3)
    start = {k: v.clone() for k, v in gan.state_dict().items()}
    with pytest.raises(FitError, match="exploded"):
        gan.fit(x)
    for name, value in gan.state_dict().items():
        assert torch.equal(value, start[name]), name


def test_ema_generator_is_averaged_and_used_for_sampling():
    x = torch.randn(64, 2)
    gan = _small(ema=0.9, n_epochs=3).fit(x)
    assert int(gan.ema_updates) == 3 * 2
    weights = gan.generator.net[0].weight
    averaged = gan.generator_ema.net[0].weight
    assert not torch.equal(weights, averaged)
    z = torch.randn(5, 2, generator=gan.make_generator(4))
    assert torch.equal(gan.sample(5, seed=4), gan.generator_ema(z))
    assert not torch.equal(gan.sample(5, seed=4), gan.generator(z).detach())
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11) and ema_decay(0.9, 10**6) == 0.9


def test_resumed_fit_equals_uninterrupted(tmp_path):
    x = torch.randn(80, 2)
    straight = _small(ema=0.9, pack=2, n_epochs=3).fit(x)
    _small(ema=0.9, pack=2, n_epochs=3).fit(x, n_epochs=1, checkpoint_dir=tmp_path)
    resumed = _small(ema=0.9, pack=2, n_epochs=3).fit(x, checkpoint_dir=tmp_path, resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(resumed.history_) == 3
    assert resumed.history_[0]["discriminator_accuracy"] == straight.history_[0][
        "discriminator_accuracy"
    ]


def test_generator_is_a_pyro_program_matching_sample():
    gan = _small(n_classes=2).fit(*_blobs(64))
    torch.manual_seed(11)
    trace = pyro.poutine.trace(gan.model).get_trace(6, labels=1)
    assert trace.nodes["z"]["type"] == "sample" and not trace.nodes["z"]["is_observed"]
    assert trace.nodes["z"]["value"].shape == (6, 2)
    x = trace.nodes["x"]["value"]
    assert trace.nodes["x"]["infer"].get("_deterministic") is True
    assert torch.equal(x, gan.sample(6, labels=1, seed=11))
    assert math.isfinite(float(trace.log_prob_sum()))


def test_dcgan_images_and_device_and_save(tmp_path):
    import probgen

    images = torch.rand(32, 1, 8, 8)
    gan = GAN((1, 8, 8), architecture="dcgan", latent_dim=4, width=4, pack=2, loss="hinge",
              n_epochs=1, batch_size=16, seed=0, ema=0.99).fit(images)
    draws = gan.sample(3, seed=0)
    assert draws.shape == (3, 1, 8, 8) and bool(((draws >= 0) & (draws <= 1)).all())
    assert gan.to("cpu") is gan
    gan.save(tmp_path / "gan.probgen")
    loaded = probgen.load(tmp_path / "gan.probgen")
    assert torch.equal(loaded.sample(3, seed=0), draws)
    assert loaded.history_ == gan.history_ and loaded.get_config() == gan.get_config()


def test_bad_input_names_the_argument():
    with pytest.raises(DataError, match="pack=3 does not divide batch_size=32"):
        _small(pack=3)
    with pytest.raises(DataError, match="pack=4 does not divide batch_size=30"):
        _small(pack=4).fit(torch.randn(64, 2), batch_size=30)
    with pytest.raises(DataError, match="needs data_shape \\(C, H, W\\)"):
        GAN((8, 8), architecture="dcgan")
    dcgan = GAN((1, 8, 8), architecture="dcgan", width=4, latent_dim=2, batch_size=8)
    with pytest.raises(DataError, match="data must hold images with values in \\[0, 1\\]"):
        dcgan.fit(torch.rand(16, 1, 8, 8) * 255)
    with pytest.raises(DataError, match="data"):
        dcgan.fit(torch.rand(16, 1, 28, 28))
    with pytest.raises(DataError, match="sides that are even"):
        GAN((1, 5, 5), architecture="dcgan")
    conditional = _small(n_classes=2)
    x, labels = _blobs(32)
    with pytest.raises(DataError, match="labels"):
        conditional.fit(x, labels=labels + 1)
    with pytest.raises(DataError, match="labels are required"):
        conditional.fit(x)
    conditional.fit(x, labels=labels, n_epochs=1)
    with pytest.raises(DataError, match="labels"):
        conditional.sample(3, labels=2)
    with pytest.raises(DataError, match="labels given, but the GAN has no n_classes"):
        _small().fit(x, labels=labels)
    with pytest.raises(DataError, match="unknown options \\['learning_rate'\\]"):
        _small().fit(x, learning_rate=1e-3)
    with pytest.raises(DataError, match="loss must be one of"):
        _small(loss="lsgan")
    with pytest.raises(DataError, match="ema must be None or a decay"):
        _small(ema=1.5)


def test_lr_schedule_setting_decays_both_learning_rates_and_is_saved(tmp_path):
    x, _ = _blobs(64)
    constant = _small(n_epochs=3, generator_learning_rate=1e-3).fit(x)
    assert {h["lrs"]["generator"] for h in constant.history_} == {1e-3}
    decayed = _small(n_epochs=3, generator_learning_rate=1e-3, lr_schedule="exponential").fit(x)
    # "exponential" reaches a tenth of the starting rate in the last of 3 epochs: 10**-0.5 per
    # epoch, for both optimisers (the history records the rate each epoch ran at).
    for name, start in (("generator", 1e-3), ("discriminator", 2e-4)):
        rates = [h["lrs"][name] for h in decayed.history_]
        assert rates == pytest.approx([start * 0.1 ** (k / 2) for k in (0, 1, 2)])
    # fit's own option overrides the setting
    overridden = _small(n_epochs=2, lr_schedule="exponential").fit(x, lr_schedule=None)
    assert {h["lrs"]["generator"] for h in overridden.history_} == {2e-4}
    decayed.save(tmp_path / "gan.probgen")
    import probgen

    assert probgen.load(tmp_path / "gan.probgen").lr_schedule == "exponential"
    with pytest.raises(DataError, match="lr_schedule"):
        _small(lr_schedule="linear")
