"""VAE: the ELBO and IWAE estimates against the exact likelihood of a one-dimensional latent
model (quadrature), conditional and conv variants, kinds, and bad input."""

from __future__ import annotations

import itertools
import math

import pyro
import pytest
import torch
import torch.nn.functional as F

import probgen
from probgen.core.contract import LogProbKind
from probgen.core.errors import DataError, NotFittedError
from probgen.deep.vae import VAE
from probgen.fitting import fit_model


def _binary(n: int = 128, width: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Two prototypes with flipped bits: a latent structure worth modelling.
    prototypes = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])[:, :width]
    which = torch.randint(2, (n,), generator=generator)
    flips = torch.bernoulli(torch.full((n, width), 0.1), generator=generator)
    return (prototypes[which] + flips) % 2


@pytest.fixture(scope="module")
def tiny_vae() -> VAE:
    vae = VAE(
        (4,), latent_dim=1, hidden_dims=(16,), seed=0, n_epochs=30, batch_size=32,
        learning_rate=1e-2,
    )
    return vae.fit(_binary()).double()


def _exact_log_prob(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log integral N(z; 0, 1) p(x | z) dz by the trapezoid rule (latent_dim 1)."""
    grid = torch.linspace(-9.0, 9.0, 6001, dtype=torch.float64)
    with torch.no_grad():
        logits = vae.decoder(grid[:, None], None)  # (G, 4)
    log_likelihood = torch.distributions.Bernoulli(logits=logits[:, None, :]).log_prob(x).sum(-1)
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(grid)[:, None]
    log_integrand = log_likelihood + log_prior
    step = grid[1] - grid[0]
    weights = torch.full_like(grid, math.log(step))
    weights[[0, -1]] += math.log(0.5)
    return torch.logsumexp(log_integrand + weights[:, None], 0)


def test_iwae_tightens_with_k_and_stays_between_elbo_and_exact_log_likelihood(tiny_vae):
    support = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    exact = _exact_log_prob(tiny_vae, support)
    # The quadrature oracle is itself checked: a distribution over 16 binary vectors sums to 1.
    assert abs(torch.logsumexp(exact, 0).item()) < 1e-6
    elbo = tiny_vae.elbo(support, n_samples=2000).mean()
    # Each estimate is averaged over independent repeats so that its noise is far below the
    # gaps between k (the repeats form a batch dimension).
    repeats = {1: 400, 10: 400, 100: 100, 2000: 10}
    estimates = [
        tiny_vae.iwae(support.expand(repeats[k], 16, 4), k=k).mean() for k in (1, 10, 100, 2000)
    ]
    assert abs(estimates[0] - elbo) < 0.02  # IWAE with k=1 is the ELBO
    assert elbo < estimates[1] < estimates[2] < estimates[3]
    assert estimates[3] <= exact.mean() + 1e-3
    assert exact.mean() - estimates[3] < 0.02


def test_log_prob_kind_is_honest_and_switchable(tiny_vae, tmp_path):
    x = _binary(8)
    assert tiny_vae.log_prob_kind is LogProbKind.LOWER_BOUND
    assert torch.allclose(tiny_vae.log_prob(x.double()), tiny_vae.elbo(x.double()))
    tiny_vae.log_prob_estimator = "iwae"
    try:
        assert tiny_vae.log_prob_kind is LogProbKind.ESTIMATE
        assert torch.allclose(tiny_vae.log_prob(x.double(), k=50), tiny_vae.iwae(x.double(), k=50))
        tiny_vae.save(tmp_path / "vae.probgen")
        restored = probgen.load(tmp_path / "vae.probgen")
        assert restored.log_prob_kind is LogProbKind.ESTIMATE
    finally:
        tiny_vae.log_prob_estimator = "elbo"
    assert torch.equal(tiny_vae.log_prob(x.double()), tiny_vae.log_prob(x.double()))
    assert not torch.equal(tiny_vae.log_prob(x.double(), seed=1), tiny_vae.log_prob(x.double()))


def test_training_improves_the_elbo_and_keeps_pyro_param_store_empty():
    pyro.clear_param_store()
    x = _binary(256)
    vae = VAE((4,), 2, hidden_dims=(16,), seed=0, n_epochs=15, batch_size=32, learning_rate=1e-2)
    vae.fit(x, validation_data=_binary(64, seed=1))
    assert vae.history_[-1]["train_loss"] < vae.history_[0]["train_loss"] - 0.3
    assert vae.history_[-1]["val_log_prob"] > vae.history_[0]["val_log_prob"]
    assert len(pyro.get_param_store().keys()) == 0


@pytest.mark.parametrize("objective", ["meanfield_elbo", "iwae"])
def test_other_objectives_train(objective):
    vae = VAE(
        (4,),
        2,
        hidden_dims=(16,),
        seed=0,
        n_epochs=4,
        batch_size=32,
        learning_rate=1e-2,
        objective=objective,
        n_particles=5,
    )
    vae.fit(_binary(128))
    assert vae.history_[-1]["train_loss"] < vae.history_[0]["train_loss"]


def _plain_torch_negative_elbo(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Trace_ELBO's one-draw estimator for the Bernoulli MLP VAE, written without Pyro."""
    loc, scale = vae.encoder(x, None)
    z = loc + scale * torch.randn_like(loc)
    logits = vae.decoder(z, None)
    log_likelihood = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    return -(log_likelihood + log_prior - log_q).mean()


def test_pyro_training_loss_equals_the_plain_torch_elbo_on_the_same_batch_and_seed():
    vae = VAE((6,), 3, hidden_dims=(8, 5), seed=0).double().train()
    x = torch.bernoulli(torch.full((40, 6), 0.3), generator=torch.Generator().manual_seed(0))
    x = x.double()
    losses = []
    for loss in (vae._make_loss(), lambda model, batch: _plain_torch_negative_elbo(model, *batch)):
        torch.manual_seed(7)
        value = loss(vae, (x,))
        losses.append((value, torch.autograd.grad(value, list(vae.parameters()))))
    (pyro_value, pyro_gradients), (torch_value, torch_gradients) = losses
    torch.testing.assert_close(pyro_value, torch_value, rtol=1e-6, atol=0)
    for ours, plain in zip(pyro_gradients, torch_gradients):
        torch.testing.assert_close(ours, plain, rtol=1e-6, atol=1e-12)


def _pyro_differentiable_loss(elbo):
    def loss(model, batch):
        with pyro.validation_enabled(False):
            return elbo.differentiable_loss(model.model, model.guide, *batch) / len(batch[0])

    return loss


def test_fit_follows_pyros_trace_elbo_bit_for_bit():
    x = _binary(96)
    for n_particles in (1, 3):
        elbo = pyro.infer.Trace_ELBO(
            num_particles=n_particles, vectorize_particles=n_particles > 1, max_plate_nesting=1
        )
        pyro_loss = _pyro_differentiable_loss(elbo)
        ours = VAE((4,), 2, hidden_dims=(8,), seed=1, n_particles=n_particles).fit(
            x, n_epochs=3, batch_size=32
        )
        reference = VAE((4,), 2, hidden_dims=(8,), seed=1, n_particles=n_particles)
        fit_model(reference, (x,), loss=pyro_loss, n_epochs=3, batch_size=32, seed=1)
        for a, b in zip(ours.parameters(), reference.parameters()):
            assert torch.equal(a, b)


def test_same_seed_same_fit():
    first = VAE((4,), 2, hidden_dims=(8,), seed=3, n_epochs=2).fit(_binary())
    second = VAE((4,), 2, hidden_dims=(8,), seed=3, n_epochs=2).fit(_binary())
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_encode_decode_reconstruct_sample_shapes(tiny_vae):
    x = _binary(5).double()
    loc, scale = tiny_vae.encode(x)
    assert loc.shape == (5, 1) and bool((scale > 0).all())
    assert tiny_vae.decode(loc).shape == (5, 4)
    assert tiny_vae.reconstruct(x).shape == (5, 4)
    draws = tiny_vae.sample(7, seed=0)
    assert draws.shape == (7, 4) and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(draws, tiny_vae.sample(7, seed=0))
    means = tiny_vae.sample(7, seed=0, mean=True)
    assert bool(((means > 0) & (means < 1)).all())
    assert tiny_vae.log_prob(x.reshape(5, 1, 4)).shape == (5, 1)


def test_conditional_vae_uses_labels():
    x = _binary(256)
    labels = (x[:, 0] == 1).long()  # the prototype identity
    vae = VAE(
        (4,), 1, hidden_dims=(16,), n_classes=2, seed=0, n_epochs=20, batch_size=32,
        learning_rate=1e-2,
    )
    vae.fit(x, labels)
    draws = vae.sample(400, seed=0, labels=1)
    # Label 1 is prototype [1, 1, 0, 0]: its first pixel is mostly on.
    assert draws[:, 0].mean() > 0.75
    assert vae.sample(400, seed=0, labels=0)[:, 0].mean() < 0.25
    right = vae.log_prob(x[:50], labels[:50]).mean()
    wrong = vae.log_prob(x[:50], 1 - labels[:50]).mean()
    assert right > wrong
    assert vae.log_prob((x[:3], labels[:3])).shape == (3,)
    with pytest.raises(DataError, match="labels"):
        vae.log_prob(x[:3])
    with pytest.raises(DataError, match="labels"):
        vae.log_prob(x[:3], torch.tensor([0, 1, 2]))


def _bars(n: int, seed: int) -> torch.Tensor:
    """8x8 images of a horizontal and a vertical soft bar at random places, plus noise: two
    latent numbers explain each image."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=generator) * 7
    grid = torch.arange(8.0)
    rows = torch.exp(-0.5 * (grid - centres[:, :1]) ** 2)
    columns = torch.exp(-0.5 * (grid - centres[:, 1:]) ** 2)
    return rows[:, :, None] + columns[:, None, :] + 0.05 * torch.randn(n, 8, 8, generator=generator)


def test_conv_gaussian_vae_learns_image_structure():
    train, test = _bars(192, 0), _bars(128, 1)
    settings = dict(
        likelihood="gaussian", encoder="conv", hidden_dims=(32,), seed=0, batch_size=32,
        learning_rate=1e-2,
    )
    early = VAE((8, 8), 2, n_epochs=1, **settings).fit(train)
    vae = VAE((8, 8), 2, n_epochs=15, **settings).fit(train)
    assert vae.sample(3, seed=0).shape == (3, 8, 8)
    assert vae.history_[-1]["train_loss"] < vae.history_[0]["train_loss"]
    elbo = vae.elbo(test, n_samples=10).mean().item()
    # Held out: training improves the ELBO, which beats independent Gaussian pixels fitted
    # to the training images; IWAE is tighter than the ELBO.
    assert elbo > early.elbo(test, n_samples=10).mean().item() + 10
    independent = torch.distributions.Normal(train.mean(0), train.std(0))
    assert elbo > independent.log_prob(test).sum((-1, -2)).mean().item() + 10
    assert vae.iwae(test, k=200).mean().item() > elbo
    assert vae.log_prob(test[:4]).shape == (4,)
    # Reconstructions beat the mean image by far (a decoder ignoring z cannot).
    reconstruction = vae.reconstruct(test)
    assert reconstruction.shape == test.shape
    error = ((reconstruction - test) ** 2).mean()
    assert error < 0.5 * ((train.mean(0) - test) ** 2).mean()


def _three_prototypes(n: int, seed: int) -> torch.Tensor:
    """(n, 1, 4, 4) codes in {0, 1, 2}: one of three prototypes, 10% of cells redrawn."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.arange(16)
    prototypes = torch.stack([cells % 3, (cells // 4) % 3, torch.full((16,), 2)]).float()
    which = torch.randint(3, (n,), generator=generator)
    redraw = torch.rand(n, 16, generator=generator) < 0.1
    noise = torch.randint(3, (n, 16), generator=generator).float()
    return torch.where(redraw, noise, prototypes[which]).reshape(n, 1, 4, 4)


def _exact_categorical_log_prob(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """log integral N(z; 0, 1) prod_cells softmax(decoder(z))[x] dz (latent_dim 1)."""
    grid = torch.linspace(-8.0, 8.0, 4001, dtype=torch.float64)
    with torch.no_grad():
        log_probabilities = torch.log_softmax(vae.decoder(grid[:, None], None), -1)  # (G,1,4,4,3)
    flat = log_probabilities.reshape(len(grid), 16, 3)
    chosen = flat[:, torch.arange(16), x.reshape(-1, 16).long()]  # (G, n, 16)
    log_integrand = chosen.sum(-1) + torch.distributions.Normal(0.0, 1.0).log_prob(grid)[:, None]
    weights = torch.full_like(grid, math.log(grid[1] - grid[0]))
    weights[[0, -1]] += math.log(0.5)
    return torch.logsumexp(log_integrand + weights[:, None], 0)


def test_categorical_conv_vae_matches_the_exact_likelihood_and_learns():
    train, test = _three_prototypes(256, 0), _three_prototypes(128, 1).double()
    settings = dict(
        likelihood="categorical", n_categories=3, encoder="conv", hidden_dims=(16,), seed=0,
        batch_size=32, learning_rate=1e-2,
    )
    early = VAE((1, 4, 4), 1, n_epochs=1, **settings).fit(train).double()
    vae = VAE((1, 4, 4), 1, n_epochs=25, **settings).fit(train).double()
    draws = vae.sample(5, seed=0)
    assert draws.shape == (5, 1, 4, 4) and set(draws.unique().tolist()) <= {0.0, 1.0, 2.0}
    assert vae.decode(torch.zeros(2, 1)).shape == (2, 1, 4, 4, 3)
    # The estimates bracket the exact log-likelihood (quadrature over the latent line):
    # ELBO < IWAE <= exact, and IWAE with many samples is close to it.
    exact = _exact_categorical_log_prob(vae, test).mean().item()
    elbo = vae.elbo(test, n_samples=20).mean().item()
    iwae = vae.iwae(test, k=500).mean().item()
    assert elbo < iwae <= exact + 0.01
    assert exact - iwae < 0.05
    # Training helps, and beats independent cells fitted to the training codes.
    assert elbo > early.elbo(test, n_samples=20).mean().item() + 2
    frequencies = torch.stack([(train == c).double().mean(0) for c in range(3)], -1)
    independent = frequencies.log().reshape(16, 3)[torch.arange(16), test.reshape(-1, 16).long()]
    assert exact > independent.sum(-1).mean().item() + 3
    with pytest.raises(DataError, match="above the largest"):
        vae.log_prob(test[:2] + 3)


def test_bad_input_raises_clear_errors(tiny_vae):
    with pytest.raises(NotFittedError):
        VAE((4,), 2).log_prob(torch.zeros(2, 4))
    with pytest.raises(DataError, match="event shape"):
        tiny_vae.log_prob(torch.zeros(2, 5))
    with pytest.raises(DataError, match="binary"):
        tiny_vae.log_prob(torch.full((2, 4), 0.5))
    with pytest.raises(DataError, match="NaN"):
        tiny_vae.log_prob(torch.tensor([[0.0, 1.0, float("nan"), 0.0]]))
    with pytest.raises(DataError, match="binary"):
        VAE((4,), 2).fit(torch.rand(10, 4))
    with pytest.raises(DataError, match="likelihood"):
        VAE((4,), 2, likelihood="poisson")
    with pytest.raises(DataError, match="n_categories"):
        VAE((4,), 2, likelihood="categorical")
    with pytest.raises(DataError, match="conv"):
        VAE((4,), 2, encoder="conv")
    with pytest.raises(DataError, match="n_classes"):
        tiny_vae.log_prob(torch.zeros(2, 4), torch.tensor([0, 1]))


@pytest.mark.gpu
def test_vae_runs_on_cuda():
    vae = VAE((4,), 2, hidden_dims=(8,), seed=0, n_epochs=2).to("cuda")
    vae.fit(_binary())
    assert vae.log_prob(_binary(4)).device.type == "cuda"
    assert vae.sample(3, seed=0).device.type == "cuda"
