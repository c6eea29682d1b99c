"""Experiments under torch.distributed: each rank runs its share of the methods, rank 0 writes
the comparison, and every method's numbers are those of a one-process run."""

from __future__ import annotations

import json

import data_parallel_workers as workers
import pandas as pd

from probgen import distributed
from probgen.experiments import run_file

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
plots = false

[model]
file = "model.py"

[data]
file = "data.json"

[methods.mh]

[methods.mh_many]
method = "mh"
chains = 16

[methods.mh_short]
method = "mh"
draws = 40
"""


def test_methods_run_on_separate_ranks_and_rank_0_writes_the_comparison(tmp_path):
    (tmp_path / "model.py").write_text(MODEL_FILE)
    (tmp_path / "data.json").write_text(json.dumps({"y": [0.5, 1.5, 1.0, 2.0]}))
    config = tmp_path / "experiment.toml"
    config.write_text(CONFIG)
    ranked = tmp_path / "ranks"
    distributed.spawn_local(
        workers.run_experiment, 2, args=(str(config), str(ranked)), deadline=120
    )
    single = run_file(config, tmp_path / "single", progress=False)
    ours = pd.read_csv(ranked / "comparison.csv", index_col="label")
    theirs = pd.read_csv(single / "comparison.csv", index_col="label")
    assert list(ours.index) == list(theirs.index) == ["mh", "mh_many", "mh_short"]
    for column in ("chains", "draws", "min_ess_bulk", "max_r_hat", "divergences", "converged"):
        assert ours[column].tolist() == theirs[column].tolist(), column
    for label in ours.index:  # each method's own folder, written by the rank that ran it
        pd.testing.assert_frame_equal(
            pd.read_csv(ranked / label / "summary.csv"), pd.read_csv(single / label / "summary.csv")
        )
    readme = (ranked / "README.md").read_text()
    assert "on 2 ranks (method on rank: mh 0, mh_many 1, mh_short 0)" in readme
