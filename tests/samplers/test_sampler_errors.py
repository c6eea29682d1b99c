"""`as_pyro(...)` honours validate_args; a model's Gibbs run records lp only when it can, and
unexpected errors of its log density surface instead of silently dropping lp."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import constraints

from probgen.core.errors import DataError, NoDensityError
from probgen.samplers.chains import sample_chains
from probgen.samplers.pyro_distribution import DensityDistribution


class PositivePair:
    """Two independent Exponential(1) coordinates."""

    event_shape = torch.Size([2])
    support = constraints.independent(constraints.positive, 1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return (-x).sum(-1)


def test_validate_args_true_checks_support_and_shape():
    checked = DensityDistribution(PositivePair(), validate_args=True)
    assert checked.log_prob(torch.tensor([[1.0, 2.0]])).tolist() == [-3.0]
    with pytest.raises(DataError, match="support"):
        checked.log_prob(torch.tensor([[1.0, -2.0]]))
    with pytest.raises(DataError):
        checked.log_prob(torch.ones(4, 3))
    # expand keeps the setting
    with pytest.raises(DataError, match="support"):
        checked.expand((3,)).log_prob(-torch.ones(3, 2))


def test_validate_args_false_skips_the_checks():
    unchecked = DensityDistribution(PositivePair(), validate_args=False)
    assert unchecked.log_prob(torch.tensor([[1.0, -2.0]])).tolist() == [1.0]
    assert unchecked.expand((3,)).log_prob(-torch.ones(3, 2)).tolist() == [2.0, 2.0, 2.0]


def test_validate_args_none_follows_torch_default():
    previous = torch.distributions.Distribution._validate_args
    try:
        torch.distributions.Distribution.set_default_validate_args(True)
        with pytest.raises(DataError):
            DensityDistribution(PositivePair()).log_prob(torch.tensor([[1.0, -2.0]]))
        torch.distributions.Distribution.set_default_validate_args(False)
        DensityDistribution(PositivePair()).log_prob(torch.tensor([[1.0, -2.0]]))
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


class CoinChains:
    """Independent fair coins with a Gibbs step; `error` is what log_prob raises (if any)."""

    def __init__(self, error: Exception | None = None, shape_bug: bool = False) -> None:
        self.error = error
        self.shape_bug = shape_bug

    def gibbs_step(self, state, *, generator=None, evidence=None):
        return torch.randint(0, 2, state.shape, generator=generator).double()

    def log_prob(self, state):
        if self.error is not None:
            raise self.error
        value = torch.full((state.shape[0],), -3 * 0.6931471805599453, dtype=torch.float64)
        return value.repeat(2) if self.shape_bug else value


def _run(model):
    return sample_chains(
        model,
        "gibbs",
        num_chains=4,
        num_samples=5,
        warmup=2,
        initial=torch.zeros(4, 3),
        progress=False,
    )


def test_gibbs_records_lp_when_the_model_has_a_density():
    samples = _run(CoinChains())
    assert samples.stats["lp"].shape == (4, 5)
    assert "lp_unavailable" not in samples.attrs


@pytest.mark.parametrize("error", [NoDensityError("no density"), NotImplementedError("later")])
def test_gibbs_leaves_out_lp_for_expected_errors_and_says_why(error):
    samples = _run(CoinChains(error))
    assert "lp" not in samples.stats
    assert str(error) in samples.attrs["lp_unavailable"]


def test_gibbs_lets_unexpected_log_density_errors_surface():
    with pytest.raises(RuntimeError, match="bug in the model"):
        _run(CoinChains(RuntimeError("bug in the model")))
    with pytest.raises(ZeroDivisionError):
        _run(CoinChains(ZeroDivisionError("division")))


def test_gibbs_names_a_log_density_of_the_wrong_shape():
    with pytest.raises(DataError, match="one value per chain"):
        _run(CoinChains(shape_bug=True))
