"""CycleGAN: its objective's identities, translation directions, errors, seeding, resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import probgen
from probgen.core.errors import DataError, NoDensityError, NotFittedError
from probgen.gan.cyclegan import CycleGAN

TINY = dict(channels=4, n_blocks=1, discriminator_channels=4, batch_size=8)


def _images(n: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, 8, 8, generator=torch.Generator().manual_seed(seed))


def _tiny(**overrides) -> CycleGAN:
    settings: dict = dict(TINY, seed=0, n_epochs=1)
    settings.update(overrides)
    return CycleGAN(settings.pop("image_shape", (1, 8, 8)), **settings)


def _generator_gradients(model: CycleGAN, a, b) -> list[torch.Tensor]:
    model.zero_grad()
    model.losses(a, b)["generator"].backward()
    return [p.grad.clone() for p in model.generators.parameters()]


def test_cycle_and_identity_losses_vanish_for_identity_generators():
    model = _tiny()
    a, b = _images(6), _images(6, seed=1)
    terms = {k: v.detach() for k, v in model.losses(a, b).items()}
    assert float(terms["cycle"]) > 0 and float(terms["identity"]) > 0
    model.generators["a_to_b"] = nn.Identity()
    model.generators["b_to_a"] = nn.Identity()
    terms = {k: v.detach() for k, v in model.losses(a, b).items()}
    assert float(terms["cycle"]) == 0.0
    assert float(terms["identity"]) == 0.0


def test_cycle_loss_is_the_l1_of_the_round_trips():
    model = _tiny()
    a, b = _images(5), _images(5, seed=1)
    g, f = model.generators["a_to_b"], model.generators["b_to_a"]
    sa, sb = 2 * a - 1, 2 * b - 1
    expected = (f(g(sa)) - sa).abs().mean() + (g(f(sb)) - sb).abs().mean()
    identity = F.l1_loss(g(sb), sb) + F.l1_loss(f(sa), sa)
    terms = model.losses(a, b)
    assert torch.allclose(terms["cycle"], expected, atol=1e-6)
    assert torch.allclose(terms["identity"], identity, atol=1e-6)
    total = terms["adversarial"] + 10.0 * terms["cycle"] + 5.0 * terms["identity"]
    assert torch.allclose(terms["generator"], total, atol=1e-5)


def test_identity_weight_changes_the_generator_gradient_by_its_term():
    model = _tiny(identity_weight=0.0)
    a, b = _images(6), _images(6, seed=1)
    without = _generator_gradients(model, a, b)
    model.identity_weight = 2.0
    with_identity = _generator_gradients(model, a, b)
    model.zero_grad()
    model.losses(a, b)["identity"].backward()
    identity = [p.grad.clone() for p in model.generators.parameters()]
    assert any(float(g.abs().max()) > 1e-4 for g in identity)
    for w0, w2, term in zip(without, with_identity, identity):
        assert torch.allclose(w2 - w0, 2.0 * term, atol=1e-5)


def test_translate_directions_shapes_and_generators():
    model = _tiny(image_shape_b=(3, 8, 8), identity_weight=0.0)
    a, b = _images(10), _images(10, channels=3, seed=1)
    model.fit(a, b[:7])  # unpaired sets of different sizes
    assert model.translate(a[:4]).shape == (4, 3, 8, 8)
    assert model.translate(b[:2], direction="b_to_a").shape == (2, 1, 8, 8)
    assert model.translate(a[:4].reshape(4, -1)).shape == (4, 192)  # flat in, flat out
    assert model.translate(a[:4, 0]).shape == (4, 3, 8, 8)  # (n, H, W) for one channel
    expected = (model.generators["b_to_a"](2 * b[:2] - 1) + 1) / 2
    assert torch.allclose(model.translate(b[:2], direction="b_to_a"), expected, atol=1e-6)
    with pytest.raises(DataError, match="direction"):
        model.translate(a, direction="sideways")
    with pytest.raises(DataError, match="x has shape"):
        model.translate(b, direction="a_to_b")  # B's 3-channel images into A's generator
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        model.translate(a * 255)


def test_bad_input_and_settings_name_the_argument():
    with pytest.raises(DataError, match="identity_weight"):
        CycleGAN((1, 8, 8), image_shape_b=(3, 8, 8))
    with pytest.raises(DataError, match="image_shape"):
        CycleGAN((8, 8))
    with pytest.raises(DataError, match="n_downsampling"):
        CycleGAN((1, 6, 6), n_downsampling=2)
    with pytest.raises(DataError, match="loss"):
        CycleGAN((1, 8, 8), loss="wasserstein")
    model = _tiny()
    with pytest.raises(NotFittedError):
        model.translate(_images(2))
    with pytest.raises(DataError, match="data_b"):
        model.fit(_images(4))
    with pytest.raises(DataError, match="data_b"):
        model.fit(_images(4), _images(4)[:, :, :4])
    with pytest.raises(DataError, match=r"data must hold pixel values in \[0, 1\]"):
        model.fit(_images(4) - 0.5, _images(4))
    with pytest.raises(DataError, match="learning_rate"):
        model.fit(_images(4), _images(4), learning_rate=0.1)


def test_no_density_and_no_sampling_without_input():
    model = _tiny()
    assert model.log_prob_kind is probgen.LogProbKind.NONE
    with pytest.raises(NoDensityError, match="translate"):
        model.log_prob(_images(2))
    with pytest.raises(DataError, match="translate"):
        model.sample(4, seed=0)


def test_seeded_fit_reproducible_save_load_and_resume(tmp_path):
    a, b = _images(16), 1 - _images(16, seed=1)
    first = _tiny(n_epochs=2).fit(a, b)
    second = _tiny(n_epochs=2).fit(a, b)
    assert torch.equal(first.translate(a[:4]), second.translate(a[:4]))
    assert [h["losses"] for h in first.history_] == [h["losses"] for h in second.history_]
    record = first.history_[-1]
    assert {"cycle_loss", "identity_loss", "adversarial_loss", "discriminator_accuracy"} <= set(
        record
    )
    assert set(record["grad_norms"]) == {"generators", "discriminators"}

    path = tmp_path / "cyclegan.probgen"
    first.save(path)
    loaded = probgen.load(path)
    assert torch.equal(loaded.translate(b[:4], "b_to_a"), first.translate(b[:4], "b_to_a"))

    resumed = _tiny(n_epochs=1).fit(a, b, checkpoint_dir=tmp_path / "ckpt")
    resumed = _tiny(n_epochs=2).fit(a, b, checkpoint_dir=tmp_path / "ckpt", resume=True)
    assert torch.equal(resumed.translate(a[:4]), first.translate(a[:4]))
