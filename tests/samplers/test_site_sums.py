"""The fast per-chain Normal site sums equal Pyro's log_prob, in value and gradient."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask

import probgen.samplers.pyro_potential as pyro_potential
from probgen.samplers import site_sums
from probgen.samplers.chees import value_and_grad
from probgen.samplers.pyro_density import PyroDensity
from probgen.samplers.pyro_potential import _per_chain_sum
from probgen.samplers.site_sums import site_chain_sum
from probgen.samplers.targets import make_target

CHAINS, ROWS, GROUPS = 3, 7, 2


@pytest.fixture(autouse=True)
def every_block(monkeypatch):
    # small blocks keep the cases fast; the size rule has its own test
    monkeypatch.setattr(site_sums, "MIN_BLOCK_ELEMENTS", 0)


def _leaf(*shape, positive=False, seed=0):
    generator = torch.Generator().manual_seed(seed + sum(shape))
    values = torch.randn(*shape, generator=generator, dtype=torch.float64)
    if positive:
        values = values.exp()
    return values.requires_grad_(True)


# Each case: a function of (chain loc, chain scale, data) that makes the site and its value,
# and the plate nesting. Chains sit at dimension -(nesting + 1) of the batch shape.
def _scale_per_chain(loc, scale, data):
    fn = dist.Normal(loc[:, None] * data, scale[:, None]).to_event(1)
    return fn, data, 0


def _scale_per_row(loc, scale, data):
    fn = dist.Normal(loc[:, None], (scale.mean() + data.abs())).to_event(1)
    return fn, data, 0


def _scalar_scale_latent_value(loc, scale, data):
    # a latent value (it carries the gradient) under a number as scale
    value = loc[:, None] + data
    return dist.Normal(0.5, 2.0).expand([CHAINS, ROWS]).to_event(1), value, 0


def _nested_plate(loc, scale, data):
    # chains x groups x rows, a groups plate inside the chains: nesting 1, event dim 1
    mean = loc[:, None, None] + data.reshape(1, 1, ROWS) * torch.arange(1.0, GROUPS + 1)[:, None]
    fn = dist.Normal(mean, scale[:, None, None]).to_event(1)
    return fn, data.expand(GROUPS, ROWS), 1


def _no_event_dims(loc, scale, data):
    # the rows as a plate (nesting 1), no to_event
    fn = dist.Normal(loc[:, None], scale[:, None].expand(CHAINS, ROWS))
    return fn, data, 1


def _constant_loc_scale_per_chain(loc, scale, data):
    # observed data about a fixed mean: only the scale carries the chains
    fn = dist.Normal(torch.zeros((), dtype=torch.float64), scale[:, None])
    return fn.expand([CHAINS, ROWS]).to_event(1), data, 0


def _chain_free_site(loc, scale, data):
    # a site that does not depend on the chains: its one sum is shared by every chain
    fn = dist.Normal(torch.zeros(1, ROWS, dtype=torch.float64), 1.5).to_event(1)
    return fn, data, 0


CASES = [
    _scale_per_chain,
    _scale_per_row,
    _scalar_scale_latent_value,
    _nested_plate,
    _no_event_dims,
    _constant_loc_scale_per_chain,
    _chain_free_site,
]


@pytest.mark.parametrize("make", CASES, ids=[case.__name__ for case in CASES])
@pytest.mark.parametrize("poutine_scale", [1.0, 0.25])
def test_value_and_gradient_equal_pyro(make, poutine_scale):
    loc, scale, data = _leaf(CHAINS), _leaf(CHAINS, positive=True), _leaf(ROWS)
    fn, value, nesting = make(loc, scale, data)
    site = {"fn": fn, "value": value, "mask": None, "scale": poutine_scale}
    fast = site_chain_sum(site, CHAINS, nesting)
    assert fast is not None
    expected = _per_chain_sum(
        scale_and_mask(fn.log_prob(value), poutine_scale, None), CHAINS, nesting, "y"
    )
    torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-12)
    # a weight per chain checks that each chain's gradient goes to its own inputs
    weight = torch.arange(1.0, CHAINS + 1, dtype=torch.float64)
    inputs = [t for t in (loc, scale, data) if t.requires_grad]
    got = torch.autograd.grad((fast * weight).sum(), inputs, allow_unused=True, retain_graph=True)
    want = torch.autograd.grad((expected * weight).sum(), inputs, allow_unused=True)
    for got_grad, want_grad in zip(got, want):
        if want_grad is None:
            assert got_grad is None or torch.count_nonzero(got_grad) == 0
        else:
            torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_other_sites_fall_back():
    value = torch.zeros(CHAINS, ROWS, dtype=torch.float64)
    masked = {"fn": dist.Normal(0.0, 1.0).expand([CHAINS, ROWS]), "value": value}
    masked.update(mask=torch.ones(CHAINS, ROWS, dtype=torch.bool), scale=1.0)
    assert site_chain_sum(masked, CHAINS, 1) is None
    student = {"fn": dist.StudentT(3.0, 0.0, 1.0).expand([CHAINS, ROWS]), "value": value}
    student.update(mask=None, scale=1.0)
    assert site_chain_sum(student, CHAINS, 1) is None
    half = {"fn": dist.HalfNormal(1.0).expand([CHAINS, ROWS]), "value": value.abs() + 1}
    half.update(mask=None, scale=1.0)
    assert site_chain_sum(half, CHAINS, 1) is None
    weighted = {"fn": dist.Normal(0.0, 1.0).expand([CHAINS, ROWS]), "value": value}
    weighted.update(mask=None, scale=torch.ones(CHAINS, ROWS))
    assert site_chain_sum(weighted, CHAINS, 1) is None


def test_small_blocks_keep_pyro_log_prob(monkeypatch):
    monkeypatch.setattr(site_sums, "MIN_BLOCK_ELEMENTS", CHAINS * ROWS + 1)
    site = {"fn": dist.Normal(0.0, 1.0).expand([CHAINS, ROWS]).to_event(1), "mask": None}
    site.update(value=torch.zeros(CHAINS, ROWS, dtype=torch.float64), scale=1.0)
    assert site_chain_sum(site, CHAINS, 0) is None
    monkeypatch.setattr(site_sums, "MIN_BLOCK_ELEMENTS", CHAINS * ROWS)
    assert site_chain_sum(site, CHAINS, 0) is not None


def test_validation_still_rejects_nan_data():
    fn = dist.Normal(torch.zeros(CHAINS, 1), 1.0, validate_args=True).expand([CHAINS, ROWS])
    value = torch.zeros(ROWS).index_fill_(0, torch.tensor([2]), float("nan"))
    site = {"fn": fn.to_event(1), "value": value, "mask": None, "scale": 1.0}
    with pytest.raises(ValueError):
        site_chain_sum(site, CHAINS, 0)


def _regression(county, x, y, groups):
    intercept_raw = pyro.sample(
        "intercept_raw", dist.Normal(torch.zeros(groups, dtype=y.dtype), 1.0).to_event(1)
    )
    slope = pyro.sample("slope", dist.Normal(y.new_tensor(0.0), 5.0))
    spread = pyro.sample("spread", dist.HalfNormal(y.new_tensor(1.0)))
    noise = pyro.sample("noise", dist.HalfNormal(y.new_tensor(1.0)))
    intercept = spread[..., None] * intercept_raw
    mean = intercept[..., county] + slope[..., None] * x
    pyro.sample("y", dist.Normal(mean, noise[..., None]).to_event(1), obs=y)


@pytest.mark.parametrize("jit", [False, True])
def test_potential_gradient_equals_pyro_path(monkeypatch, jit):
    generator = torch.Generator().manual_seed(3)
    rows, groups = 200, 12
    kwargs = {
        "county": torch.randint(0, groups, (rows,), generator=generator),
        "x": torch.randn(rows, generator=generator, dtype=torch.float64),
        "y": torch.randn(rows, generator=generator, dtype=torch.float64),
        "groups": groups,
    }
    z = None
    results = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(pyro_potential, "site_chain_sum", lambda *args: None)
        density = PyroDensity(_regression, model_kwargs=kwargs, jit=jit)
        target = make_target(density)
        if z is None:
            z = target.initial_fn(16, torch.Generator().manual_seed(0))
        results.append(value_and_grad(target, z))
    (fast_lp, fast_grad), (pyro_lp, pyro_grad) = results
    torch.testing.assert_close(fast_lp, pyro_lp, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(fast_grad, pyro_grad, rtol=1e-10, atol=1e-9)


def test_trace_of_potential_uses_fast_path(monkeypatch):
    # the jit trace must record the fast step (Pyro's scale is a tensor while tracing)
    calls = []
    original = pyro_potential.site_chain_sum

    def spy(site, num_chains, nesting):
        result = original(site, num_chains, nesting)
        calls.append((site["name"], torch.jit.is_tracing(), result is not None))
        return result

    monkeypatch.setattr(pyro_potential, "site_chain_sum", spy)
    kwargs = {"county": torch.zeros(50, dtype=torch.long), "x": torch.zeros(50)}
    kwargs.update(y=torch.zeros(50, dtype=torch.float64), groups=2)
    density = PyroDensity(_regression, model_kwargs=kwargs, jit=True)
    density.unnormalized_log_prob(torch.zeros(4, density.dim, dtype=torch.float64))
    assert ("y", True, True) in calls
    assert poutine  # the trace module stays imported for Pyro's handlers
