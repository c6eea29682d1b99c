"""WaveGAN: phase shuffle, shapes, the no-density contract, options, a short fit, bad input."""

from __future__ import annotations

import pytest
import torch

from probgen.core.errors import DataError, NoDensityError
from probgen.core.testing import check_density
from probgen.gan.wavegan import WaveGAN, phase_shuffle

SMALL = dict(latent_dim=4, width=4, n_layers=2, n_critic=1, batch_size=8, seed=0)


def _waves(n: int = 32, length: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(n, 1, generator=generator) * 6.28
    return 0.5 * torch.sin(torch.arange(length) * 0.4 + phase)


def test_phase_shuffle_shifts_each_example_with_reflection():
    x = torch.randn(50, 3, 10)
    shuffled = phase_shuffle(x, 2, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2), mode="reflect")
    shifts = []
    for i in range(50):
        # out[t] = x[t - k]: the window of the reflected input starting at 2 - k.
        matches = [
            k for k in range(-2, 3) if torch.equal(shuffled[i], padded[i, :, 2 - k : 12 - k])
        ]
        assert len(matches) == 1
        shifts.append(matches[0])
    assert set(shifts) == {-2, -1, 0, 1, 2}
    assert torch.equal(phase_shuffle(x, 0), x)


def test_shapes_range_and_no_density():
    gan = WaveGAN(256, **SMALL)
    assert gan.event_shape == torch.Size([256])
    gan._mark_fitted()
    waves = gan.sample(5, seed=1)
    assert waves.shape == (5, 256) and bool((waves.abs() <= 1).all())
    assert torch.equal(waves, gan.sample(5, seed=1))
    with pytest.raises(NoDensityError, match="WaveNet"):
        gan.log_prob(waves)


def test_contract_suite_for_a_model_without_density():
    report = check_density(WaveGAN(64, **SMALL), _waves(), fit_options={"n_epochs": 1})
    assert report["log_prob_kind"] == "none" and report["no_density_raises"]
    assert report["sample_shape"] == (200, 64)


def test_phase_shuffle_acts_in_the_discriminator_only_while_training():
    gan = WaveGAN(64, **{**SMALL, "phase_shuffle": 1})
    x = _waves(16)[:, None, :]
    gan.discriminator.eval()
    assert torch.equal(gan.discriminator(x), gan.discriminator(x))
    gan.discriminator.train()
    torch.manual_seed(0)
    assert not torch.equal(gan.discriminator(x), gan.discriminator(x))
    still = WaveGAN(64, **{**SMALL, "phase_shuffle": 0}).discriminator.train()
    assert torch.equal(still(x), still(x))


def test_loss_pack_and_ema_options_are_used():
    waves = _waves()
    hinge = WaveGAN(64, loss="hinge", **SMALL).fit(waves, n_epochs=1)
    assert "discriminator_accuracy" in hinge.history_[0]
    wgan = WaveGAN(64, **SMALL).fit(waves, n_epochs=1)
    assert {"critic_gap", "gradient_penalty"} <= set(wgan.history_[0])
    packed = WaveGAN(64, pack=2, **SMALL)
    assert packed.discriminator.downsample[0].in_channels == 2
    packed.fit(waves, n_epochs=1)
    averaged = WaveGAN(64, ema=0.9, **SMALL).fit(waves, n_epochs=2)
    z = torch.randn(3, 4)
    assert not torch.equal(averaged.generator_ema(z), averaged.generator(z))
    assert torch.equal(
        averaged.sample(3, seed=0),
        averaged.generator_ema(torch.randn(3, 4, generator=torch.Generator().manual_seed(0))),
    )


def test_a_short_fit_moves_the_waveform_level_towards_the_data():
    # Constant waveforms at 0.6: the generator (tanh output near 0 at first) must move up.
    data = torch.full((64, 64), 0.6)
    gan = WaveGAN(
        64,
        **{**SMALL, "loss": "hinge"},
        generator_learning_rate=2e-3,
        discriminator_learning_rate=2e-3,
    )
    gan._mark_fitted()
    before = (gan.sample(64, seed=0).mean() - 0.6).abs()
    gan.fit(data, n_epochs=8)
    after = (gan.sample(64, seed=0).mean() - 0.6).abs()
    assert after < before / 2


def test_save_and_load_keep_the_generator(tmp_path):
    from probgen.core.io import load

    gan = WaveGAN(64, ema=0.9, **SMALL).fit(_waves(), n_epochs=1)
    gan.save(tmp_path / "wavegan.probgen")
    restored = load(tmp_path / "wavegan.probgen")
    assert torch.equal(restored.sample(4, seed=3), gan.sample(4, seed=3))


def test_resumed_fit_equals_uninterrupted(tmp_path):
    waves = _waves()
    straight = WaveGAN(64, **SMALL).fit(waves, n_epochs=3)
    WaveGAN(64, **SMALL).fit(waves, n_epochs=1, checkpoint_dir=tmp_path)
    resumed = WaveGAN(64, **SMALL).fit(waves, n_epochs=3, checkpoint_dir=tmp_path, resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_input_names_the_argument():
    with pytest.raises(DataError, match="length"):
        WaveGAN(100, n_layers=2)
    with pytest.raises(DataError, match="phase_shuffle"):
        WaveGAN(64, n_layers=2, phase_shuffle=20)
    with pytest.raises(DataError, match="loss"):
        WaveGAN(64, n_layers=2, loss="bce")
    gan = WaveGAN(64, **SMALL)
    with pytest.raises(DataError, match="data"):
        gan.fit(torch.full((8, 64), 2.0))
    with pytest.raises(DataError, match="data"):
        gan.fit(torch.zeros(8, 32))
    with pytest.raises(DataError, match="unknown options"):
        gan.fit(_waves(), learning_rate=1.0)
    with pytest.raises(DataError, match="pack"):
        WaveGAN(64, **{**SMALL, "pack": 3})


@pytest.mark.gpu
def test_cuda_sampling_and_fit():
    gan = WaveGAN(64, **SMALL).to("cuda")
    gan.fit(_waves(), n_epochs=1)
    waves = gan.sample(4, seed=0)
    assert waves.device.type == "cuda" and torch.equal(waves, gan.sample(4, seed=0))
