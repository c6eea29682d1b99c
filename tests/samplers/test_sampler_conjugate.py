"""Every method against closed-form posteriors of conjugate models."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from scipy import stats

from probgen.samplers.chains import sample_chains

GENERATOR = np.random.default_rng(7)
NORMAL_DATA = torch.as_tensor(GENERATOR.normal(1.5, 1.0, size=20))
BINOMIAL_TRIALS, BINOMIAL_SUCCESSES = 60, 21
POISSON_DATA = torch.as_tensor(GENERATOR.poisson(3.0, size=25), dtype=torch.float64)
CATEGORY_COUNTS = torch.tensor([12.0, 30.0, 8.0], dtype=torch.float64)


def normal_normal():
    prior_sd = 2.0
    precision = 1 / prior_sd**2 + len(NORMAL_DATA)
    mean = float(NORMAL_DATA.sum()) / precision
    posterior = stats.norm(mean, precision**-0.5)

    def log_density(x):
        prior = torch.distributions.Normal(0.0, prior_sd).log_prob(x[..., 0])
        return prior + torch.distributions.Normal(x, 1.0).log_prob(NORMAL_DATA).sum(-1)

    return log_density, constraints.real, (1,), posterior.mean()[None], posterior.std()[None]


def beta_binomial():
    a, b = 2.0, 3.0
    posterior = stats.beta(a + BINOMIAL_SUCCESSES, b + BINOMIAL_TRIALS - BINOMIAL_SUCCESSES)

    def log_density(p):
        p = p[..., 0]
        prior = torch.distributions.Beta(a, b).log_prob(p)
        likelihood = torch.distributions.Binomial(BINOMIAL_TRIALS, probs=p).log_prob(
            torch.tensor(float(BINOMIAL_SUCCESSES), dtype=p.dtype)
        )
        return prior + likelihood

    return log_density, constraints.unit_interval, (1,), [posterior.mean()], [posterior.std()]


def gamma_poisson():
    shape, rate = 2.0, 1.0
    posterior = stats.gamma(shape + float(POISSON_DATA.sum()), scale=1 / (rate + len(POISSON_DATA)))

    def log_density(x):
        lam = x[..., 0]
        prior = torch.distributions.Gamma(shape, rate).log_prob(lam)
        return prior + torch.distributions.Poisson(lam[..., None]).log_prob(POISSON_DATA).sum(-1)

    return log_density, constraints.positive, (1,), [posterior.mean()], [posterior.std()]


def dirichlet_categorical():
    alpha = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    posterior = stats.dirichlet((alpha + CATEGORY_COUNTS).numpy())

    def log_density(p):
        prior = torch.distributions.Dirichlet(alpha).log_prob(p)
        return prior + (CATEGORY_COUNTS * p.log()).sum(-1)

    return log_density, constraints.simplex, (3,), posterior.mean(), np.sqrt(posterior.var())


MODELS = {
    "normal_normal": normal_normal,
    "beta_binomial": beta_binomial,
    "gamma_poisson": gamma_poisson,
    "dirichlet_categorical": dirichlet_categorical,
}
SETTINGS = {
    "mh": dict(num_chains=64, num_samples=400, warmup=300),
    "gibbs": dict(num_chains=64, num_samples=400, warmup=300),
    "nuts": dict(num_chains=2, num_samples=250, warmup=150),
    "hmc": dict(num_chains=2, num_samples=400, warmup=200, num_steps=5),
    "svi": dict(num_chains=4, num_samples=500, warmup=0, num_steps=800, learning_rate=0.05),
}


def _check(draws, mean, sd, summary, method):
    draws = draws.reshape(-1, draws.shape[-1])
    mean, sd = np.asarray(mean, dtype=float), np.asarray(sd, dtype=float)
    got_mean, got_sd = draws.mean(0), draws.std(0, ddof=1)
    if method == "svi":
        # A Gaussian guide in unconstrained space: close, not exact.
        assert np.all(np.abs(got_mean - mean) < 0.15 * sd), (got_mean, mean)
        assert np.all(np.abs(got_sd / sd - 1) < 0.2), (got_sd, sd)
        return
    mcse = summary["mcse_mean"].to_numpy()
    assert np.all(np.abs(got_mean - mean) < 4 * mcse + 1e-9), (got_mean, mean, mcse)
    assert np.all(np.abs(got_sd / sd - 1) < 0.12), (got_sd, sd)


# HMC with a fixed trajectory length takes 15-60 s on these (Pyro runs one kernel per chain):
# they run with -m slow; normal_normal keeps HMC in the default run.
SLOW_CASES = {
    ("beta_binomial", "hmc"),
    ("dirichlet_categorical", "hmc"),
    ("gamma_poisson", "hmc"),
    ("pyro_normal", "hmc"),
}


def _cases():
    for model in MODELS:
        for method in SETTINGS:
            marks = [pytest.mark.slow] if (model, method) in SLOW_CASES else []
            yield pytest.param(model, method, id=f"{model}-{method}", marks=marks)


def _sample_conjugate(model, method, seed, **settings):
    """Draws from the log density of `MODELS[model]`, with its exact posterior mean and sd."""
    log_density, support, shape, mean, sd = MODELS[model]()
    samples = sample_chains(
        log_density,
        method,
        seed=seed,
        support=support,
        event_shape=shape,
        progress=False,
        **settings,
    )
    return samples, shape, mean, sd


@pytest.mark.parametrize(("model", "method"), list(_cases()))
def test_conjugate_posterior(model, method):
    settings = dict(SETTINGS[method])
    samples, shape, mean, sd = _sample_conjugate(model, method, 3, **settings)
    assert samples["x"].shape == (settings["num_chains"], settings["num_samples"], *shape)
    _check(samples["x"], mean, sd, samples.summary(), method)


def _pyro_normal_model(y):
    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 2.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(m, marks=[pytest.mark.slow] if ("pyro_normal", m) in SLOW_CASES else [])
        for m in SETTINGS
    ],
)
def test_pyro_model_normal_normal(method):
    _, _, _, mean, sd = normal_normal()
    settings = dict(SETTINGS[method])
    samples = sample_chains(
        _pyro_normal_model,
        method,
        seed=1,
        model_args=(NORMAL_DATA,),
        progress=False,
        **settings,
    )
    assert set(samples) == {"mu"}
    _check(samples["mu"][..., None], mean, sd, samples.summary(), method)


def test_independence_proposals_after_warmup():
    samples, _, mean, sd = _sample_conjugate(
        "gamma_poisson",
        "mh",
        0,
        num_chains=64,
        num_samples=300,
        warmup=300,
        proposal="independence",
    )
    # A widened Gaussian fitted to the warmup accepts often.
    assert samples.stats["acceptance_rate"].mean() > 0.5
    _check(samples["x"], mean, sd, samples.summary(), "mh")
