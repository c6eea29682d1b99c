"""The Diffusion model under the contract: settings, fitting, resume, save/load, bad input."""

from __future__ import annotations

import pytest
import torch

import probgen
from probgen.core.errors import DataError
from probgen.diffusion import Diffusion


def _data(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0)) * 3 + 1


def test_exported_and_standardises_real_data():
    assert probgen.Diffusion is Diffusion
    model = Diffusion((2,), hidden_dims=(8,), n_steps=5, n_epochs=1, seed=0).fit(_data())
    assert torch.allclose(model.data_mean, _data().mean(0))
    assert torch.allclose(model.data_scale, _data().std(0))
    assert len(model.history_) == 1 and model.n_iter_ == 1


def test_hybrid_loss_trains_the_learned_variances():
    x = torch.randint(0, 2, (32, 1, 4, 4)).float()
    settings = dict(input_shape=(1, 4, 4), n_levels=2, network="unet", hidden_dims=(4,),
                    n_steps=6, n_epochs=2, seed=0, batch_size=16)
    hybrid = Diffusion(**settings, loss="hybrid", variance="learned")
    before = hybrid.denoiser.out.weight.detach().clone()
    hybrid.fit(x)
    # The variance channels of the output layer move only through the bound term.
    assert not torch.allclose(hybrid.denoiser.out.weight[1:], before[1:])
    simple = Diffusion(**settings)
    assert simple.denoiser.out.weight.shape[0] == 1 and before.shape[0] == 2


def test_checkpoints_resume_to_the_same_model(tmp_path):
    settings = dict(hidden_dims=(8,), n_steps=5, seed=0, batch_size=16)
    straight = Diffusion((2,), n_epochs=2, **settings).fit(_data())
    first = Diffusion((2,), n_epochs=1, **settings).fit(_data(), checkpoint_dir=tmp_path)
    resumed = Diffusion((2,), n_epochs=2, **settings)
    resumed.load_state_dict(first.state_dict())
    resumed.fit(_data(), checkpoint_dir=tmp_path, resume=True)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_save_load_keeps_bound_and_samples(tmp_path):
    model = Diffusion((2,), hidden_dims=(8,), n_steps=5, n_epochs=1, seed=0, loss="hybrid",
                      variance="learned", bound_steps=3).fit(_data())
    model.save(tmp_path / "m.probgen")
    restored = probgen.load(tmp_path / "m.probgen")
    assert restored.bound_steps == 3 and restored.log_prob_kind.value == "estimate"
    assert torch.equal(model.log_prob(_data(5)), restored.log_prob(_data(5)))
    assert torch.equal(model.sample(4, seed=1), restored.sample(4, seed=1))


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"network": "unet"}, "network"),
        ({"n_steps": 1}, "n_steps"),
        ({"schedule": "quadratic"}, "schedule"),
        ({"variance": "learned"}, "variance"),
        ({"bound_steps": "some"}, "bound_steps"),
        ({"bound_steps": 0}, "bound_steps"),
        ({"n_levels": 1}, "n_levels"),
        ({"n_levels": 2, "log_prob_estimator": "ode"}, "ode"),
        ({"hidden_dims": []}, "hidden_dims"),
    ],
)
def test_bad_settings_name_the_argument(settings, name):
    with pytest.raises(DataError, match=name):
        Diffusion((2,), **settings)


def test_bad_input_names_the_argument():
    model = Diffusion((2,), hidden_dims=(8,), n_steps=5, n_epochs=1, seed=0)
    with pytest.raises(DataError, match="data"):
        model.fit(torch.zeros(10, 3))
    model.fit(_data())
    with pytest.raises(DataError, match="x"):
        model.log_prob(torch.zeros(4, 3))
    with pytest.raises(DataError, match="x has shape"):
        model.log_prob(torch.zeros(2))
    with pytest.raises(DataError, match="steps"):
        model.sample(3, method="ddim", steps=6)
    with pytest.raises(DataError, match="eta"):
        model.sample(3, method="ddim", eta=-1.0)
    with pytest.raises(DataError, match="method"):
        model.sample(3, method="euler")
    with pytest.raises(DataError, match="steps"):
        model.sample(3, steps=2)
    with pytest.raises(DataError, match="steps"):
        model.variational_bound(_data(3), steps=torch.tensor([0]))
    binary = Diffusion((2,), n_levels=2, hidden_dims=(8,), n_steps=5, n_epochs=1, seed=0)
    with pytest.raises(DataError, match="data"):
        binary.fit(torch.full((8, 2), 0.5))
    binary.fit(torch.randint(0, 2, (8, 2)))
    with pytest.raises(DataError, match="x"):
        binary.log_prob(torch.full((2, 2), 2.0))
    with pytest.raises(DataError, match="real data"):
        binary.ode_log_likelihood(torch.zeros(2, 2))
    codes = binary.sample(50, seed=0)
    assert set(codes.unique().tolist()) <= {0.0, 1.0}
    assert (binary.log_prob(codes) <= 0).all()  # a bound on a log-mass
