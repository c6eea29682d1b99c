"""StyleGAN: modulation identities, noise inputs, style mixing, truncation, errors, seeding."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.nn.functional as F

import probgen
from probgen.core.errors import DataError, NoDensityError
from probgen.gan.style_networks import (
    StyleLayer,
    SynthesisNetwork,
    demodulated_weights,
    modulated_conv2d,
)
from probgen.gan.stylegan import StyleGAN, _discriminator_step

TINY = dict(
    latent_dim=8,
    style_dim=8,
    n_mapping_layers=1,
    channels=8,
    discriminator_channels=8,
    n_upsamplings=1,
    batch_size=8,
    n_epochs=1,
    seed=0,
)


def _images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _tiny(**overrides) -> StyleGAN:
    return StyleGAN((1, 8, 8), **{**TINY, **overrides})


def test_modulated_convolution_equals_per_sample_demodulated_weights():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 9, 9, generator=g)
    weight = torch.randn(4, 5, 3, 3, generator=g)
    styles = torch.randn(3, 5, generator=g).exp()
    effective = demodulated_weights(weight, styles)
    # Each output channel's effective weights have unit norm, whatever the style.
    norms = effective.square().sum(dim=(2, 3, 4))
    assert torch.allclose(norms, torch.ones(3, 4), atol=1e-5)
    # StyleGAN2's grouped form: one convolution per sample with its own weights.
    expected = torch.stack(
        [F.conv2d(x[i : i + 1], effective[i], padding=1)[0] for i in range(3)]
    )
    assert torch.allclose(modulated_conv2d(x, weight, styles, padding=1), expected, atol=1e-5)
    plain = modulated_conv2d(x, weight, styles, demodulate=False, padding=1)
    assert torch.allclose(plain, F.conv2d(x * styles[:, :, None, None], weight, padding=1))


def test_demodulation_keeps_unit_variance_inputs_at_unit_variance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 16, 48, 48, generator=g)
    weight = torch.randn(6, 16, 3, 3, generator=g) * 3.0
    styles = torch.randn(4, 16, generator=g).exp()  # styles spread over orders of magnitude
    out = modulated_conv2d(x, weight, styles, padding=1)[:, :, 1:-1, 1:-1]  # away from padding
    variances = out.var(dim=(2, 3))
    assert abs(float(variances.mean()) - 1.0) < 0.03
    assert float((variances - 1).abs().max()) < 0.15
    raw = modulated_conv2d(x, weight, styles, demodulate=False, padding=1)[:, :, 1:-1, 1:-1]
    assert float(raw.var(dim=(2, 3)).mean()) > 10  # without it the scale follows the styles


def test_noise_enters_only_through_its_per_channel_scales():
    torch.manual_seed(0)
    layer = StyleLayer(4, 3, 5, upsample=False)
    x, w = torch.randn(2, 4, 6, 6), torch.randn(2, 5)
    noise_1, noise_2 = torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6)
    # At the start the scales are zero: noise has no effect.
    assert torch.equal(layer(x, w, noise_1), layer(x, w, noise_2))
    assert torch.equal(layer(x, w, noise_1), layer(x, w, None))
    with torch.no_grad():
        layer.noise_scale.copy_(torch.tensor([0.0, 0.5, -2.0]))
    out_1, out_2 = layer(x, w, noise_1), layer(x, w, noise_2)
    assert torch.equal(out_1[:, 0], out_2[:, 0])  # a zero-scale channel ignores the noise
    assert not torch.allclose(out_1[:, 1:], out_2[:, 1:])
    pre = layer.conv(x, w) + layer.bias[None, :, None, None]
    expected = F.leaky_relu(pre + layer.noise_scale[None, :, None, None] * noise_1, 0.2)
    assert torch.allclose(out_1, expected * math.sqrt(2.0), atol=1e-6)


def test_style_mixing_switches_styles_at_the_crossover_layer():
    torch.manual_seed(0)
    synthesis = SynthesisNetwork((1, 16, 16), style_dim=6, channels=8, n_upsamplings=2)
    assert synthesis.n_styles == 6
    noise = synthesis.noise(3)
    w1 = torch.randn(3, 6)
    crossover = 3
    ws = w1[:, None].repeat(1, 6, 1)
    mixed = ws.clone()
    mixed[:, crossover:] = torch.randn(3, 6)[:, None]
    _, before = synthesis(ws, noise, return_activations=True)
    _, after = synthesis(mixed, noise, return_activations=True)
    for layer in range(crossover):
        assert torch.equal(before[layer], after[layer])
    assert not torch.allclose(before[crossover], after[crossover])


def test_sample_mix_takes_later_styles_from_the_second_latent():
    model = _tiny().fit(_images())
    net = model.generator
    z, z_mix = torch.randn(4, 8), torch.randn(4, 8)
    ws = model._styles(net, z, z_mix=z_mix, crossover=2)
    assert torch.allclose(ws[:, :2], net.mapping(z)[:, None].expand(-1, 2, -1))
    assert torch.allclose(ws[:, 2:], net.mapping(z_mix)[:, None].expand(-1, 2, -1))
    assert not torch.equal(model.sample(4, seed=0, mix=2), model.sample(4, seed=0))
    with pytest.raises(DataError, match="mix"):
        model.sample(2, mix=model.n_styles)


def test_mixing_probability_is_honoured_in_training():
    never = _tiny(mixing_probability=0.0, n_epochs=2).fit(_images())
    always = _tiny(mixing_probability=1.0, n_epochs=2).fit(_images())
    assert all(h["mixed_fraction"] == 0.0 for h in never.history_)
    assert all(h["mixed_fraction"] == 1.0 for h in always.history_)


def test_truncation_zero_gives_the_average_style():
    model = _tiny().fit(_images())
    assert float(model.w_avg.abs().sum()) > 0  # tracked during training
    with torch.no_grad():
        for layer in model.generator.synthesis.layers:
            layer.noise_scale.zero_()
    images = model.sample(5, seed=0, truncation=0.0)
    assert torch.allclose(images, images[:1].expand_as(images), atol=1e-6)
    expected = model.synthesize(model.w_avg[None], noise=False)
    assert torch.allclose(images[:1], expected, atol=1e-6)
    assert not torch.allclose(model.sample(5, seed=0)[0], model.sample(5, seed=0)[1])


def test_r1_penalty_is_added_with_its_weight():
    model = _tiny(r1_weight=0.0)
    batch = (2 * _images(8) - 1,)
    model.train()
    torch.manual_seed(3)
    base = _discriminator_step(model, batch)
    model.r1_weight = 4.0
    torch.manual_seed(3)
    penalised = _discriminator_step(model, batch)
    real = batch[0].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.discriminator(real).sum(), real)
    r1 = grad.square().reshape(8, -1).sum(1).mean()
    assert torch.allclose(penalised - base, 0.5 * 4.0 * r1, atol=1e-5)


def test_seeded_fit_reproducible_save_load_resume_and_pyro(tmp_path):
    x = _images(16)
    first = _tiny(n_epochs=2, loss="wgan_gp", n_critic=2, ema=0.9).fit(x)
    second = _tiny(n_epochs=2, loss="wgan_gp", n_critic=2, ema=0.9).fit(x)
    assert torch.equal(first.sample(4, seed=1), second.sample(4, seed=1))
    assert "critic_gap" in first.history_[-1] and "gradient_penalty" in first.history_[-1]
    assert int(first.ema_updates) == 4  # one per generator step: 2 epochs x 2 minibatches
    path = tmp_path / "stylegan.probgen"
    first.save(path)
    loaded = probgen.load(path)
    assert torch.equal(loaded.sample(4, seed=1, mix=1), first.sample(4, seed=1, mix=1))
    resumed = _tiny(n_epochs=1).fit(x, checkpoint_dir=tmp_path / "ckpt")
    resumed = _tiny(n_epochs=2).fit(x, checkpoint_dir=tmp_path / "ckpt", resume=True)
    straight = _tiny(n_epochs=2).fit(x)
    assert torch.equal(resumed.sample(4, seed=0), straight.sample(4, seed=0))
    trace = pyro.poutine.trace(first.model).get_trace(3)
    assert trace.nodes["z"]["value"].shape == (3, 8)
    assert trace.nodes["x"]["value"].shape == (3, 1, 8, 8)


def test_bad_input_names_the_argument():
    model = _tiny()
    assert model.log_prob_kind is probgen.LogProbKind.NONE
    with pytest.raises(NoDensityError, match="samples"):
        model.log_prob(_images(2))
    with pytest.raises(DataError, match="data has shape"):
        model.fit(torch.rand(8, 1, 7, 7))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        model.fit(_images() * 255)
    with pytest.raises(DataError, match="n_upsamplings"):
        StyleGAN((1, 12, 12), n_upsamplings=3)
    with pytest.raises(DataError, match="mixing_probability"):
        StyleGAN((1, 8, 8), mixing_probability=1.5)
    with pytest.raises(DataError, match="unknown options"):
        model.fit(_images(), learning_rate=0.1)
    model.fit(_images())
    with pytest.raises(DataError, match="w_per_layer"):
        model.synthesize(torch.randn(2, 3, 8))
