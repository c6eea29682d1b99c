"""The experiment runner: results folder, same seed same numbers, config errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from probgen.core.errors import DataError
from probgen.experiments import run, run_file
from probgen.experiments.config import parse_config
from probgen.experiments.runner import COMPARISON_COLUMNS
from probgen.samplers.chains import Samples

MODEL_FILE = """
import pyro
import pyro.distributions as dist


def model(y):
    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 5.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
"""

CONFIG = """
name = "normal_mean"
seed = 3
chains = 8
draws = 60
warmup = 60

[model]
file = "model.py"

[data]
file = "data.json"

[methods.mh]

[methods.mh_many]
method = "mh"
chains = 16
"""


@pytest.fixture
def experiment(tmp_path):
    (tmp_path / "model.py").write_text(MODEL_FILE)
    (tmp_path / "data.json").write_text(json.dumps({"y": [0.5, 1.5, 1.0, 2.0]}))
    (tmp_path / "experiment.toml").write_text(CONFIG)
    return tmp_path


def test_run_file_writes_results_folder_and_repeats_exactly(experiment):
    folder = run_file(experiment / "experiment.toml", experiment / "out", progress=False)
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.toml",
        "config.json",
        "comparison.csv",
        "comparison.md",
        "README.md",
        "comparison.png",
        "mh",
        "mh_many",
    } <= names
    for label in ("mh", "mh_many"):
        assert {p.name for p in (folder / label).iterdir()} >= {
            "samples.safetensors",
            "summary.csv",
            "trace.png",
            "posterior.png",
        }
    table = pd.read_csv(folder / "comparison.csv", index_col=0)
    assert tuple(table.columns) == COMPARISON_COLUMNS
    header = (folder / "comparison.md").read_text().splitlines()[0]
    assert header == "| label | " + " | ".join(COMPARISON_COLUMNS) + " |"
    samples = Samples.load(folder / "mh_many" / "samples.safetensors")
    assert samples["mu"].shape == (16, 60)
    # Posterior of mu: Normal(sum(y) / (n + 1/25), 1 / sqrt(n + 1/25)).
    assert abs(samples["mu"].mean() - 5.0 / (4 + 1 / 25)) < 0.2
    from probgen.experiments.config import load_toml

    repeat = {**load_toml(experiment / "experiment.toml"), "plots": False}
    again = run(repeat, out_dir=experiment / "again", base_dir=experiment, progress=False)
    first = pd.read_csv(folder / "mh" / "summary.csv", index_col=0)
    second = pd.read_csv(again / "mh" / "summary.csv", index_col=0)
    pd.testing.assert_frame_equal(first, second)
    assert (
        "mh_many (mh, 16 chains x 60 draws after 60 warmup)" in (folder / "README.md").read_text()
    )


def test_run_with_a_recipe_dict(tmp_path):
    from probgen.recipes._shared_data import SharedDataMissing

    config = {
        "model": {"recipe": "eight_schools"},
        "chains": 8,
        "draws": 50,
        "warmup": 50,
        "methods": {"mh": {}},
        "plots": False,
    }
    try:
        folder = run(config, out_dir=tmp_path / "es", progress=False)
    except SharedDataMissing as error:
        pytest.skip(str(error))
    samples = Samples.load(folder / "mh" / "samples.safetensors")
    assert set(samples) == {"mu", "tau", "theta_trans", "theta"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.replace("seed = 3", "sead = 3"), "did you mean 'seed'"),
        (lambda c: c.replace('file = "data.json"', 'file = "missing.json"'), "missing.json"),
        (lambda c: c.replace("[methods.mh]\n", "[methods.mh]\nstepsize = 2\n"), "stepsize"),
        (lambda c: c.replace('method = "mh"', 'method = "mhh"'), "did you mean 'mh'"),
        (lambda c: c.replace("chains = 8", "chains = 0"), "chains"),
        (lambda c: c + "\n[broken", "not valid TOML"),
    ],
)
def test_config_errors_name_the_problem(experiment, change, message):
    (experiment / "experiment.toml").write_text(change(CONFIG))
    with pytest.raises(DataError, match=message):
        run_file(experiment / "experiment.toml", experiment / "out", progress=False)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.toml"):
        run_file(tmp_path / "nope.toml")


def test_parse_config_requires_model_and_methods():
    with pytest.raises(DataError, match=r"\[model\]"):
        parse_config({"methods": {"mh": {}}})
    with pytest.raises(DataError, match="methods"):
        parse_config({"model": {"recipe": "eight_schools"}})
