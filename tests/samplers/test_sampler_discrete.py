"""Gibbs and MH on discrete targets whose exact distribution is known by enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from probgen.core.errors import DataError
from probgen.samplers.chains import sample_chains

CARDINALITIES = [2, 2, 2, 3]
PAIR_WEIGHT = 0.8


def _log_weight(x: torch.Tensor) -> torch.Tensor:
    """An Ising-like chain of three bits plus a categorical that depends on their sum."""
    bits = 2 * x[..., :3] - 1
    pairs = PAIR_WEIGHT * (bits[..., :-1] * bits[..., 1:]).sum(-1)
    field = torch.tensor([0.3, -0.2, 0.1], dtype=x.dtype) @ bits.unsqueeze(-1)
    category_logits = torch.tensor([0.0, 0.5, -0.5], dtype=x.dtype)
    category = x[..., 3].long()
    interaction = 0.4 * x[..., :3].sum(-1) * (category == 2)
    return pairs + field.squeeze(-1) + category_logits[category] + interaction


def _exact() -> tuple[list[tuple[int, ...]], np.ndarray]:
    states = list(itertools.product(*[range(k) for k in CARDINALITIES]))
    table = torch.tensor(states, dtype=torch.float64)
    log_weights = _log_weight(table)
    return states, torch.softmax(log_weights, 0).numpy()


@pytest.mark.parametrize("method", ["gibbs", "mh"])
def test_discrete_target_matches_enumeration(method):
    states, probabilities = _exact()
    samples = sample_chains(
        _log_weight,
        method,
        num_chains=200,
        num_samples=100,
        warmup=50,
        seed=0,
        cardinalities=CARDINALITIES,
        progress=False,
    )
    draws = samples["x"].reshape(-1, 4).astype(int)
    index = {state: i for i, state in enumerate(states)}
    counts = np.zeros(len(states))
    for row in map(tuple, draws):
        counts[index[row]] += 1
    frequencies = counts / counts.sum()
    distance = 0.5 * np.abs(frequencies - probabilities).sum()
    # Draws are correlated within chains; the bound allows for an ESS of a few thousand.
    assert distance < 3 * math.sqrt(len(states) / (2 * math.pi * 4000)) + 0.02, distance


def _mixed_model(y):
    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 1.0))
    label = pyro.sample("label", dist.Categorical(y.new_tensor([0.2, 0.3, 0.5])))
    pyro.sample("y", dist.Normal(mu + label.to(y.dtype), 1.0), obs=y)


def _sample_mixed_model(method, **settings):
    """`sample_chains` on `_mixed_model` conditioned on y = 2.5."""
    y = torch.tensor(2.5, dtype=torch.float64)
    return sample_chains(_mixed_model, method, model_args=(y,), progress=False, **settings)


def _exact_label_posterior():
    """p(label | y = 2.5): y | label ~ Normal(label, sqrt(2)) once mu is integrated out."""
    prior = np.array([0.2, 0.3, 0.5])
    likelihood = np.exp(-((2.5 - np.arange(3)) ** 2) / 4)
    return prior * likelihood / (prior * likelihood).sum()


def _assert_label_frequencies(samples, exact, *, z=4.0, min_ess=100.0):
    """Each label's frequency lies within z binomial standard errors of its exact posterior
    probability, the errors computed from the effective sample size of the label's indicator
    (draws of a chain are correlated); z = 4 over three labels fails a correct sampler with
    probability about 2e-4. `min_ess` keeps the test able to see an error of a few percent."""
    from probgen.samplers.diagnostics import ess_mean

    labels = samples["label"].astype(int)
    for label, probability in enumerate(exact):
        indicator = (labels == label).astype(float)
        ess = float(ess_mean(indicator))
        assert ess >= min_ess, (label, ess)
        bound = z * np.sqrt(probability * (1 - probability) / ess)
        frequency = indicator.mean()
        assert abs(frequency - probability) < bound, (label, frequency, probability, bound)


def test_gibbs_on_pyro_model_with_discrete_site():
    samples = _sample_mixed_model("gibbs", num_chains=200, num_samples=100, warmup=100, seed=1)
    exact = _exact_label_posterior()
    _assert_label_frequencies(samples, exact, min_ess=5000)
    # mu | y has mean E[(y - label) / 2]
    assert abs(samples["mu"].mean() - float((exact * (2.5 - np.arange(3)) / 2).sum())) < 0.05


def test_nuts_refuses_discrete_site_and_names_it():
    with pytest.raises(DataError, match="label"):
        _sample_mixed_model("nuts", num_chains=1, num_samples=5, warmup=5)


class _NormalGamma(torch.nn.Module):
    """Normal data with unknown mean and precision under a Normal-Gamma prior; exact Gibbs."""

    def __init__(self, data):
        super().__init__()
        self.data = data
        self.event_shape = torch.Size([2])
        self.prior_mean, self.prior_scale, self.shape, self.rate = 0.0, 1.0, 2.0, 2.0

    def initial_state(self, num_chains, *, generator=None, evidence=None):
        return torch.ones(num_chains, 2, dtype=torch.float64)

    def gibbs_step(self, state, *, generator=None, evidence=None):
        n, total = len(self.data), float(self.data.sum())
        precision = state[:, 1]
        posterior_scale = self.prior_scale + n
        mean = (self.prior_scale * self.prior_mean + total) / posterior_scale
        noise = torch.randn(state.shape[0], generator=generator, dtype=torch.float64)
        mu = mean + noise / torch.sqrt(posterior_scale * precision)
        squares = ((self.data[None, :] - mu[:, None]) ** 2).sum(-1)
        shape = self.shape + (n + 1) / 2
        rate = self.rate + 0.5 * (squares + self.prior_scale * (mu - self.prior_mean) ** 2)
        gamma = torch.distributions.Gamma(torch.full_like(rate, shape), rate)
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31, (), generator=generator)))
            precision = gamma.sample()
        return torch.stack([mu, precision], -1)

    def log_prob(self, x):
        raise NotImplementedError


def test_model_gibbs_step_matches_normal_gamma_posterior():
    data = torch.as_tensor(np.random.default_rng(3).normal(1.0, 0.5, size=30))
    model = _NormalGamma(data)
    samples = sample_chains(
        model, "gibbs", num_chains=100, num_samples=200, warmup=50, seed=4, progress=False
    )
    draws = samples["x"].reshape(-1, 2)
    n, mean = len(data), float(data.mean())
    shape = model.shape + n / 2
    rate = (
        model.rate
        + 0.5 * float(((data - mean) ** 2).sum())
        + (model.prior_scale * n * (mean - model.prior_mean) ** 2 / (2 * (model.prior_scale + n)))
    )
    posterior_mean = (model.prior_scale * model.prior_mean + n * mean) / (model.prior_scale + n)
    assert abs(draws[:, 1].mean() / (shape / rate) - 1) < 0.03
    assert abs(draws[:, 0].mean() - posterior_mean) < 0.02
    assert samples.attrs["sampler"] == "gibbs_step"


def test_gibbs_with_nuts_for_continuous_sites():
    samples = _sample_mixed_model(
        "gibbs", num_chains=2, num_samples=250, warmup=100, seed=2, continuous="nuts"
    )
    _assert_label_frequencies(samples, _exact_label_posterior(), min_ess=250)
    assert np.isfinite(samples.stats["step_size"]).all()
