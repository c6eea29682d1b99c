"""ChEES-HMC (`sample_chains(..., "chees")`): known answers, adaptation, divergences, errors.

Oracles: Gaussians with known mean and covariance (means within 4 MCSE, sds within 10%), the
posteriordb reference posteriors (skipped without ../shared/data), hand-made targets that
force divergences. Every option has a test that fails when the option is ignored.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from probgen.core.errors import DataError
from probgen.samplers import diagnostics
from probgen.samplers.chains import sample_chains
from probgen.samplers.chees import DualAveraging, halton, leapfrog


def _gaussian(dim: int, correlation: float, seed: int = 0):
    """Mean, covariance and log density of a Gaussian with AR(1) correlation and scales
    spread over two orders of magnitude (so the diagonal mass matrix has work to do)."""
    generator = np.random.default_rng(seed)
    mean = generator.normal(0.0, 3.0, dim)
    scales = np.exp(np.linspace(math.log(0.2), math.log(5.0), dim))
    lags = np.abs(np.subtract.outer(np.arange(dim), np.arange(dim)))
    covariance = np.outer(scales, scales) * correlation**lags
    precision = torch.as_tensor(np.linalg.inv(covariance))
    centre = torch.as_tensor(mean)

    def log_density(x: torch.Tensor) -> torch.Tensor:
        centred = x - centre
        return -0.5 * ((centred @ precision) * centred).sum(-1)

    return mean, covariance, log_density


def _check_moments(draws: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> list[str]:
    """Failures of means within 4 MCSE and sds within 10% of the known answers."""
    failures = []
    for i in range(draws.shape[-1]):
        chains = draws[..., i]
        mcse = float(diagnostics.mcse_mean(chains))
        if abs(chains.mean() - mean[i]) > 4 * mcse:
            failures.append(
                f"mean[{i}] {chains.mean():.3f} vs {mean[i]:.3f} (4 MCSE {4 * mcse:.3f})"
            )
        if abs(chains.std(ddof=1) / sd[i] - 1) > 0.10:
            failures.append(f"sd[{i}] {chains.std(ddof=1):.3f} vs {sd[i]:.3f}")
    return failures


def _run(log_density, dim, **kwargs):
    settings = dict(num_chains=16, num_samples=100, warmup=150, seed=0, progress=False)
    settings.update(kwargs)
    return sample_chains(
        log_density, "chees", initial=torch.zeros(dim, dtype=torch.float64), **settings
    )


def _standard_normal(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x**2).sum(-1)


# ---- known answers --------------------------------------------------------------------------
@pytest.mark.parametrize(("dim", "correlation"), [(10, 0.7), (100, 0.5)])
def test_gaussian_means_and_sds(dim, correlation):
    mean, covariance, log_density = _gaussian(dim, correlation)
    samples = _run(log_density, dim, num_chains=32, num_samples=150, warmup=200)
    failures = _check_moments(samples["x"], mean, np.sqrt(np.diag(covariance)))
    assert not failures, failures
    assert samples.num_divergences == 0
    assert float(samples.summary()["r_hat"].max()) < 1.05


def _reference_check(name: str, **settings) -> None:
    from probgen.recipes._posteriordb_recipe import draws_by_element, reference_summary
    from probgen.recipes._shared_data import SharedDataMissing

    module = importlib.import_module(f"probgen.recipes.{name}")
    try:
        posterior = module.build()
        reference = reference_summary(module.POSTERIOR)
    except SharedDataMissing as error:
        pytest.skip(str(error))
    samples = sample_chains(posterior, "chees", seed=0, progress=False, **settings)
    ours = draws_by_element(samples, type(posterior))
    failures = []
    for element, ref in reference.items():
        draws = ours[element]
        chains = draws.reshape(samples.num_chains, samples.num_draws)
        mcse = float(diagnostics.mcse_mean(chains))
        tolerance = 4 * math.sqrt(mcse**2 + ref["mcse_mean"] ** 2)
        if abs(draws.mean() - ref["mean"]) > tolerance:
            failures.append(f"{element} mean {draws.mean():.4g} vs {ref['mean']:.4g}")
        if abs(draws.std(ddof=1) / ref["sd"] - 1) > 0.10:
            failures.append(f"{element} sd {draws.std(ddof=1):.4g} vs {ref['sd']:.4g}")
    assert not failures, failures


def test_eight_schools_matches_reference():
    # A correctness check, not an efficiency one: capping the trajectory bounds its run time.
    _reference_check(
        "eight_schools", num_chains=64, num_samples=200, warmup=200, max_leapfrog_steps=32
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kidiq_momiq", "ark", "gauss_mix", "hmm_example"])
def test_posteriordb_matches_reference(name):
    _reference_check(name, num_chains=64, num_samples=500, warmup=500)


@pytest.mark.slow
def test_funnel_known_marginal():
    """Neal's funnel v ~ N(0, 3), x_i | v ~ N(0, exp(v / 2)), non-centred: x_i = exp(v/2) u_i.

    In (v, u) coordinates the target is a standard Gaussian product; the centred funnel's v
    marginal (mean 0, sd 3) is checked on the centred form with many chains."""

    def funnel(x: torch.Tensor) -> torch.Tensor:
        v, rest = x[:, 0], x[:, 1:]
        log_v = torch.distributions.Normal(0.0, 3.0).log_prob(v)
        scale = torch.exp(v / 2)[:, None]
        return log_v + torch.distributions.Normal(0.0, scale).log_prob(rest).sum(-1)

    samples = _run(funnel, 3, num_chains=256, num_samples=1000, warmup=1000)
    v = samples["x"][..., :1]
    assert not _check_moments(v, np.zeros(1), np.array([3.0]) * 1.0)


@pytest.mark.slow
def test_gaussian_100_dimensions_strong_correlation():
    mean, covariance, log_density = _gaussian(100, 0.9, seed=1)
    samples = _run(log_density, 100, num_chains=64, num_samples=500, warmup=1000)
    assert not _check_moments(samples["x"], mean, np.sqrt(np.diag(covariance)))


def test_pyro_model_target():
    import pyro
    import pyro.distributions as dist

    y = torch.tensor([1.2, 0.4, 2.2, 1.5, 0.9], dtype=torch.float64)

    def model():
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 10.0))
        sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(2.0, dtype=torch.float64)))
        with pyro.plate("data", 5):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    samples = sample_chains(
        model, "chees", num_chains=16, num_samples=100, warmup=100, seed=1, progress=False
    )
    assert (samples["sigma"] > 0).all()
    # The posterior mean of mu is near the data mean (flat-ish prior); 4 MCSE.
    mcse = float(diagnostics.mcse_mean(samples["mu"]))
    assert abs(samples["mu"].mean() - float(y.mean())) < 4 * mcse + 0.15


# ---- adaptation -----------------------------------------------------------------------------
def test_step_size_adaptation_moves_the_step_size():
    adapted = _run(_standard_normal, 5, step_size=6.0)
    fixed = _run(_standard_normal, 5, step_size=6.0, adapt_step_size=False)
    assert fixed.attrs["chees"]["step_size"] == 6.0
    assert 0.3 < adapted.attrs["chees"]["step_size"] < 2.0
    assert adapted.stats["acceptance_rate"].mean() > 0.5


def test_target_accept_changes_the_step_size():
    low = _run(_standard_normal, 5, target_accept=0.4).attrs["chees"]["step_size"]
    high = _run(_standard_normal, 5, target_accept=0.95).attrs["chees"]["step_size"]
    assert high < 0.8 * low


def test_trajectory_length_adaptation():
    adapted = _run(_standard_normal, 5, trajectory_length=0.05)
    fixed = _run(_standard_normal, 5, trajectory_length=0.05, adapt_trajectory_length=False)
    assert fixed.attrs["chees"]["trajectory_length"] == pytest.approx(0.05)
    assert adapted.attrs["chees"]["trajectory_length"] > 0.3
    # with step size and metric fixed, only Adam moves T: its learning rate sets how far
    fixed_rest = dict(
        trajectory_length=0.05, step_size=0.05, adapt_step_size=False, adapt_mass_matrix=False
    )
    fast = _run(_standard_normal, 5, learning_rate=0.025, **fixed_rest)
    slow = _run(_standard_normal, 5, learning_rate=0.002, **fixed_rest)
    assert slow.attrs["chees"]["trajectory_length"] < 0.1
    assert fast.attrs["chees"]["trajectory_length"] > 0.3


def test_criterion_option_chees_rate_prefers_shorter_trajectories():
    """On a standard Gaussian, ChEES(t) = 4d sin^4 t + d sin^2 2t peaks at t = pi/2, while
    ChEES / t peaks well below (about 1.2): the option must change where T settles."""
    fixed = dict(
        step_size=0.1, adapt_step_size=False, adapt_mass_matrix=False, num_chains=32, warmup=300
    )
    chees = _run(_standard_normal, 5, criterion="chees", **fixed).attrs["chees"]
    rate = _run(_standard_normal, 5, criterion="chees_rate", **fixed).attrs["chees"]
    assert chees["trajectory_length"] > 1.2 * rate["trajectory_length"]
    assert 0.8 < rate["trajectory_length"] < 2.0 < chees["trajectory_length"] < 4.0


_SCHOOL_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=torch.float64)
_SCHOOL_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=torch.float64)


def _eight_schools(z: torch.Tensor) -> torch.Tensor:
    """Non-centred eight schools over (mu, log tau, theta_trans): heavy-tailed in log tau."""
    mu, log_tau, theta = z[:, 0], z[:, 1], z[:, 2:]
    tau = log_tau.exp()
    prior = -0.5 * (mu / 5) ** 2 - torch.log1p((tau / 5) ** 2) + log_tau
    residual = (_SCHOOL_Y - mu[:, None] - tau[:, None] * theta) / _SCHOOL_SIGMA
    return prior - 0.5 * (theta**2).sum(-1) - 0.5 * (residual**2).sum(-1)


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["chees", "chees_rate"])
def test_few_chains_adapt_the_trajectory_like_many(criterion):
    """The ChEES gradient is pooled over 32+ trajectories: 4 chains must settle T near where
    64 chains do. Unpooled (one noisy 4-chain estimate per Adam step, gradients clipped), the
    rate criterion drove eight schools' T to 6x the 64-chain value (7.7 vs 1.2, seed 0)."""
    settings = dict(num_samples=10, warmup=1000, criterion=criterion)
    many = _run(_eight_schools, 10, num_chains=64, **settings).attrs["chees"]
    for seed in (0, 1, 2):
        few = _run(_eight_schools, 10, num_chains=4, seed=seed, **settings).attrs["chees"]
        ratio = few["trajectory_length"] / many["trajectory_length"]
        assert 1 / 3 < ratio < 3, (seed, few["trajectory_length"], many["trajectory_length"])


def test_a_new_metric_caps_the_carried_trajectory_length():
    """At a metric change T keeps its number of leapfrog steps, but at most 2 sqrt(dim): under
    the new metric no direction has an sd above sqrt(dim). Without the ceiling, kidiq with 4
    chains carried T from 14 to 68 out of a first metric fitted to chains still in their
    transient (64 chains settle at 2)."""
    from probgen.samplers.chees_adaptation import CheesAdaptation

    def adaptation(length: float) -> CheesAdaptation:
        return CheesAdaptation(
            3,
            1000,
            step_size=0.03,
            trajectory_length=length,
            target_accept=0.65,
            learning_rate=0.025,
            max_leapfrog_steps=1000,
            adapt_step_size=True,
            adapt_trajectory_length=True,
            adapt_mass_matrix=True,
            like=torch.zeros(1, dtype=torch.float64),
        )

    long = adaptation(14.0)
    long.restart_averaging(0.03)  # the first metric: nothing to carry over yet
    assert long.trajectory_length == pytest.approx(14.0)
    long.restart_averaging(0.15)  # a 5x longer step under the next metric
    assert long.trajectory_length == pytest.approx(2 * math.sqrt(3))
    short = adaptation(0.5)
    short.restart_averaging(0.03)
    short.restart_averaging(0.06)  # below the ceiling: the number of steps is kept
    assert short.trajectory_length == pytest.approx(1.0)


@pytest.mark.slow
def test_few_chains_settle_kidiq_trajectory_like_many():
    """kidiq_momiq (beta0 and beta1 correlated at -0.99, scales 100x apart): the first metric
    comes from chains still far from the posterior, the next fixes the scales. 4 chains must
    then settle T within 3x of 64 chains (they carried 18x before the metric-change ceiling)."""
    from probgen.recipes._shared_data import SharedDataMissing

    module = importlib.import_module("probgen.recipes.kidiq_momiq")
    try:
        posterior = module.build()
    except SharedDataMissing as error:
        pytest.skip(str(error))
    lengths = {}
    for chains in (4, 64):
        samples = sample_chains(
            posterior,
            "chees",
            num_chains=chains,
            num_samples=10,
            warmup=1000,
            seed=0,
            progress=False,
        )
        lengths[chains] = samples.attrs["chees"]["trajectory_length"]
    assert 1 / 3 < lengths[4] / lengths[64] < 3, lengths


@pytest.mark.filterwarnings("ignore::probgen.core.errors.ConvergenceWarning")
def test_infer_table_has_a_chees_row(tmp_path):
    """`probgen infer` configs accept the chees method: its row is in the comparison table."""
    import json

    import pandas as pd

    from probgen.experiments import run

    (tmp_path / "model.py").write_text(
        "import pyro, pyro.distributions as dist\n"
        "def model(y):\n"
        "    mu = pyro.sample('mu', dist.Normal(y.new_tensor(0.0), 5.0))\n"
        "    with pyro.plate('data', y.shape[0]):\n"
        "        pyro.sample('y', dist.Normal(mu, 1.0), obs=y)\n"
    )
    (tmp_path / "data.json").write_text(json.dumps({"y": [0.5, 1.5, 1.0, 2.0]}))
    config = {
        "model": {"file": "model.py"},
        "data": {"file": "data.json"},
        "chains": 16,
        "draws": 60,
        "warmup": 60,
        "plots": False,
        "methods": {"chees": {"max_leapfrog_steps": 8}},
    }
    folder = run(config, out_dir=tmp_path / "out", base_dir=tmp_path, progress=False)
    table = pd.read_csv(folder / "comparison.csv", index_col=0)
    assert list(table["method"]) == ["chees"]
    assert table["divergences"].iloc[0] == 0
    assert table["min_ess_bulk"].iloc[0] > 0


def test_mass_matrix_adaptation_learns_the_variances():
    scales = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)

    def log_density(x):
        return -0.5 * ((x / scales) ** 2).sum(-1)

    adapted = _run(log_density, 3, num_chains=32, warmup=400, max_leapfrog_steps=50)
    variances = np.array(adapted.attrs["chees"]["inverse_mass"])
    np.testing.assert_allclose(variances, scales.numpy() ** 2, rtol=0.25)
    fixed = _run(
        log_density, 3, num_chains=32, warmup=20, adapt_mass_matrix=False, max_leapfrog_steps=10
    )
    assert fixed.attrs["chees"]["inverse_mass"] == [1.0, 1.0, 1.0]


def test_jitter_and_max_leapfrog_steps():
    fixed = dict(
        trajectory_length=2.0, adapt_trajectory_length=False, step_size=0.1, adapt_step_size=False
    )
    jittered = _run(_standard_normal, 3, warmup=10, **fixed)
    plain = _run(_standard_normal, 3, warmup=10, jitter=False, **fixed)
    assert len(np.unique(jittered.stats["n_steps"])) > 5
    assert len(np.unique(plain.stats["n_steps"])) == 1
    capped = _run(_standard_normal, 3, trajectory_length=50.0, max_leapfrog_steps=3)
    assert capped.stats["n_steps"].max() <= 3


def test_halton_and_dual_averaging():
    assert [halton(i) for i in range(1, 8)] == [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]
    averaging = DualAveraging(1.0, target=0.65)
    for _ in range(200):
        averaging.update(0.9)  # always accepting too much: the step must grow
    assert averaging.final_step_size > 1.0


def test_leapfrog_conserves_energy_of_an_oscillator():
    def gradient_fn(z):
        return -0.5 * (z**2).sum(-1), -z

    z0 = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p0 = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lp, grad = gradient_fn(z0)
    z, p, *_, error, diverged = leapfrog(gradient_fn, z0, p0, lp, grad, 0.01, 314, torch.ones(4))
    # half a period of a unit oscillator (pi / 0.01 steps): (z, p) -> (-z, -p)
    torch.testing.assert_close(z, -z0, atol=2e-2, rtol=0)
    torch.testing.assert_close(p, -p0, atol=2e-2, rtol=0)
    assert error.abs().max() < 1e-3 and not diverged.any()


# ---- divergences ----------------------------------------------------------------------------
def _narrow(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x / 0.01) ** 2).sum(-1)


def test_divergences_are_detected_and_reported():
    samples = _run(
        _narrow, 2, step_size=1.0, adapt_step_size=False, adapt_mass_matrix=False, warmup=10
    )
    assert samples.stats["diverging"].dtype == bool
    assert samples.num_divergences == samples.stats["diverging"].sum() > 0.9 * 16 * 100
    # a divergent trajectory is rejected: the chains stay at the start
    assert np.all(samples["x"] == 0.0)
    assert samples.attrs["chees"]["warmup_divergences"] > 0
    assert _run(_standard_normal, 2).num_divergences == 0


def test_divergence_threshold_option():
    samples = _run(
        _narrow,
        2,
        step_size=1.0,
        adapt_step_size=False,
        adapt_mass_matrix=False,
        warmup=10,
        divergence_threshold=1e300,
    )
    assert samples.num_divergences == 0


def test_non_finite_density_is_a_divergence_not_an_error():
    def walled(x):  # -inf outside the unit box
        inside = (x.abs() < 1).all(-1)
        return torch.where(inside, -0.5 * (x**2).sum(-1), torch.full_like(x[:, 0], -math.inf))

    samples = _run(walled, 2, step_size=3.0, adapt_step_size=False)
    assert samples.num_divergences > 0
    assert np.all(np.abs(samples["x"]) < 1)


# ---- reproducibility and errors -------------------------------------------------------------
def test_seeds_reproduce():
    first = _run(_standard_normal, 3, seed=5)
    again = _run(_standard_normal, 3, seed=5)
    other = _run(_standard_normal, 3, seed=6)
    np.testing.assert_array_equal(first["x"], again["x"])
    np.testing.assert_array_equal(first.stats["step_size"], again.stats["step_size"])
    assert not np.array_equal(first["x"], other["x"])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("step_size", -1.0),
        ("step_size", "big"),
        ("target_accept", 1.5),
        ("trajectory_length", 0.0),
        ("learning_rate", math.nan),
        ("max_leapfrog_steps", 0),
        ("divergence_threshold", -5),
        ("jitter", "yes"),
        ("adapt_mass_matrix", 1),
        ("criterion", "chees_ratio"),
    ],
)
def test_bad_options_name_the_option(option, value):
    with pytest.raises(DataError, match=option):
        _run(_standard_normal, 2, **{option: value})


def test_unknown_option_and_discrete_target_raise():
    with pytest.raises(DataError, match="tree_depth"):
        _run(_standard_normal, 2, tree_depth=3)
    with pytest.raises(DataError, match="chees"):
        sample_chains(
            lambda x: -(x.double() ** 2).sum(-1), "chees", cardinalities=[2, 2], progress=False
        )
