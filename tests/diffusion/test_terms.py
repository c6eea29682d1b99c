"""The pure pieces of the bound: schedules, Gaussian KLs, the decoders, the prior term, noise."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch.distributions import Normal, kl_divergence

from probgen.diffusion.bound import (
    counter_normal,
    discretized_gaussian_log_likelihood,
    gaussian_kl,
    gaussian_log_likelihood,
    prior_kl,
    q_posterior,
    reverse_params,
)
from probgen.diffusion.schedules import Schedule, cosine_betas, linear_betas


def test_linear_schedule_is_ho_et_al_rescaled_by_1000_over_T():
    assert torch.allclose(linear_betas(1000), torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    assert torch.allclose(linear_betas(100), torch.linspace(1e-3, 0.2, 100, dtype=torch.float64))


def test_cosine_schedule_alpha_bar_is_the_squared_cosine():
    T, s = 50, 0.008
    schedule = Schedule(cosine_betas(T))
    t = torch.arange(1, T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    closed = f / math.cos(s / (1 + s) * math.pi / 2) ** 2
    # Equal wherever beta is not clipped at 0.999 (all steps but the last).
    assert torch.allclose(schedule.alpha_bars[:-1], closed[:-1], rtol=1e-10)
    assert schedule.betas[-1] == pytest.approx(0.999)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_matches_the_product_of_gaussians(kind):
    # q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0): completing the
    # square gives precision alpha_t / beta_t + 1 / (1 - alpha_bar_{t-1}).
    schedule = Schedule.make(kind, 20)
    steps = torch.arange(1, 20)
    b, a = schedule.betas[steps], schedule.alphas[steps]
    ab_prev = schedule.alpha_bars[steps - 1]
    x0 = torch.linspace(-1, 1, 19, dtype=torch.float64)[:, None]
    xt = torch.linspace(2, -0.5, 19, dtype=torch.float64)[:, None]
    precision = a / b + 1 / (1 - ab_prev)
    mean = (a.sqrt() / b * xt[:, 0] + ab_prev.sqrt() / (1 - ab_prev) * x0[:, 0]) / precision
    got_mean, got_log_var = q_posterior(schedule, x0, xt, steps)
    assert torch.allclose(got_mean[:, 0], mean, rtol=1e-10)
    assert torch.allclose(got_log_var[:, 0].exp(), 1 / precision, rtol=1e-10)


def test_fixed_variances_and_learned_interpolation():
    schedule = Schedule.make("linear", 10)
    assert torch.allclose(schedule.fixed_log_variance("fixed_large")[1:], schedule.betas[1:].log())
    assert torch.allclose(
        schedule.fixed_log_variance("fixed_small")[1:], schedule.posterior_variance[1:].log()
    )
    xt, eps = torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64)
    steps = torch.tensor([1, 4, 9])
    for frac, expected in ((1.0, schedule.betas), (-1.0, schedule.posterior_variance)):
        out = reverse_params(schedule, xt, steps, eps, "learned", torch.full_like(xt, frac))
        assert torch.allclose(out["log_var"][:, 0], expected[steps].log())


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = torch.randn(4, 50, generator=g, dtype=torch.float64)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    assert torch.allclose(gaussian_kl(m1, lv1, m2, lv2), expected, rtol=1e-10)
    x = torch.randn(50, generator=g, dtype=torch.float64)
    assert torch.allclose(
        gaussian_log_likelihood(x, m1, lv1), Normal(m1, (0.5 * lv1).exp()).log_prob(x)
    )


def test_prior_term_matches_torch_distributions():
    schedule = Schedule.make("linear", 10)
    x0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ab = schedule.alpha_bars[-1]
    q = Normal(ab.sqrt() * x0, (1 - ab).sqrt())
    expected = kl_divergence(q, Normal(torch.zeros_like(x0), 1.0)).sum(-1)
    assert torch.allclose(prior_kl(x0, schedule), expected, rtol=1e-10)


@pytest.mark.parametrize("levels", [2, 256])
def test_discretized_decoder_sums_to_one_and_matches_scipy(levels):
    values = torch.arange(levels, dtype=torch.float64) * 2 / (levels - 1) - 1
    for mean, log_scale in ((0.3, -3.0), (4.0, 0.5), (-0.99, -7.0), (0.0, -1.0)):
        log_p = discretized_gaussian_log_likelihood(
            values, torch.tensor(mean, dtype=torch.float64),
            torch.tensor(log_scale, dtype=torch.float64), levels,
        )
        assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-10)
        sd, half = math.exp(log_scale), 1 / (levels - 1)
        edges = [-math.inf] + [(2 * k + 1) / (levels - 1) - 1 for k in range(levels - 1)]
        edges += [math.inf]
        expected = [norm.cdf((hi - mean) / sd) - norm.cdf((lo - mean) / sd)
                    for lo, hi in zip(edges[:-1], edges[1:])]
        got = log_p.exp().tolist()
        assert got == pytest.approx(expected, abs=1e-12), half


def test_counter_noise_is_standard_normal_and_independent_of_the_batch():
    rows = torch.arange(40000)
    z = counter_normal(7, rows, torch.full_like(rows, 3), (3,), torch.float64)
    assert z.mean(0).abs().max() < 0.03 and (z.std(0) - 1).abs().max() < 0.03
    assert abs(float(torch.corrcoef(z.T)[0, 1])) < 0.03
    part = counter_normal(7, rows[100:105], torch.full((5,), 3), (3,), torch.float64)
    assert torch.equal(part, z[100:105])
    other_step = counter_normal(7, rows[:5], torch.full((5,), 4), (3,), torch.float64)
    other_seed = counter_normal(8, rows[:5], torch.full((5,), 3), (3,), torch.float64)
    assert not torch.allclose(other_step, z[:5]) and not torch.allclose(other_seed, z[:5])
