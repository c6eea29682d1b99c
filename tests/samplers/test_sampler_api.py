"""Diagnostics against ArviZ, Samples files and plots, seeding, bad input, interruption."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from probgen.core.errors import DataError, ModelFileError
from probgen.samplers import diagnostics
from probgen.samplers.chains import Samples, sample_chains
from probgen.samplers.pyro_density import PyroDensity
from probgen.samplers.pyro_distribution import as_pyro

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import arviz as az


def _standard_normal(x):
    return -0.5 * (x**2).sum(-1)


def _sample_standard_normal(method, *, num_chains, num_samples, warmup, seed=0, **options):
    """`sample_chains` on a 2-D standard normal function, starting from the origin."""
    return sample_chains(
        _standard_normal,
        method,
        num_chains=num_chains,
        num_samples=num_samples,
        warmup=warmup,
        seed=seed,
        initial=torch.zeros(2, dtype=torch.float64),
        progress=False,
        **options,
    )


def _autocorrelated_draws(seed: int, shape=(4, 301, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=shape)
    draws = np.zeros(shape)
    for t in range(1, shape[1]):
        draws[:, t] = 0.8 * draws[:, t - 1] + noise[:, t]
    draws[1] += 0.2  # a shifted chain, so R-hat is visibly above one
    return draws


@pytest.mark.parametrize("seed", [0, 1])
def test_diagnostics_match_arviz(seed):
    draws = _autocorrelated_draws(seed)
    for index in range(draws.shape[-1]):
        one = draws[..., index]
        assert diagnostics.rhat(draws)[index] == pytest.approx(float(az.rhat(one)), rel=1e-10)
        assert diagnostics.ess_bulk(draws)[index] == pytest.approx(float(az.ess(one)), rel=1e-10)
        tail = float(az.ess(one, method="tail"))
        assert diagnostics.ess_tail(draws)[index] == pytest.approx(tail, rel=1e-10)
        # With numba installed ArviZ returns the mean's MCSE as a one-element array.
        mcse = np.asarray(az.mcse(one)).item()
        assert diagnostics.mcse_mean(draws)[index] == pytest.approx(mcse, rel=1e-10)


def test_summary_columns_and_to_arviz():
    samples = _sample_standard_normal("mh", num_chains=8, num_samples=50, warmup=50, seed=0)
    table = samples.summary()
    assert list(table.columns) == [
        "mean",
        "sd",
        "q5",
        "q50",
        "q95",
        "mcse_mean",
        "ess_bulk",
        "ess_tail",
        "r_hat",
    ]
    assert list(table.index) == ["x[0]", "x[1]"]
    data = samples.to_arviz()
    assert data.posterior["x"].shape[:2] == (8, 50)
    assert {"lp", "acceptance_rate", "step_size"} <= set(data.sample_stats.data_vars)


def test_same_seed_same_draws_and_different_seed_differs():
    def run(method, seed, **options):
        return _sample_standard_normal(
            method, num_chains=2, num_samples=20, warmup=20, seed=seed, **options
        )["x"]

    for method, options in [("mh", {}), ("gibbs", {}), ("nuts", {}), ("svi", {"num_steps": 20})]:
        first, again, other = (
            run(method, 5, **options),
            run(method, 5, **options),
            run(method, 6, **options),
        )
        assert np.array_equal(first, again), method
        assert not np.array_equal(first, other), method


def test_save_load_round_trip(tmp_path):
    samples = _sample_standard_normal("nuts", num_chains=2, num_samples=10, warmup=10, seed=0)
    path = tmp_path / "run.safetensors"
    samples.save(path)
    loaded = Samples.load(path)
    assert np.array_equal(loaded["x"], samples["x"])
    assert loaded.stats["diverging"].dtype == bool
    assert loaded.attrs["method"] == "nuts" and loaded.attrs["seed"] == 0
    (tmp_path / "junk").write_bytes(b"not a file")
    with pytest.raises(ModelFileError):
        Samples.load(tmp_path / "junk")


def test_plot_writes_pngs(tmp_path):
    samples = Samples({"mu": np.random.default_rng(0).normal(size=(2, 30))})
    paths = samples.plot(tmp_path)
    assert [p.name for p in paths] == ["trace.png", "posterior.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


class _Interrupting:
    def __init__(self, after: int):
        self.calls, self.after = 0, after

    def __call__(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return _standard_normal(x)


def test_interrupted_run_leaves_readable_draws(tmp_path):
    path = tmp_path / "partial.safetensors"
    with pytest.raises(KeyboardInterrupt):
        sample_chains(
            _Interrupting(after=80),
            "mh",
            num_chains=4,
            num_samples=200,
            warmup=10,
            seed=0,
            initial=torch.zeros(1, dtype=torch.float64),
            progress=False,
            checkpoint=path,
            flush_every=10,
        )
    partial = Samples.load(path)
    assert partial.attrs["complete"] is False
    assert 0 < partial.num_draws < 200
    assert not np.isnan(partial["x"]).any()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_chains": 0}, "num_chains"),
        ({"num_samples": 0}, "num_samples"),
        ({"method": "metropolis"}, "method"),
        ({"method": "mh", "stepsize": 0.1}, "stepsize"),
        ({"warmup": -1}, "warmup"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, message):
    settings = {"method": "mh", "num_chains": 2, "num_samples": 5, "warmup": 5}
    settings.update(arguments)
    with pytest.raises(DataError, match=message):
        sample_chains(_standard_normal, initial=torch.zeros(1), progress=False, seed=0, **settings)


@pytest.mark.parametrize(
    ("log_density", "size", "message"),
    [
        (lambda x: x.sum(-1) * math.nan, 1, "NaN"),
        (lambda x: x.sum(-1) + math.inf, 1, r"\+inf"),
        (lambda x: x, 3, "one value per point"),
    ],
    ids=["nan", "plus_inf", "not_one_value_per_point"],
)
def test_target_returning_nan_or_plus_inf_is_an_error(log_density, size, message):
    with pytest.raises(DataError, match=message):
        sample_chains(
            log_density,
            "mh",
            num_chains=2,
            num_samples=5,
            warmup=5,
            initial=torch.zeros(size),
            progress=False,
        )


def test_function_without_shape_is_an_error():
    with pytest.raises(DataError, match="initial"):
        sample_chains(
            _standard_normal,
            "mh",
            num_chains=2,
            num_samples=5,
            warmup=5,
            progress=False,
            support=None,
        )


def _poisson_latent_model():
    pyro.sample("count", dist.Poisson(3.0))


def test_unsupported_pyro_site_is_named():
    with pytest.raises(DataError, match="count"):
        sample_chains(
            _poisson_latent_model, "mh", num_chains=2, num_samples=5, warmup=5, progress=False
        )


def _indexing_model(y):
    # Indexes from the left, which the chain plate cannot vectorise: detected, then looped.
    beta = pyro.sample("beta", dist.Normal(torch.zeros(2, dtype=y.dtype), 1.0).to_event(1))
    pyro.sample("y", dist.Normal(beta[0] + beta[1], 1.0), obs=y)


def test_pyro_density_vectorisation_detection_and_log_prob():
    y = torch.tensor(1.0, dtype=torch.float64)
    density = PyroDensity(_indexing_model, model_args=(y,))
    assert density.vectorize is False
    z = torch.tensor([[0.1, 0.2], [0.3, -0.4]], dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(
        -1
    ) + torch.distributions.Normal(z.sum(-1), 1.0).log_prob(y)
    assert torch.allclose(density.log_prob(z), expected)


def test_pyro_density_log_jacobian_and_constrain():
    def model():
        pyro.sample("scale", dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 3.0))

    density = PyroDensity(model)
    z = torch.tensor([[0.3]], dtype=torch.float64)
    scale = torch.exp(z[0, 0])
    expected = torch.distributions.Gamma(2.0, 3.0).log_prob(scale) + z[0, 0]
    assert torch.allclose(density.log_prob(z)[0], expected.double())
    assert torch.allclose(density.constrain(z)["scale"], scale)
    back = density.unconstrain({"scale": scale[None]})
    assert torch.allclose(back, z)


class _Gaussian:
    event_shape = torch.Size([2])

    def log_prob(self, x):
        return torch.distributions.Normal(1.0, 1.0).log_prob(x).sum(-1)

    def sample(self, n, *, seed=None):
        return 1.0 + torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def test_as_pyro_wraps_a_density_inside_a_pyro_model():
    wrapped = as_pyro(_Gaussian())
    value = torch.tensor([[0.5, 1.5]])
    assert torch.allclose(wrapped.log_prob(value), _Gaussian().log_prob(value))

    def model():
        pyro.sample("x", as_pyro(_Gaussian()))

    samples = sample_chains(
        model, "mh", num_chains=32, num_samples=200, warmup=200, seed=0, progress=False
    )
    assert abs(samples["x"].mean() - 1.0) < 0.1
    pyro.set_rng_seed(0)
    assert pyro.poutine.trace(model).get_trace().nodes["x"]["value"].shape == (2,)
