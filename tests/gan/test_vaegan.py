"""VAEGAN: step isolation, its loss terms against hand computations, seeding, no density,
save/load, divergence, resume and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import probgen
from probgen.core.errors import DataError, FitError, NoDensityError, NotFittedError
from probgen.core.testing import check_density
from probgen.fitting.loop import fit_model
from probgen.gan.vaegan import VAEGAN
from probgen.gan.vaegan_networks import discriminator_features, gaussian_kl


def _vectors(n: int = 32, d: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _images(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _tiny(**overrides) -> VAEGAN:
    settings: dict = dict(latent_dim=2, hidden_dims=(8,), n_epochs=1, batch_size=16, seed=0)
    settings.update(overrides)
    return VAEGAN(settings.pop("data_shape", 2), **settings)


def _tiny_images(**overrides) -> VAEGAN:
    settings: dict = dict(data_shape=(1, 8, 8), architecture="dcgan", latent_dim=2, width=4)
    settings.update(overrides)
    return _tiny(**settings)


def _parameters(model: VAEGAN) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("architecture", ["mlp", "dcgan"])
def test_each_step_updates_its_own_parameter_group_only(architecture):
    data = _vectors() if architecture == "mlp" else _images()
    build = _tiny if architecture == "mlp" else _tiny_images
    for index in range(3):
        other = build()  # a step's loss works on the model fit_model passes, not its maker
        step = other.training_steps()[index]
        model = build()
        other.encoder = other.decoder = other.discriminator = None
        # Its optimiser holds exactly its own group (weight decay or momentum would otherwise
        # move the others even without a gradient)...
        group = {id(p) for p in step.parameter_group(model)}
        assert group == {id(p) for p in model.get_submodule(step.name).parameters()}
        # ...and one update moves exactly that group.
        before = _parameters(model)
        fit_model(model, data, steps=[step], n_epochs=1, batch_size=16, max_steps=1, seed=0)
        after = _parameters(model)
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        own = {name for name in before if name.startswith(step.name + ".")}
        assert own and changed == own, (step.name, sorted(changed ^ own))


@pytest.mark.parametrize("gamma", [0.0, 3.0])
def test_the_steps_minimise_the_documented_objectives_from_one_draw(gamma):
    model = _tiny(hidden_dims=(4, 3), gamma=gamma, kl_weight=0.5)
    x = _vectors(6)
    expected = {name: value.item() for name, value in model.losses(x, seed=7).items()}
    torch.manual_seed(7)  # the steps draw eps, then the prior codes, from torch's generator
    # Encoder first: the decoder and discriminator steps reuse its draw on the same batch.
    for step in model.training_steps():
        assert step.loss(model, x).item() == pytest.approx(expected[step.name], rel=1e-6)


def test_a_fit_runs_the_three_steps_and_records_their_terms():
    model = _tiny(n_epochs=2, kl_weight=0.5).fit(_vectors())
    record = model.history_[-1]
    assert list(record["losses"]) == ["encoder", "decoder", "discriminator"]
    for key in ("kl", "feature_reconstruction", "discriminator_accuracy", "max_abs_score"):
        assert np.isfinite(record[key]), key
    assert record["losses"]["encoder"] == pytest.approx(
        0.5 * record["kl"] + record["feature_reconstruction"], rel=1e-5
    )
    assert model.n_iter_ == 2


def _linear(layer: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()


def _softplus(v: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, v)


@pytest.mark.parametrize("loss", ["non_saturating", "hinge"])
def test_loss_terms_equal_a_hand_computation_on_a_tiny_network(loss):
    gamma, kl_weight = 0.7, 0.3
    model = _tiny(latent_dim=1, hidden_dims=(3,), gamma=gamma, kl_weight=kl_weight, loss=loss)
    x = _vectors(5, seed=3)
    terms = {name: value.detach() for name, value in model.losses(x, seed=11).items()}
    generator = torch.Generator().manual_seed(11)
    eps = torch.randn(5, 1, generator=generator).double().numpy()
    z_prior = torch.randn(5, 1, generator=generator).double().numpy()
    xs = x.double().numpy()

    w, b = _linear(model.encoder.net[0])
    wh, bh = _linear(model.encoder.head)
    out = np.maximum(xs @ w.T + b, 0.0) @ wh.T + bh
    loc, scale = out[:, :1], np.exp(0.5 * out[:, 1:])
    w1, b1 = _linear(model.decoder.net[0])
    w2, b2 = _linear(model.decoder.net[2])

    def decode(z):
        return np.maximum(z @ w1.T + b1, 0.0) @ w2.T + b2

    wd, bd = _linear(model.discriminator.net[0])
    ws, bs = _linear(model.discriminator.net[2])

    def features(v):
        h = v @ wd.T + bd
        return np.where(h > 0, h, 0.2 * h)

    def scores(v):
        return (features(v) @ ws.T + bs)[:, 0]

    rebuilt, drawn = decode(loc + scale * eps), decode(z_prior)
    reconstruction = np.mean(0.5 * ((features(xs) - features(rebuilt)) ** 2).sum(1))
    kl = np.mean(0.5 * (loc**2 + scale**2 - 1.0 - np.log(scale**2)).sum(1))
    fake = np.concatenate([scores(rebuilt), scores(drawn)])
    if loss == "non_saturating":
        gan = _softplus(-scores(xs)).mean() + _softplus(fake).mean()
        fooling = _softplus(-fake).mean()
    else:
        gan = np.maximum(1 - scores(xs), 0).mean() + np.maximum(1 + fake, 0).mean()
        fooling = -fake.mean()
    assert float(terms["feature_reconstruction"]) == pytest.approx(reconstruction, rel=1e-5)
    assert float(terms["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(terms["gan"]) == pytest.approx(gan, rel=1e-5)
    assert float(terms["encoder"]) == pytest.approx(kl_weight * kl + reconstruction, rel=1e-5)
    assert float(terms["decoder"]) == pytest.approx(gamma * reconstruction + fooling, rel=1e-5)
    assert float(terms["discriminator"]) == pytest.approx(gan, rel=1e-5)


def test_feature_layer_chooses_which_hidden_layer_measures_reconstructions():
    x = _vectors(6)
    first = _tiny(hidden_dims=(4, 3), feature_layer=1)
    last = _tiny(hidden_dims=(4, 3))
    assert (first.layer, last.layer) == (1, 2)
    net = first.discriminator.net
    features, scores = discriminator_features(first.discriminator, x, 1)
    assert torch.allclose(features, net[:2](x))
    assert torch.allclose(scores, first.discriminator(x))
    assert torch.allclose(discriminator_features(last.discriminator, x, 2)[0], net[:4](x))
    # Same weights (same seed), different layer: a different reconstruction term.
    a = first.losses(x, seed=0)["feature_reconstruction"]
    b = last.losses(x, seed=0)["feature_reconstruction"]
    assert not torch.allclose(a, b)


def test_kl_term_equals_the_closed_form_of_torch_distributions():
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(7, 3, generator=g), torch.rand(7, 3, generator=g) + 0.1
    expected = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl(loc, scale), expected, atol=1e-6)
    model = _tiny_images()
    x = _images(6)
    model.eval()
    loc, scale = model.encoder(x)
    closed = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1).mean()
    assert torch.allclose(model.losses(x, seed=0)["kl"], closed, atol=1e-5)


def test_seeded_fits_are_reproducible_and_seeds_matter():
    x = _vectors()
    a = _tiny(n_epochs=2).fit(x)
    b = _tiny(n_epochs=2).fit(x)
    c = _tiny(n_epochs=2, seed=1).fit(x)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(a.sample(5, seed=3), b.sample(5, seed=3))
    assert not torch.equal(a.sample(5, seed=3), a.sample(5, seed=4))
    assert not torch.equal(a.sample(5, seed=3), c.sample(5, seed=3))


def test_log_prob_raises_no_density_error_naming_alternatives():
    model = _tiny().fit(_vectors())
    with pytest.raises(NoDensityError, match="probgen.evaluate") as error:
        model.log_prob(_vectors(3))
    assert "VAE" in str(error.value) and "reconstruct" in str(error.value)
    assert str(model.log_prob_kind) == "none"


def test_save_load_round_trip_keeps_samples_and_codes(tmp_path):
    model = _tiny_images(n_epochs=1).fit(_images())
    path = tmp_path / "vaegan.probgen"
    model.save(path)
    restored = probgen.load(path)
    assert type(restored) is VAEGAN and restored.fitted_
    assert torch.equal(model.sample(6, seed=2), restored.sample(6, seed=2))
    x = _images(4, seed=5)
    assert torch.equal(model.encode(x)[0], restored.encode(x)[0])
    assert torch.equal(model.reconstruct(x), restored.reconstruct(x))
    assert restored.get_config() == model.get_config()


def test_contract_suite_on_vectors():
    report = check_density(_tiny(), _vectors(48), fit_options={"n_epochs": 1})
    assert report["no_density_raises"] and report["save_round_trip"]


def test_encode_reconstruct_and_flat_images():
    model = _tiny_images().fit(_images())
    x = _images(3, seed=1)
    loc, scale = model.encode(x)
    assert loc.shape == scale.shape == (3, 2) and bool((scale > 0).all())
    assert torch.equal(model.encode(x.reshape(3, -1))[0], loc)
    rebuilt = model.reconstruct(x)
    assert rebuilt.shape == (3, 1, 8, 8)
    assert torch.equal(rebuilt, model.decode(loc))
    assert bool(((rebuilt >= 0) & (rebuilt <= 1)).all())
    assert model.to("cpu") is model


def test_to_float64_moves_every_network_and_output():
    model = _tiny_images().to(torch.float64)
    assert model.to("cpu") is model
    model.fit(_images())
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model.sample(2, seed=0).dtype == torch.float64
    assert model.reconstruct(_images(2)).dtype == torch.float64


def test_divergence_raises_fit_error_and_keeps_the_starting_parameters():
    model = _tiny(divergence_threshold=1e-9)
    before = _parameters(model)
    with pytest.raises(FitError, match="divergence_threshold"):
        model.fit(_vectors())
    for name, value in _parameters(model).items():
        assert torch.equal(value, before[name]), name


def test_resumed_fit_equals_uninterrupted(tmp_path):
    straight = _tiny_images(n_epochs=2).fit(_images(48))
    _tiny_images(n_epochs=2).fit(_images(48), n_epochs=1, checkpoint_dir=tmp_path)
    resumed = _tiny_images(n_epochs=2).fit(_images(48), checkpoint_dir=tmp_path, resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(resumed.history_) == 2


@pytest.mark.parametrize(
    ("settings", "argument"),
    [
        ({"architecture": "resnet"}, "architecture"),
        ({"data_shape": (4,), "architecture": "dcgan"}, "data_shape"),
        ({"data_shape": (1, 5, 5), "architecture": "dcgan"}, "data_shape"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"hidden_dims": ()}, "hidden_dims"),
        ({"gamma": -1.0}, "gamma"),
        ({"kl_weight": float("nan")}, "kl_weight"),
        ({"loss": "wgan_gp"}, "loss"),
        ({"feature_layer": 2}, "feature_layer"),
        ({"feature_layer": 0}, "feature_layer"),
        ({"encoder_learning_rate": 0.0}, "encoder_learning_rate"),
        ({"betas": (0.5, 1.5)}, "betas"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_name_the_argument(settings, argument):
    with pytest.raises(DataError, match=argument):
        _tiny(**settings)


def test_bad_data_names_the_argument():
    with pytest.raises(NotFittedError):
        _tiny().sample(2)
    with pytest.raises(DataError, match="data"):
        _tiny().fit(_vectors(8, d=3))
    with pytest.raises(DataError, match="data"):
        _tiny().fit(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(DataError, match=r"data.*\[0, 1\]"):
        _tiny_images().fit(_images() * 255)
    with pytest.raises(DataError, match="max_stepz"):
        _tiny().fit(_vectors(), max_stepz=3)
    model = _tiny().fit(_vectors())
    with pytest.raises(DataError, match="x"):
        model.encode(torch.zeros(2, 5))
    with pytest.raises(DataError, match="z"):
        model.decode(torch.zeros(2, 7))
    with pytest.raises(DataError, match="n"):
        model.sample(0)


@pytest.mark.gpu
def test_vaegan_runs_on_cuda():
    model = _tiny_images().to("cuda").fit(_images())
    assert model.sample(3, seed=0).device.type == "cuda"
    assert model.reconstruct(_images(2)).device.type == "cuda"
    assert torch.equal(model.sample(3, seed=0), model.sample(3, seed=0))
