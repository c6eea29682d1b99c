"""Metrics against brute force and closed forms: MMD, Fréchet distance, mode coverage,
held-out log-likelihood and bits per dimension."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from probgen.core.errors import DataError
from probgen.metrics import (
    bits_per_dim,
    frechet_distance,
    frechet_distance_from_samples,
    heldout_log_likelihood,
    mmd,
    mode_coverage,
)


def _brute_force_mmd(x: np.ndarray, y: np.ndarray, h: float, unbiased: bool) -> float:
    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))

    n, m = len(x), len(y)
    if unbiased:
        xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    else:
        xx = sum(k(a, b) for a in x for b in x) / n**2
        yy = sum(k(a, b) for a in y for b in y) / m**2
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_matches_brute_force(unbiased):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 2)), rng.normal(1.0, 1.0, size=(5, 2))
    value = mmd(x, y, bandwidth=0.8, unbiased=unbiased)
    assert math.isclose(float(value), _brute_force_mmd(x, y, 0.8, unbiased), rel_tol=1e-10)
    several = mmd(x, y, bandwidth=[0.5, 2.0], unbiased=unbiased)
    expected = sum(_brute_force_mmd(x, y, h, unbiased) for h in (0.5, 2.0))
    assert math.isclose(float(several), expected, rel_tol=1e-10)


def test_mmd_separates_distributions():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=generator)
    same = torch.randn(300, 2, generator=generator)
    shifted = torch.randn(300, 2, generator=generator) + 1.0
    assert abs(float(mmd(x, same))) < 0.01
    assert float(mmd(x, shifted)) > 10 * abs(float(mmd(x, same)))
    with pytest.raises(DataError, match="features"):
        mmd(x, torch.zeros(4, 3))


def test_frechet_distance_closed_forms():
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2.
    value = frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]], squared=True)
    assert math.isclose(float(value), 9.0 + 1.0, rel_tol=1e-12)
    # Against scipy's matrix square root on random covariances.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cov_1, cov_2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mean_1, mean_2 = rng.normal(size=4), rng.normal(size=4)
    cross = scipy.linalg.sqrtm(cov_1 @ cov_2).real
    expected = ((mean_1 - mean_2) ** 2).sum() + np.trace(cov_1 + cov_2 - 2 * cross)
    value = frechet_distance(mean_1, cov_1, mean_2, cov_2, squared=True)
    assert math.isclose(float(value), expected, rel_tol=1e-8)
    assert math.isclose(float(frechet_distance(mean_1, cov_1, mean_1, cov_1)), 0.0, abs_tol=1e-6)


def test_frechet_distance_from_samples_uses_feature_statistics():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=generator)
    y = 2 * torch.randn(500, 3, generator=generator) + 1
    value = frechet_distance_from_samples(x, y)
    expected = frechet_distance(
        x.double().mean(0),
        torch.cov(x.double().T),
        y.double().mean(0),
        torch.cov(y.double().T),
        squared=True,
    )
    assert torch.isclose(value, expected)
    # Population value: 3 * 1^2 + 3 * (2 - 1)^2 = 6.
    assert abs(float(value) - 6.0) < 1.0
    doubled = frechet_distance_from_samples(x, y, features=lambda v: 2 * v)
    assert torch.isclose(doubled, 4 * value)


def test_mode_coverage_counts_modes_and_quality():
    centres = torch.tensor([[math.cos(a), math.sin(a)] for a in np.linspace(0, 2 * math.pi, 9)[:8]])
    generator = torch.Generator().manual_seed(0)
    five = centres[torch.arange(500) % 5] + 0.01 * torch.randn(500, 2, generator=generator)
    report = mode_coverage(five, centres, std=0.02)
    assert report["modes_covered"] == 5 and report["kl_to_mixture_weights"] == math.inf
    assert report["counts"] == [100] * 5 + [0] * 3
    every = centres[torch.arange(800) % 8] + 0.01 * torch.randn(800, 2, generator=generator)
    far = torch.full((200, 2), 10.0)
    report = mode_coverage(torch.cat([every, far]), centres, std=0.02)
    assert report["modes_covered"] == 8
    assert math.isclose(report["high_quality_fraction"], 0.8)
    assert math.isclose(report["kl_to_mixture_weights"], 0.0, abs_tol=1e-12)


class _StandardNormal:
    event_shape = torch.Size([2])
    log_prob_kind = "exact"

    def log_prob(self, x):
        return torch.distributions.Normal(0.0, 1.0).log_prob(torch.as_tensor(x)).sum(-1)


def test_heldout_log_likelihood_and_bits_per_dim():
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    report = heldout_log_likelihood(_StandardNormal(), x, batch_size=128)
    exact = torch.distributions.Normal(0.0, 1.0).log_prob(x.double()).sum(-1)
    assert math.isclose(report["mean_log_prob"], float(exact.mean()), rel_tol=1e-6)
    assert math.isclose(
        report["standard_error"], float(exact.std() / math.sqrt(1000)), rel_tol=1e-5
    )
    assert report["n_examples"] == 1000 and report["log_prob_kind"] == "exact"
    assert math.isclose(report["bits_per_dim"], -report["mean_log_prob"] / (2 * math.log(2)))
    # 8-bit pixels modelled on x / 256: add log2(256) = 8 bits per dimension.
    assert math.isclose(float(bits_per_dim(torch.tensor(0.0), 1, scale=256.0)), 8.0)
    with pytest.raises(DataError, match="n_dims"):
        bits_per_dim(torch.tensor(0.0), 0)
