"""The experiment runner flags unconverged methods everywhere and writes to the current
directory by default."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from probgen.cli import main
from probgen.core.errors import ConvergenceWarning
from probgen.experiments import run_file
from probgen.experiments.plots import comparison_figure
from probgen.experiments.runner import MAX_R_HAT, MIN_ESS_BULK, convergence_problems

MODEL_FILE = """
import pyro
import pyro.distributions as dist


def model(y):
    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 5.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
"""

# "short" has 2 chains x 30 draws: its bulk ESS cannot reach 400, whatever its ESS per second.
CONFIG = """
name = "flags"
seed = 1
plots = {plots}

[model]
file = "model.py"

[data]
file = "data.json"

[methods.good]
method = "mh"
chains = 32
draws = 200
warmup = 200

[methods.short]
method = "mh"
chains = 2
draws = 30
warmup = 10
"""


def _experiment(folder: Path, plots: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(MODEL_FILE)
    (folder / "data.json").write_text(json.dumps({"y": [0.5, 1.5, 1.0, 2.0]}))
    config = folder / "experiment.toml"
    config.write_text(CONFIG.format(plots=str(plots).lower()))
    return config


def test_convergence_problems_thresholds():
    assert convergence_problems(MAX_R_HAT, MIN_ESS_BULK) == []
    assert convergence_problems(1.0101, 1e4) == ["max R-hat 1.01 > 1.01"]
    assert convergence_problems(1.0, 399.0) == ["min bulk ESS 399 < 400"]
    assert len(convergence_problems(float("nan"), float("nan"))) == 2


def test_unconverged_method_is_flagged_in_table_readme_plot_and_warning(tmp_path):
    config = _experiment(tmp_path / "config")
    with pytest.warns(ConvergenceWarning, match="'short' has not converged") as caught:
        folder = run_file(config, tmp_path / "out", progress=False)
    assert not any("'good'" in str(w.message) for w in caught)
    table = pd.read_csv(folder / "comparison.csv", index_col=0)
    assert bool(table.loc["good", "converged"]) is True
    assert bool(table.loc["short", "converged"]) is False
    rows = {
        line.split("|")[1].strip(): line
        for line in (folder / "comparison.md").read_text().splitlines()[2:]
    }
    assert "NOT CONVERGED" in rows["short"]
    assert "NOT CONVERGED" not in rows["good"]
    readme = (folder / "README.md").read_text()
    assert "short has NOT CONVERGED" in readme
    assert "good has NOT CONVERGED" not in readme
    assert "Fastest converged method (min bulk ESS per second): good." in readme
    figure = comparison_figure(table)
    axis = figure.axes[0]
    hatches = {bar.get_hatch() for bar in axis.patches}
    assert hatches == {"//", None}
    labels = [text.get_text().strip() for text in axis.texts]
    assert labels == ["NOT CONVERGED"]
    assert (folder / "comparison.png").exists()


def test_cli_infer_writes_to_the_current_directory_and_prints_table_and_path(
    tmp_path, monkeypatch, capsys
):
    config = _experiment(tmp_path / "config", plots=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.warns(ConvergenceWarning):
        assert main(["infer", str(config)]) == 0
    expected = work / "results" / "flags"
    assert (expected / "comparison.csv").exists()
    assert not (tmp_path / "config" / "results").exists()
    printed = capsys.readouterr().out
    assert "| short |" in printed and "NOT CONVERGED" in printed
    assert f"results written to {expected}" in printed


@pytest.mark.slow
def test_shipped_eight_schools_example_converges(tmp_path):
    from probgen.recipes._shared_data import SharedDataMissing

    path = Path(__file__).parents[2] / "examples" / "eight_schools.toml"
    try:
        folder = run_file(path, tmp_path / "eight_schools", progress=False)
    except SharedDataMissing as error:
        pytest.skip(str(error))
    table = pd.read_csv(folder / "comparison.csv", index_col=0)
    assert table["converged"].astype(bool).all(), table
