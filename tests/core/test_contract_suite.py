"""check_density passes an honest model and catches each kind of breach."""

from __future__ import annotations

import pytest
import torch

import probgen.core.io
from probgen.core.contract import LogProbKind, Model
from probgen.core.errors import NoDensityError
from probgen.core.testing import ContractError, check_density


class ToyCategorical(Model):
    """A categorical over `n_values` values fitted by counting; `flaw` breaks one promise."""

    log_prob_kind = LogProbKind.EXACT

    def __init__(self, n_values: int = 4, flaw: str = ""):
        super().__init__()
        self.n_values = n_values
        self.flaw = flaw
        self.register_buffer("logits", torch.zeros(n_values))

    def get_config(self):
        return {"n_values": self.n_values, "flaw": self.flaw}

    def fit(self, data):
        counts = torch.bincount(torch.as_tensor(data).long(), minlength=self.n_values) + 1.0
        self.logits = counts.log()
        self.history_ = [0.0]
        self._mark_fitted()
        return self

    def _log_probs(self):
        log_probs = torch.log_softmax(self.logits, 0)
        return log_probs + 0.5 if self.flaw == "unnormalised" else log_probs

    def log_prob(self, x):
        self.check_fitted("log_prob")
        if self.flaw == "no_density":
            return torch.zeros(len(x))
        values = self._log_probs()[torch.as_tensor(x).long()]
        if self.flaw == "graph":
            # as a neural model evaluated outside torch.no_grad: the result carries a graph
            values = values + torch.zeros((), requires_grad=True)
        return values

    def sample(self, n, *, seed=None):
        if self.flaw == "unseeded":
            seed = None
        generator = self.make_generator(seed)
        probabilities = torch.softmax(self.logits, 0)
        if self.flaw == "wrong_sampler":
            probabilities = probabilities.flip(0)
        return torch.multinomial(probabilities, n, replacement=True, generator=generator)

    def enumerate_support(self):
        return torch.arange(self.n_values)


class Unfittable(ToyCategorical):
    log_prob_kind = LogProbKind.NONE

    def log_prob(self, x):
        self.check_fitted("log_prob")
        raise NoDensityError("this toy has no density; compare samples with MMD instead")


@pytest.fixture(autouse=True)
def allow_test_classes(monkeypatch):
    # Loading only resolves classes inside probgen/models; this module's toys are let in.
    prefixes = (*probgen.core.io._ALLOWED_MODULE_PREFIXES, ToyCategorical.__module__ + ".")
    monkeypatch.setattr(probgen.core.io, "_ALLOWED_MODULE_PREFIXES", prefixes)


DATA = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 3, 3] * 20)


def test_honest_model_passes():
    report = check_density(ToyCategorical(), DATA)
    assert abs(report["log_total_probability"]) < 1e-6
    assert report["sample_total_variation"] < 0.05
    assert report["save_round_trip"]


@pytest.mark.parametrize(
    ("flaw", "message"),
    [
        ("unnormalised", "exceed 0|sums to"),
        ("unseeded", "same seed"),
        ("wrong_sampler", "sample frequencies"),
        ("graph", "autograd graph"),
    ],
)
def test_breaches_are_caught(flaw, message):
    with pytest.raises(ContractError, match=message):
        check_density(ToyCategorical(flaw=flaw), DATA)


def test_no_density_kind_must_raise():
    report = check_density(Unfittable(), DATA, check_normalization=False)
    assert report["no_density_raises"]
