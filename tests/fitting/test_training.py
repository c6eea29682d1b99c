"""The shared training loop: seeding, checkpoints and resume, early stopping, NaN handling,
and Pyro ELBO losses against closed-form answers."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from probgen.core.errors import DataError, FitError
from probgen.fitting.training import CHECKPOINT_NAME, fit_model, load_checkpoint, pyro_elbo_loss


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=generator)
    return x, y


def _noisy_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    # Draws from torch's global generator, like a reparameterised ELBO does.
    jitter = 0.1 * torch.randn(y.shape)
    return (model(x) - y + jitter).pow(2).mean()


def _net(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def test_fit_reduces_loss_and_records_history():
    net = _net()
    history = fit_model(
        net, _data(), loss=_noisy_loss, n_epochs=30, batch_size=16, learning_rate=1e-2, seed=0
    )
    assert [h["epoch"] for h in history] == list(range(1, 31))
    assert history[-1]["train_loss"] < 0.2 * history[0]["train_loss"]
    assert set(history[0]) == {"epoch", "train_loss", "val_log_prob", "lr", "seconds", "steps"}
    assert history[-1]["steps"] == 30 * 6


def test_same_seed_same_result_and_caller_rng_untouched():
    first, second = _net(), _net()
    before = torch.random.get_rng_state()
    fit_model(first, _data(), loss=_noisy_loss, n_epochs=3, batch_size=16, seed=5)
    # The loss draws from the global generator, but only inside the fit's forked state.
    assert torch.equal(before, torch.random.get_rng_state())
    fit_model(second, _data(), loss=_noisy_loss, n_epochs=3, batch_size=16, seed=5)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    third = _net()
    fit_model(third, _data(), loss=_noisy_loss, n_epochs=3, batch_size=16, seed=6)
    assert not torch.equal(first[0].weight, third[0].weight)


@pytest.mark.parametrize("schedule", [None, "cosine", "plateau"])
def test_resume_reaches_the_same_result_as_an_uninterrupted_run(tmp_path, schedule):
    data = _data()
    validation = _data(32)

    def val_log_prob(model, batch):
        x, y = batch
        return -(model(x) - y).pow(2).sum(-1)

    options = dict(
        loss=_noisy_loss,
        batch_size=16,
        learning_rate=1e-2,
        seed=3,
        lr_schedule=schedule,
        validation_data=validation,
        validation_log_prob=val_log_prob,
        early_stopping_patience=50,
    )
    straight = _net()
    straight_history = fit_model(straight, data, n_epochs=6, **options)

    interrupted = _net()
    fit_model(interrupted, data, n_epochs=6, max_steps=6 * 3, checkpoint_dir=tmp_path, **options)
    assert load_checkpoint(tmp_path)[1]["epoch"] == 3
    resumed = _net(seed=99)  # different starting weights: the checkpoint must overwrite them
    resumed_history = fit_model(
        resumed, data, n_epochs=6, checkpoint_dir=tmp_path, resume=True, **options
    )
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in straight_history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed_history]


def test_checkpoint_is_safetensors_without_pickle(tmp_path):
    fit_model(_net(), _data(), loss=_noisy_loss, n_epochs=2, checkpoint_dir=tmp_path, seed=0)
    path = tmp_path / CHECKPOINT_NAME
    raw = path.read_bytes()
    assert b"\x80\x04" not in raw[:16]  # no pickle protocol header
    tensors, meta = load_checkpoint(path)
    assert meta["epoch"] == 2 and len(meta["history"]) == 2
    assert any(name.startswith("model/") for name in tensors)
    assert any(name.startswith("optimizer/") for name in tensors)


def test_checkpoint_for_another_model_class_is_refused(tmp_path):
    fit_model(_net(), _data(), loss=_noisy_loss, n_epochs=1, checkpoint_dir=tmp_path, seed=0)

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 1)

        def forward(self, x):
            return self.layer(x)

    with pytest.raises(FitError, match="checkpoint"):
        fit_model(
            Other(), _data(), loss=_noisy_loss, n_epochs=2, checkpoint_dir=tmp_path, resume=True
        )


def test_nan_loss_raises_and_keeps_last_good_parameters():
    net = _net()
    snapshots = []

    def loss(model, batch):
        value = _noisy_loss(model, batch)
        snapshots.append([p.detach().clone() for p in model.parameters()])
        if len(snapshots) == 5:
            return value * float("nan")
        return value

    with pytest.raises(FitError, match="NaN|nan"):
        fit_model(net, _data(), loss=loss, n_epochs=3, batch_size=16, seed=0)
    # The parameters are those the fifth (non-finite) loss was computed from: the result of
    # the fourth, last good, update.
    for kept, good in zip(net.parameters(), snapshots[4]):
        assert torch.equal(kept, good)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_nan_gradient_restores_the_parameters_of_the_epoch_start():
    weight = nn.Parameter(torch.tensor([1.0]))
    holder = nn.Module()
    holder.weight = weight

    def loss(model, batch):
        # The loss is finite (0) but sqrt'(0) makes the gradient NaN.
        return torch.sqrt(model.weight.pow(2) - model.weight.pow(2)).sum()

    with pytest.raises(FitError, match="parameters"):
        fit_model(holder, torch.zeros(8, 1), loss=loss, n_epochs=2, batch_size=4, seed=0)
    assert torch.equal(holder.weight.detach(), torch.tensor([1.0]))


def test_early_stopping_restores_the_best_parameters():
    module = nn.Module()
    module.location = nn.Parameter(torch.zeros(1))
    train = torch.full((64, 1), 10.0)  # training pulls the location towards 10
    validation = torch.full((16, 1), 1.0)  # held-out data prefers 1

    def loss(model, batch):
        return (batch - model.location).pow(2).mean()

    def val_log_prob(model, batch):
        return -(batch - model.location).pow(2).sum(-1)

    history = fit_model(
        module,
        train,
        loss=loss,
        validation_data=validation,
        validation_log_prob=val_log_prob,
        early_stopping_patience=2,
        n_epochs=200,
        batch_size=64,
        learning_rate=0.05,
        optimizer="sgd",
        seed=0,
    )
    assert len(history) < 200
    best = max(history, key=lambda h: h["val_log_prob"])
    assert math.isclose(
        -((1.0 - module.location.item()) ** 2), best["val_log_prob"], rel_tol=1e-5, abs_tol=1e-6
    )


def test_dataloader_and_collate_are_accepted():
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    calls = []

    def collate(batch):
        calls.append(len(batch[0]))
        return tuple(batch)

    history = fit_model(_net(), loader, loss=_noisy_loss, n_epochs=2, collate=collate, seed=0)
    assert len(history) == 2 and calls[:3] == [32, 32, 32]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(data=torch.zeros(0, 3)), "empty"),
        (dict(data=(torch.zeros(4, 3), torch.zeros(5, 1))), "different numbers"),
        (dict(data=[[1.0, 2.0]]), "tensor"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(lr_schedule="warmup"), "lr_schedule"),
        (dict(n_epochs=0), "n_epochs"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(resume=True), "checkpoint_dir"),
        (dict(early_stopping_patience=2), "validation_data"),
    ],
)
def test_bad_settings_raise_data_error(kwargs, message):
    options = dict(data=_data(), loss=_noisy_loss, n_epochs=1)
    options.update(kwargs)
    data = options.pop("data")
    with pytest.raises(DataError, match=message):
        fit_model(_net(), data, **options)


# ---- Pyro ELBO losses -----------------------------------------------------------------------
class _Conjugate(nn.Module):
    """z ~ N(0, 1), x | z ~ N(z, 1); guide q(z | x) = N(a x, s) with learnable a, log s."""

    def __init__(self, slope: float, log_scale: float):
        super().__init__()
        self.slope = nn.Parameter(torch.tensor(slope, dtype=torch.float64))
        self.log_scale = nn.Parameter(torch.tensor(log_scale, dtype=torch.float64))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), torch.ones_like(x)))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.slope * x, self.log_scale.exp().expand_as(x)))

    def exact_elbo(self, x):
        mean, var = self.slope * x, (2 * self.log_scale).exp()
        expected_log_joint = (
            -math.log(2 * math.pi) - 0.5 * (mean.pow(2) + var) - 0.5 * ((x - mean).pow(2) + var)
        )
        entropy = 0.5 * math.log(2 * math.pi * math.e) + self.log_scale
        return expected_log_joint + entropy


def _log_evidence(x):
    return torch.distributions.Normal(0.0, math.sqrt(2.0)).log_prob(x)


def test_trace_elbo_loss_matches_the_closed_form_elbo():
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    model = _Conjugate(0.2, -0.5)
    elbo = pyro.infer.Trace_ELBO(num_particles=20000, vectorize_particles=True, max_plate_nesting=1)
    torch.manual_seed(0)
    loss = pyro_elbo_loss(elbo)(model, x)
    assert torch.isclose(loss, -model.exact_elbo(x).mean(), atol=0.02)
    assert len(pyro.get_param_store().keys()) == 0
    loss.backward()
    assert model.slope.grad is not None


def test_renyi_loss_is_exact_with_the_true_posterior_and_tighter_otherwise():
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    posterior = _Conjugate(0.5, 0.5 * math.log(0.5))  # the exact posterior N(x / 2, 1 / 2)
    iwae = pyro.infer.RenyiELBO(
        alpha=0.0, num_particles=7, vectorize_particles=True, max_plate_nesting=1
    )
    torch.manual_seed(0)
    loss = pyro_elbo_loss(iwae)(posterior, x)
    assert torch.isclose(loss, -_log_evidence(x).mean(), atol=1e-10)

    poor = _Conjugate(0.0, 0.3)
    torch.manual_seed(0)
    iwae_many = pyro.infer.RenyiELBO(
        alpha=0.0, num_particles=500, vectorize_particles=True, max_plate_nesting=1
    )
    iwae_bound = -pyro_elbo_loss(iwae_many)(poor, x)
    assert poor.exact_elbo(x).mean() < iwae_bound < _log_evidence(x).mean() + 0.01


class _Hierarchical(nn.Module):
    """A global latent, a subsampled plate of local latents, masked observations and, when
    `discrete`, a Bernoulli latent without a reparameterised sampler (score-function term)."""

    def __init__(self, subsample_size: int | None = None, discrete: bool = False):
        super().__init__()
        self.slope = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
        self.log_scale = nn.Parameter(torch.tensor(-0.4, dtype=torch.float64))
        self.global_loc = nn.Parameter(torch.tensor(0.1, dtype=torch.float64))
        self.subsample_size = subsample_size
        self.discrete = discrete

    def model(self, x):
        shift = pyro.sample("shift", dist.Normal(torch.zeros((), dtype=x.dtype), 2.0))
        with pyro.plate("data", x.shape[0], subsample_size=self.subsample_size) as index:
            z = pyro.sample(
                "z", dist.Normal(shift.unsqueeze(-1), 1.0).expand(shift.shape + index.shape)
            )
            if self.discrete:
                pyro.sample("flag", dist.Bernoulli(torch.sigmoid(z)))
            with pyro.poutine.mask(mask=x[index] > -1.0):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x[index])

    def guide(self, x):
        pyro.sample("shift", dist.Normal(self.global_loc, 0.5))
        with pyro.plate("data", x.shape[0], subsample_size=self.subsample_size) as index:
            pyro.sample("z", dist.Normal(self.slope * x[index], self.log_scale.exp()))
            if self.discrete:
                pyro.sample("flag", dist.Bernoulli(torch.sigmoid(self.slope * x[index])))


def _loss_and_gradients(loss, model, x, seed):
    torch.manual_seed(seed)
    with pyro.validation_enabled(False):
        value = loss(model, x)
    gradients = torch.autograd.grad(value, list(model.parameters()))
    return value, gradients


def _pyro_trace_elbo(elbo):
    def loss(model, x):
        return elbo.differentiable_loss(model.model, model.guide, x) / x.shape[0]

    return loss


_X = torch.tensor([0.3, -1.2, 2.0, 0.7, -0.1, -1.5], dtype=torch.float64)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_particles": 3},
        {"num_particles": 4, "vectorize_particles": True, "max_plate_nesting": 1},
    ],
)
@pytest.mark.parametrize("subsample_size", [None, 4])
def test_trace_elbo_loss_gives_pyros_values_and_gradients(options, subsample_size):
    model = _Hierarchical(subsample_size)
    ours = _loss_and_gradients(pyro_elbo_loss(pyro.infer.Trace_ELBO(**options)), model, _X, 3)
    pyros = _loss_and_gradients(_pyro_trace_elbo(pyro.infer.Trace_ELBO(**options)), model, _X, 3)
    torch.testing.assert_close(ours[0], pyros[0], rtol=1e-12, atol=0)
    for mine, theirs in zip(ours[1], pyros[1]):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=0)


def test_trace_elbo_loss_uses_pyro_for_score_function_sites():
    model = _Hierarchical(discrete=True)
    loss = pyro_elbo_loss(pyro.infer.Trace_ELBO())
    _loss_and_gradients(loss, model, _X, 0)  # finds the Bernoulli site, hands over to Pyro
    ours = _loss_and_gradients(loss, model, _X, 5)
    pyros = _loss_and_gradients(_pyro_trace_elbo(pyro.infer.Trace_ELBO()), model, _X, 5)
    torch.testing.assert_close(ours[0], pyros[0], rtol=1e-12, atol=0)
    for mine, theirs in zip(ours[1], pyros[1]):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=0)


def test_trace_elbo_loss_keeps_pyros_checks_while_validation_is_on():
    class _GuideMissesASite(_Conjugate):
        def guide(self, x):
            pass

    model = _GuideMissesASite(0.2, -0.5)
    loss = pyro_elbo_loss(pyro.infer.Trace_ELBO())
    with pyro.validation_enabled(True), pytest.warns(UserWarning, match="not guide"):
        loss(model, _X)


def test_vae_fit_resumes_to_the_same_parameters(tmp_path):
    from probgen.deep.vae import VAE

    x = torch.bernoulli(torch.full((64, 6), 0.4), generator=torch.Generator().manual_seed(0))
    straight = VAE((6,), 2, hidden_dims=(8,), seed=0).fit(x, n_epochs=4, batch_size=16)
    VAE((6,), 2, hidden_dims=(8,), seed=0).fit(
        x, n_epochs=4, batch_size=16, max_steps=8, checkpoint_dir=tmp_path
    )
    resumed = VAE((6,), 2, hidden_dims=(8,), seed=0).fit(
        x, n_epochs=4, batch_size=16, checkpoint_dir=tmp_path, resume=True
    )
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
