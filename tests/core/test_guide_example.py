"""The worked example of CONTRIBUTING.md is a working model: its code block runs here.

The guide's code block (between the ``guide-example`` markers) is read out of CONTRIBUTING.md
and executed in this module, so editing the guide into something that breaks the contract
fails this test, and there is no second copy to drift.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest
import torch

import probgen
import probgen.core.io
from probgen.core.contract import Model
from probgen.core.errors import DataError, NotFittedError
from probgen.core.testing import check_density

GUIDE = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"
_BLOCK = re.compile(
    r"<!-- guide-example:start -->\s*```python\n(?P<code>.*?)```\s*<!-- guide-example:end -->",
    re.DOTALL,
)


def guide_code() -> str:
    """The worked example's code, exactly as CONTRIBUTING.md shows it."""
    match = _BLOCK.search(GUIDE.read_text(encoding="utf-8"))
    assert match, f"{GUIDE.name} has no guide-example code block between its markers"
    return match.group("code")


# Defined here, at import, so that the class is this module's attribute and a saved file can
# name it (`probgen.load` imports `module.Class`).
exec(compile(guide_code(), str(GUIDE), "exec"))
ProductOfBernoullis = globals()["ProductOfBernoullis"]


@pytest.fixture(autouse=True)
def allow_this_module(monkeypatch):
    # Loading only resolves classes inside probgen; this module's guide class is let in.
    monkeypatch.setattr(
        probgen.core.io,
        "_ALLOWED_MODULE_PREFIXES",
        (*probgen.core.io._ALLOWED_MODULE_PREFIXES, __name__ + "."),
    )


@pytest.fixture
def rows() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.tensor([0.9, 0.2, 0.5]).expand(500, 3), generator=generator)


def test_guide_example_is_short():
    assert len(guide_code().splitlines()) <= 60


def test_guide_example_passes_the_density_contract(rows):
    model = ProductOfBernoullis(3)
    assert isinstance(model, Model)
    report = check_density(model, rows)
    assert report["save_round_trip"] is True
    assert abs(report["log_total_probability"]) < 1e-5
    assert "sample_total_variation" in report
    assert torch.allclose(model.logits.sigmoid(), torch.tensor([0.9, 0.2, 0.5]), atol=0.05)


def test_guide_example_follows_the_conventions(rows, tmp_path):
    model = ProductOfBernoullis(3, pseudocount=0.5)
    assert model.get_config() == {"n_features": 3, "pseudocount": 0.5}
    with pytest.raises(NotFittedError):
        model.log_prob(rows)
    model.fit(rows)
    assert [sorted(entry) for entry in model.history_] == [["iteration", "log_likelihood"]]
    model.save(tmp_path / "m.probgen")
    assert probgen.load(tmp_path / "m.probgen").get_config() == model.get_config()
    with pytest.raises(DataError):
        model.log_prob(torch.full((2, 3), 2.0))


def test_guide_example_docstring_runs():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    globs = {"torch": torch, "ProductOfBernoullis": ProductOfBernoullis}
    for test in finder.find(ProductOfBernoullis, "ProductOfBernoullis", globs=globs):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0
