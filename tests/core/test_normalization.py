"""The importance-sampling normalisation check of the contract suite, above two dimensions.

It must pass correct continuous models in 3-5 dimensions and catch a log_prob that is off by
a constant (exp(0.5) = 1.65 instead of 1), which the grid integral cannot see there.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import probgen
from probgen.core.normalization import importance_normalizer
from probgen.core.testing import ContractError, check_density


def _data(dim: int, n: int = 600) -> np.ndarray:
    rng = np.random.default_rng(dim)
    mixing = rng.normal(size=(dim, dim)) / math.sqrt(dim) + np.eye(dim)
    centres = np.where(rng.random((n, 1)) < 0.5, 2.5, -2.5)
    return (rng.normal(size=(n, dim)) @ mixing + centres).astype(np.float32)


class ShiftedMixture(probgen.GaussianMixture):
    """A mixture whose log_prob is off by +0.5: its density integrates to exp(0.5)."""

    def log_prob(self, x):
        return super().log_prob(x) + 0.5


class ShrunkFlow(probgen.Flow):
    """A flow whose log_prob is off by -0.5: its density integrates to exp(-0.5)."""

    def log_prob(self, x, context=None, **options):
        return super().log_prob(x, context, **options) - 0.5


def _flow(cls, dim: int):
    return cls(dim, n_layers=3, hidden_dims=(32,), n_epochs=15, seed=0)


@pytest.mark.parametrize("dim", [3, 5])
def test_correct_mixture_passes(dim):
    report = check_density(probgen.GaussianMixture(2, seed=0), _data(dim), check_normalization=True)
    result = report["importance_normalizer"]
    assert result["dimension"] == dim
    assert abs(result["normalizer"] - 1) <= 4 * result["standard_error"] + 0.02
    assert "grid_integral" not in report


@pytest.mark.parametrize("dim", [3, 4])
def test_correct_flow_passes(dim):
    report = check_density(_flow(probgen.Flow, dim), _data(dim), check_normalization=True)
    assert report["importance_normalizer"]["effective_sample_size"] >= 30


@pytest.mark.parametrize("dim", [3, 5])
def test_unnormalised_mixture_fails(dim):
    with pytest.raises(ContractError, match=r"integrates to 1\.[5-8]"):
        check_density(ShiftedMixture(2, seed=0), _data(dim), check_save=False)


def test_unnormalised_flow_fails():
    with pytest.raises(ContractError, match=r"integrates to 0\.[5-7]"):
        check_density(_flow(ShrunkFlow, 3), _data(3), check_save=False)


def test_estimate_of_a_known_gaussian_is_within_its_error():
    class Gaussian:
        event_shape = torch.Size([4])
        scale = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=torch.float64)

        def sample(self, n, seed=None):
            generator = torch.Generator().manual_seed(seed)
            return torch.randn(n, 4, generator=generator, dtype=torch.float64) * self.scale

        def log_prob(self, x, shift=0.0):
            return torch.distributions.Normal(0.0, self.scale).log_prob(x).sum(-1) + shift

    for seed in range(3):
        result = importance_normalizer(Gaussian(), seed=seed)
        assert abs(result["normalizer"] - 1) < 4 * result["standard_error"]
        assert result["standard_error"] < 0.02
        assert result["effective_sample_size"] > 5000


def test_models_with_a_bound_only_report_the_estimate():
    """A lower bound (dequantised flow) is reported, never required to integrate to one."""
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=(300, 3))
    model = probgen.Flow(3, n_layers=2, hidden_dims=(16,), n_levels=4, n_epochs=2, seed=0)
    report = check_density(model, counts, check_save=False)
    assert report["log_prob_kind"] == "lower_bound"
