"""probgen.GAN's stabilising options: the R1 penalty and the spectrally normalised discriminator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import probgen
from probgen.core.errors import DataError
from probgen.gan import GAN, r1_penalty
from probgen.gan.model import _discriminator_step
from probgen.gan.networks import DCGANDiscriminator, MLPDiscriminator


def _small(**overrides):
    settings = dict(latent_dim=2, hidden_dims=(16, 16), n_epochs=2, batch_size=32, seed=0)
    settings.update(overrides)
    return GAN(2, **settings)


def _largest_singular_values(net: nn.Module) -> list[float]:
    """The spectral norm of each linear / convolution weight, as the layer uses it."""
    values = []
    for layer in net.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            weight = layer.weight.detach().reshape(layer.weight.shape[0], -1)
            values.append(float(torch.linalg.matrix_norm(weight, ord=2)))
    return values


def test_r1_penalty_equals_finite_differences():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(5, 3, dtype=torch.float64)
    critic = critic.double()
    eps = 1e-6
    squared = torch.zeros(5, dtype=torch.float64)
    for j in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[j] = eps
        with torch.no_grad():
            slope = (critic(x + step) - critic(x - step)).squeeze(-1) / (2 * eps)
        squared += slope**2
    penalty = r1_penalty(lambda v: critic(v).squeeze(-1), x)
    assert float(penalty.detach()) == pytest.approx(float(squared.mean()), rel=1e-6)
    # differentiable in the critic's weights (it is added to the discriminator's loss)
    penalty.backward()
    assert critic[0].weight.grad is not None and float(critic[0].weight.grad.abs().sum()) > 0


def test_r1_weight_adds_half_gamma_times_the_penalty_to_the_discriminator_loss():
    x = torch.randn(32, 2)
    plain, penalised = _small(pack=2), _small(pack=2, r1_weight=4.0)
    penalised.load_state_dict(plain.state_dict())
    torch.manual_seed(5)
    base = _discriminator_step(plain, (x,))
    torch.manual_seed(5)
    total = _discriminator_step(penalised, (x,))
    real_packed = x.reshape(16, 4)
    expected = r1_penalty(plain._packed_critic(None), real_packed)
    expected = float(expected.detach())
    assert float((total - base).detach()) == pytest.approx(0.5 * 4.0 * expected, rel=1e-5)
    assert expected > 0
    fitted = _small(r1_weight=1.0).fit(x)
    assert fitted.history_[-1]["r1_penalty"] > 0
    assert "r1_penalty" not in _small().fit(x).history_[-1]


def test_spectral_norm_bounds_every_discriminator_weight_and_survives_save_load(tmp_path):
    x = torch.randn(64, 2)
    normalised = _small(spectral_norm=True, n_epochs=10).fit(x)
    values = _largest_singular_values(normalised.discriminator)
    assert len(values) == 3
    assert values == pytest.approx([1.0] * 3, abs=0.05)
    # Without the option, the weights keep their own scale.
    plain = _largest_singular_values(_small(n_epochs=10).fit(x).discriminator)
    assert max(abs(v - 1.0) for v in plain) > 0.2
    normalised.save(tmp_path / "gan.probgen")
    loaded = probgen.load(tmp_path / "gan.probgen")
    assert loaded.spectral_norm is True and loaded.get_config() == normalised.get_config()
    assert torch.equal(loaded.sample(4, seed=1), normalised.sample(4, seed=1))
    assert torch.equal(loaded.discriminator(x), normalised.discriminator(x))


def test_spectral_norm_of_the_dcgan_discriminator():
    torch.manual_seed(0)
    net = DCGANDiscriminator((1, 8, 8), width=4, pack=2, spectral_norm=True)
    images = torch.rand(6, 2, 8, 8)
    for _ in range(30):  # power iterations run in training-mode forward passes
        net(images)
    assert _largest_singular_values(net) == pytest.approx([1.0, 1.0], abs=0.05)
    assert max(abs(v - 1) for v in _largest_singular_values(MLPDiscriminator(2, (16,)))) > 0.2


def test_bad_options_name_the_argument():
    with pytest.raises(DataError, match="r1_weight"):
        _small(r1_weight=-1.0)
    with pytest.raises(DataError, match="spectral_norm"):
        _small(spectral_norm="yes")
