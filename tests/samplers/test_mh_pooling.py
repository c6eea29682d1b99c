"""MH adaptation pooled across chains: covariance, Student-t companion, stuck chains, R-hat.

Many short chains are what a vectorised sampler is for, so MH's warmup pools every chain's
draws: the random-walk covariance, the independence companion's Student-t, and restarting chains
stuck far below the others. The slow test holds the issue's bar: eight schools with 256 chains x
2,000 draws reaches max R-hat <= 1.01.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from probgen.samplers import diagnostics
from probgen.samplers.chains import sample_chains
from probgen.samplers.mh import (
    MultivariateStudentT,
    RandomWalkKernel,
    covariance_window_ends,
    shrunk_covariance,
)
from probgen.samplers.runners import pooled_student_t_kernel, restart_stragglers

COVARIANCE = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.3], [0.0, 0.3, 2.0]], dtype=torch.float64)


def _correlated_gaussian(x: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(
        torch.zeros(3, dtype=x.dtype), COVARIANCE
    ).log_prob(x)


def test_adapted_covariance_is_the_pooled_covariance_of_all_chains_window_draws():
    warmup = 200
    ends = sorted(covariance_window_ends(warmup))
    kernel = RandomWalkKernel(torch.arange(3), dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    window: list[torch.Tensor] = []
    # Chains sit in different places: a per-chain (unpooled) estimate would differ.
    offsets = torch.linspace(-3, 3, 16, dtype=torch.float64)[:, None] * torch.tensor(
        [1.0, 0.0, 0.5], dtype=torch.float64
    )
    for iteration in range(ends[0]):
        z = offsets + torch.randn(16, 3, generator=generator, dtype=torch.float64)
        window.append(z)
        kernel.adapt(iteration, warmup, z, torch.full((16,), 0.3, dtype=torch.float64))
    expected = shrunk_covariance(torch.cat(window))
    torch.testing.assert_close(kernel.cholesky @ kernel.cholesky.T, expected)
    # The step size restarts from 2.38 / sqrt(d) for the new covariance.
    assert kernel.step_size == pytest.approx(2.38 / math.sqrt(3))


def test_student_t_companion_is_fitted_to_every_chains_pooled_draws():
    kernel = RandomWalkKernel(torch.arange(3), dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    history = [
        torch.randn(32, 3, generator=generator, dtype=torch.float64) * torch.arange(1.0, 4.0)
        + torch.arange(32, dtype=torch.float64)[:, None] / 10
        for _ in range(20)
    ]
    companion = pooled_student_t_kernel(kernel, history, {"independence_scale": 1.5})
    pooled = torch.cat(history)
    torch.testing.assert_close(companion.proposal.loc, pooled.mean(0))
    scale = companion.proposal.scale_tril @ companion.proposal.scale_tril.T
    torch.testing.assert_close(scale, shrunk_covariance(pooled) * 1.5**2)
    assert companion.proposal.df == 5


def test_multivariate_student_t_density_and_reproducible_draws():
    loc = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    proposal = MultivariateStudentT(loc, COVARIANCE, df=5)
    points = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = stats.multivariate_t(loc.numpy(), COVARIANCE.numpy(), df=5).logpdf(points.numpy())
    np.testing.assert_allclose(proposal.log_prob(points).numpy(), expected, rtol=1e-10)
    first = proposal.draw(20_000, torch.Generator().manual_seed(3))
    again = proposal.draw(20_000, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)
    # Covariance of a t with 5 degrees of freedom: df / (df - 2) times the scale matrix.
    empirical = torch.cov(first.T)
    torch.testing.assert_close(empirical, COVARIANCE * 5 / 3, atol=0.12, rtol=0.1)


def test_default_mh_adds_pooled_independence_steps_that_decorrelate_short_chains():
    settings = dict(num_chains=64, num_samples=300, warmup=300, seed=0, progress=False)
    initial = torch.zeros(3)
    mixed = sample_chains(_correlated_gaussian, "mh", initial=initial, **settings)
    walk = sample_chains(
        _correlated_gaussian, "mh", initial=initial, proposal="random_walk", **settings
    )
    assert mixed.attrs["mh_independence_steps"] is True
    assert "mh_independence_steps" not in walk.attrs
    mixed_ess = float(np.min(diagnostics.ess_bulk(mixed["x"])))
    walk_ess = float(np.min(diagnostics.ess_bulk(walk["x"])))
    assert mixed_ess > 3 * walk_ess, (mixed_ess, walk_ess)
    draws = mixed["x"].reshape(-1, 3)
    np.testing.assert_allclose(np.cov(draws.T), COVARIANCE.numpy(), atol=0.08)
    np.testing.assert_allclose(draws.mean(0), 0.0, atol=0.04)


def test_companion_that_never_accepts_is_dropped_after_warmup():
    # A thin spherical shell: a t fitted to it puts almost no mass on the shell.
    def shell(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x.norm(dim=-1) - 10.0) / 0.01) ** 2

    samples = sample_chains(
        shell,
        "mh",
        num_chains=16,
        num_samples=20,
        warmup=300,
        seed=0,
        event_shape=(20,),
        progress=False,
    )
    assert samples.attrs["mh_independence_steps"] is False


def test_restart_stragglers_moves_only_chains_far_below_onto_other_chains():
    generator = torch.Generator().manual_seed(0)
    z = torch.arange(8, dtype=torch.float64)[:, None].repeat(1, 2)
    lp = torch.zeros(8, dtype=torch.float64)
    lp[[2, 5]] = -1e3
    lp[6] = -3.0  # below the median, but a Gaussian draw can be there
    new_z, new_lp, moved = restart_stragglers(z, lp, generator)
    assert moved == 2
    assert torch.equal(new_z[[0, 1, 3, 4, 6, 7]], z[[0, 1, 3, 4, 6, 7]])
    for chain in (2, 5):
        donor = int(new_z[chain, 0])
        assert donor not in (2, 5)
        assert new_lp[chain] == lp[donor]


@pytest.mark.slow
def test_eight_schools_256_short_chains_reach_r_hat_1_01():
    from probgen.recipes import eight_schools
    from probgen.recipes._shared_data import SharedDataMissing

    try:
        posterior = eight_schools.build()
    except SharedDataMissing as error:
        pytest.skip(str(error))
    samples = sample_chains(
        posterior,
        "mh",
        num_chains=256,
        num_samples=2000,
        warmup=2000,
        seed=0,
        progress=False,
    )
    summary = samples.summary(var_names=["mu", "tau", "theta_trans"])
    assert len(summary) == 10
    assert summary["r_hat"].max() <= 1.01, summary["r_hat"].max()
