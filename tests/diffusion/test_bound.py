"""The variational bound: exact vs sampled steps, below the true density, the ODE estimate."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import mixture, oracle_model, true_log_prob
from probgen.diffusion import Diffusion


def _tiny(**settings) -> Diffusion:
    model = Diffusion(**{"input_shape": (2,), "hidden_dims": (16,), "n_steps": 8, "seed": 0,
                         **settings})
    return model.double()


@pytest.mark.parametrize(
    "settings, data",
    [
        ({}, torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)),
        (
            {"input_shape": (1, 4, 4), "n_levels": 2, "network": "unet", "hidden_dims": (4,),
             "variance": "learned", "loss": "hybrid"},
            torch.randint(0, 2, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0)),
        ),
    ],
    ids=["real-mlp", "binary-unet-learned"],
)
def test_exact_bound_is_the_mean_of_its_one_step_estimates(settings, data):
    model = _tiny(**settings)
    model._mark_fitted()
    full = model.variational_bound(data, seed=3)
    # With one step t the estimate is -(L_T + T L_{t-1}); over t = 1..T it averages to -L.
    per_step = torch.stack(
        [model.variational_bound(data, steps=torch.tensor([t]), seed=3) for t in range(1, 9)]
    )
    assert torch.allclose(per_step.mean(0), full, rtol=1e-12, atol=1e-9)
    assert not torch.allclose(per_step[0], full)  # the steps do differ
    # Drawn steps: an unbiased estimate, within a few standard errors with many draws.
    many = model.variational_bound(data, steps=1000, seed=3)
    spread = per_step.std(0) / math.sqrt(1000)
    assert ((many - full).abs() <= 5 * spread + 1e-9).all()
    assert model.log_prob_kind.value == "lower_bound"
    assert _tiny(bound_steps=5).log_prob_kind.value == "estimate"


def test_bound_is_below_the_true_density_and_tightens_as_T_grows():
    x = mixture(400)
    true = float(true_log_prob(x).mean())
    gaps = []
    for n_steps in (10, 100, 1000):
        bound = oracle_model(n_steps).variational_bound(x)
        gap = true - float(bound.mean())
        error = float(bound.std()) / math.sqrt(len(x))
        assert gap > 3 * error, (n_steps, gap, error)
        gaps.append(gap)
    assert gaps[0] > gaps[1] + 1.0 and gaps[1] > gaps[2] + 0.5, gaps
    # A wrong noise predictor gives a much looser bound.
    assert float(oracle_model(100, scale=0.5).variational_bound(x).mean()) < true - gaps[1] - 1


def test_log_prob_includes_the_standardisation_jacobian():
    x = mixture(50)
    model = oracle_model(20)
    reference = model.log_prob(x)
    model.data_mean.fill_(1.0)
    model.data_scale.copy_(torch.tensor([2.0, 0.5]))
    moved = x * torch.tensor([2.0, 0.5]) + 1.0
    expected = reference - math.log(2.0) - math.log(0.5)
    assert torch.allclose(model.log_prob(moved), expected, atol=1e-10)
    assert torch.allclose(
        model.bits_per_dim(moved), -model.log_prob(moved) / (2 * math.log(2)), rtol=1e-12
    )


def test_ode_log_likelihood_of_the_exact_predictor_matches_the_density():
    x = mixture(12)
    model = oracle_model(40)
    exact = model.ode_log_likelihood(x, trace="exact", n_steps=39)
    assert (exact - true_log_prob(x)).abs().max() < 0.1
    hutchinson = torch.stack(
        [model.ode_log_likelihood(x, seed=s, n_steps=39) for s in range(2)]
    ).mean(0)
    assert float((hutchinson - exact).mean().abs()) < 0.3
    assert not torch.allclose(hutchinson, exact)
    wrong = oracle_model(40, scale=0.5).ode_log_likelihood(x, trace="exact", n_steps=39)
    assert float((wrong - true_log_prob(x)).abs().mean()) > 0.5
    ode = Diffusion((2,), n_steps=10, log_prob_estimator="ode")
    assert ode.log_prob_kind.value == "estimate"
