"""posteriordb recipes against their reference posteriors: means within 4 MCSE, sds within 10%.

Eight schools, kidiq and ark with MH run by default (a few seconds each); the other recipes
with MH, and every recipe with NUTS, run with ``-m slow``. Tests skip when the shared data folder
is absent.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from probgen.recipes._posteriordb_recipe import draws_by_element, reference_summary
from probgen.recipes._shared_data import SharedDataMissing

from probgen.samplers import diagnostics
from probgen.samplers.chains import sample_chains

RECIPES = ["eight_schools", "kidiq_momiq", "ark", "gauss_mix", "hmm_example"]
SETTINGS = {
    "mh": dict(num_chains=64, num_samples=2000, warmup=1000),
    # hmm_example's NUTS trees take about 50 gradients a draw: keep NUTS runs short.
    "nuts": dict(num_chains=4, num_samples=500, warmup=300),
}


def _load(name):
    module = importlib.import_module(f"probgen.recipes.{name}")
    try:
        posterior = module.build()
        reference = reference_summary(module.POSTERIOR)
    except SharedDataMissing as error:
        pytest.skip(str(error))
    return module, posterior, reference


def _check_against_reference(name, method, seed=0):
    module, posterior, reference = _load(name)
    samples = sample_chains(posterior, method, seed=seed, progress=False, **SETTINGS[method])
    ours = draws_by_element(samples, type(posterior))
    failures = []
    for element, ref in reference.items():
        draws = ours[element]
        chains = draws.reshape(samples.num_chains, samples.num_draws)
        mcse = float(diagnostics.mcse_mean(chains))
        tolerance = 4 * math.sqrt(mcse**2 + ref["mcse_mean"] ** 2)
        if abs(draws.mean() - ref["mean"]) > tolerance:
            failures.append(
                f"{element} mean {draws.mean():.4g} vs {ref['mean']:.4g} +- {tolerance:.2g}"
            )
        if abs(draws.std(ddof=1) / ref["sd"] - 1) > 0.10:
            failures.append(f"{element} sd {draws.std(ddof=1):.4g} vs {ref['sd']:.4g}")
    assert not failures, failures


FAST_MH = {"eight_schools", "kidiq_momiq", "ark"}


def _recipe_cases():
    for method in ("mh", "nuts"):
        for name in RECIPES:
            fast = method == "mh" and name in FAST_MH
            marks = [] if fast else [pytest.mark.slow]
            yield pytest.param(name, method, id=f"{name}-{method}", marks=marks)


@pytest.mark.parametrize(("name", "method"), list(_recipe_cases()))
def test_recipe_matches_reference(name, method):
    _check_against_reference(name, method)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_reference_points_have_finite_density(name):
    module, posterior, _ = _load(name)
    points = module.data("test")[:50]
    assert torch.isfinite(posterior.log_prob(points)).all()
    assert posterior.event_shape == (points.shape[1],)


def test_hmm_example_likelihood_is_the_foundation_hmm():
    """The recipe's summed-out likelihood equals probgen's HMM (and its `as_pyro()`) at the
    same parameters, over reference posterior draws."""
    import pyro.poutine as poutine

    from probgen.hmm.model import HMM

    module, posterior, _ = _load("hmm_example")
    arguments = posterior.model_kwargs
    series = arguments["y"].reshape(1, -1, 1)
    constrained = posterior.constrain(module.data("test")[:5])
    for theta, mu in zip(constrained["theta"], constrained["mu"], strict=True):
        conditioned = poutine.condition(posterior.model, data={"theta": theta, "mu": mu})
        trace = poutine.trace(conditioned).get_trace(**arguments)
        trace.compute_log_prob()
        hmm = HMM(2, "gaussian", covariance="diag").to(torch.float64)
        hmm.set_parameters(
            start_probs=[0.5, 0.5],
            transition_probs=theta,
            means=mu.reshape(2, 1),
            covariances=torch.ones(2, 1, dtype=torch.float64),
        )
        expected = hmm.log_prob(series)[0]
        torch.testing.assert_close(trace.nodes["y"]["log_prob_sum"], expected)
        torch.testing.assert_close(hmm.as_pyro().log_prob(series)[0], expected)
