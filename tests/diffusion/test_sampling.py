"""DDPM and DDIM sampling: reproducibility, DDIM(eta=1, T steps) = DDPM, MMD two-sample tests."""

from __future__ import annotations

import pytest
import torch

from conftest import mixture, oracle_model, true_log_prob
from probgen.diffusion import Diffusion
from probgen.metrics.mmd import median_bandwidth, mmd


def mmd_p_value(x: torch.Tensor, y: torch.Tensor, n_permutations: int = 200) -> float:
    """Permutation p-value of the MMD two-sample test (`probgen.metrics.mmd`, fixed bandwidth).

    The null statistics reuse the pooled kernel matrix; the observed one is `mmd` itself.
    """
    x, y = x.double(), y.double()
    bandwidth = median_bandwidth(x, y)
    observed = float(mmd(x, y, bandwidth=bandwidth))
    pooled = torch.cat([x, y])
    kernel = torch.exp(-torch.cdist(pooled, pooled).pow(2) / (2 * bandwidth**2))
    kernel.fill_diagonal_(0.0)
    n, m = len(x), len(y)
    generator = torch.Generator().manual_seed(0)
    # Column 0 is the observed split, the others random relabellings: indicator vectors v give
    # the within- and between-sample kernel sums as quadratic forms.
    order = torch.stack([torch.arange(n + m)] + [
        torch.randperm(n + m, generator=generator) for _ in range(n_permutations)
    ], 1)
    first = (order < n).double()
    second = 1 - first
    kxx = (first * (kernel @ first)).sum(0)
    kyy = (second * (kernel @ second)).sum(0)
    kxy = (first * (kernel @ second)).sum(0)
    statistics = kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)
    assert abs(float(statistics[0]) - observed) < 1e-9
    exceed = int((statistics[1:] >= statistics[0]).sum())
    return (exceed + 1) / (n_permutations + 1)


def _tiny() -> Diffusion:
    model = Diffusion((2,), hidden_dims=(16,), n_steps=12, seed=0).double()
    model._mark_fitted()
    return model


def test_ddim_with_eta_zero_is_deterministic_given_the_seed():
    model = _tiny()
    first = model.sample(6, seed=4, method="ddim", steps=5)
    assert torch.equal(first, model.sample(6, seed=4, method="ddim", steps=5))
    assert not torch.equal(first, model.sample(6, seed=5, method="ddim", steps=5))
    # No noise after x_T: the path is a function of x_T alone, so eta=0 ignores any extra
    # draws, while eta > 0 does use them.
    path = model.sample_path(6, seed=4, method="ddim", steps=5)
    assert path.shape == (5, 6, 2)
    noisy = model.sample_path(6, seed=4, method="ddim", steps=5, eta=0.5)
    assert torch.equal(noisy[0], path[0]) and not torch.allclose(noisy[-1], path[-1])


def test_ddim_with_all_steps_and_eta_one_is_ddpm_draw_for_draw():
    model = _tiny()
    ddpm = model.sample_path(5, seed=1)
    ddim = model.sample_path(5, seed=1, method="ddim", eta=1.0)
    assert ddpm.shape == ddim.shape == (12, 5, 2)
    assert torch.allclose(ddpm, ddim, atol=1e-10)
    # The same path needs DDPM's "fixed_small" variance: "fixed_large" differs.
    large = Diffusion((2,), hidden_dims=(16,), n_steps=12, seed=0, variance="fixed_large")
    large = large.double()
    large._mark_fitted()
    assert not torch.allclose(large.sample_path(5, seed=1), ddim)


@pytest.mark.parametrize(
    "options",
    [
        {"method": "ddpm"},
        {"method": "ddim", "steps": 25},
        {"method": "ddim", "steps": 25, "eta": 1.0},
    ],
    ids=["ddpm", "ddim-eta0", "ddim-eta1"],
)
def test_samples_of_the_exact_predictor_pass_an_mmd_test(options):
    model = oracle_model(100)
    draws = model.sample(400, seed=0, **options)
    assert mmd_p_value(draws, mixture(400, "valid")) > 0.01


def test_mmd_test_rejects_a_wrong_predictor():
    draws = oracle_model(100, scale=0.6).sample(400, seed=0)
    assert mmd_p_value(draws, mixture(400, "valid")) < 0.01


@pytest.mark.slow
def test_trained_model_bound_and_samples_on_the_mixture():
    from probgen.recipes import diffusion_gaussians

    model = diffusion_gaussians.build(n_epochs=60)
    model.fit(diffusion_gaussians.data("train", n=5000))
    x = diffusion_gaussians.data("test", n=1000)
    bound = model.log_prob(x).double()
    true = true_log_prob(x)
    assert float(bound.mean()) < float(true.mean())
    assert float(bound.mean()) > float(true.mean()) - 1.0
    assert mmd_p_value(model.sample(500, seed=0), x[:500]) > 0.01
    assert mmd_p_value(model.sample(500, seed=0, method="ddim", steps=50), x[:500]) > 0.01
