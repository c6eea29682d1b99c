"""The `probgen` command end to end: list, fit, sample, score, demo, and its error messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from probgen.cli import main
from probgen.core.io import load


def test_list_shows_recipes(capsys):
    assert main(["list"]) == 0
    output = capsys.readouterr().out
    assert "hmm_casino" in output


def test_fit_sample_score_round_trip(tmp_path, capsys):
    model_path = tmp_path / "casino.probgen"
    assert main(["fit", "hmm_casino", "--smoke", "--out", str(model_path)]) == 0
    assert model_path.is_file()
    draws = tmp_path / "draws.csv"
    assert (
        main(
            [
                "sample",
                str(model_path),
                "-n",
                "3",
                "--length",
                "20",
                "--seed",
                "1",
                "--out",
                str(draws),
            ]
        )
        == 0
    )
    frame = pd.read_csv(draws)
    assert frame["sequence_id"].nunique() == 3 and len(frame) == 60
    scores = tmp_path / "scores.csv"
    assert main(["score", str(model_path), str(draws), "--out", str(scores)]) == 0
    output = capsys.readouterr().out
    assert "log_prob_kind: exact" in output
    assert len(pd.read_csv(scores)) == 3


def _direct_fit(recipe_name, data, *, smoke=True):
    """The same recipe fitted through the Python API, to compare the command's model with."""
    from probgen.recipes import registry

    recipe = registry.get(recipe_name)
    model = recipe.build(**(recipe.smoke.get("build", {}) if smoke else {}))
    return model.fit(data, **(recipe.smoke_fit if smoke else {}))


def _assert_same_model(path, expected, data):
    """The written model has the direct fit's parameters and scores, not the recipe data's."""
    written = load(path)
    actual_state, expected_state = written.state_dict(), expected.state_dict()
    assert actual_state.keys() == expected_state.keys()
    for key, value in expected_state.items():
        torch.testing.assert_close(actual_state[key], value, msg=key)
    torch.testing.assert_close(written.log_prob(data), expected.log_prob(data))


def test_fit_from_data_file_and_toml_config(tmp_path):
    rolls = np.random.default_rng(0).integers(0, 6, size=(4, 50))
    np.save(tmp_path / "rolls.npy", rolls)
    config = tmp_path / "casino.toml"
    config.write_text('recipe = "hmm_casino"\ndata = "rolls.npy"\nsmoke = true\n')
    assert main(["fit", str(config), "--out", str(tmp_path / "m.probgen")]) == 0
    sequences = list(rolls)
    _assert_same_model(tmp_path / "m.probgen", _direct_fit("hmm_casino", sequences), sequences)


def test_sequences_from_folder(tmp_path):
    folder = tmp_path / "seqs"
    folder.mkdir()
    sequences = [np.arange(10 + index) % 6 for index in range(3)]
    for index, sequence in enumerate(sequences):
        np.save(folder / f"s{index}.npy", sequence)
    assert (
        main(
            [
                "fit",
                "hmm_casino",
                "--smoke",
                "--data",
                str(folder),
                "--out",
                str(tmp_path / "m.probgen"),
            ]
        )
        == 0
    )
    _assert_same_model(tmp_path / "m.probgen", _direct_fit("hmm_casino", sequences), sequences)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["fit", "no_such_recipe", "--out", "x.probgen"], "recipe 'no_such_recipe' not found"),
        (["score", "missing.probgen", "data.csv"], "is not a file"),
        (["fit", "hmm_casino", "--data", "nowhere.csv", "--out", "x.probgen"], "does not exist"),
    ],
)
def test_errors_are_one_clear_line(arguments, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(arguments) == 1
    assert message in capsys.readouterr().err


def test_typo_in_config_is_named(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('recipe = "hmm_casino"\nfitt = {}\n')
    assert main(["fit", str(config), "--out", str(tmp_path / "m.probgen")]) == 1
    assert "fitt" in capsys.readouterr().err


def test_corrupt_model_file(tmp_path, capsys):
    path = tmp_path / "bad.probgen"
    path.write_bytes(b"\x00" * 64)
    assert main(["sample", str(path), "-n", "2", "--out", str(tmp_path / "x.npy")]) == 1
    assert "not a probgen model file" in capsys.readouterr().err


def test_demo_writes_plot(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--rolls", "600"]) == 0
    assert (tmp_path / "casino.png").stat().st_size > 1000


def test_bayesian_network_csv_uses_variable_and_state_names(tmp_path, capsys):
    model_path = tmp_path / "asia.probgen"
    assert main(["fit", "bn_asia", "--smoke", "--out", str(model_path)]) == 0
    draws = tmp_path / "asia.csv"
    assert main(["sample", str(model_path), "-n", "40", "--seed", "0", "--out", str(draws)]) == 0
    frame = pd.read_csv(draws)
    assert "smoke" in frame.columns and set(frame["smoke"]) <= {"yes", "no"}
    assert main(["score", str(model_path), str(draws)]) == 0
    assert "examples: 40" in capsys.readouterr().out
    assert (
        main(["fit", "bn_asia", "--data", str(draws), "--out", str(tmp_path / "refit.probgen")])
        == 0
    )
    frame = pd.read_csv(draws)
    direct = _direct_fit("bn_asia", frame, smoke=False)
    refit = load(tmp_path / "refit.probgen")
    for variable in direct.variables:
        torch.testing.assert_close(refit.table(variable), direct.table(variable))
    torch.testing.assert_close(refit.log_prob(frame), direct.log_prob(frame))


def test_infer_runs_an_experiment_config(tmp_path, capsys):
    from probgen.recipes._shared_data import SharedDataMissing, posteriordb_data

    try:
        posteriordb_data("eight_schools-eight_schools_noncentered")
    except SharedDataMissing as error:
        pytest.skip(str(error))
    config = tmp_path / "eight.toml"
    config.write_text(
        'name = "eight"\nseed = 0\nchains = 4\ndraws = 200\nwarmup = 200\n\n'
        '[model]\nrecipe = "eight_schools"\n\n[methods.mh]\nchains = 8\n'
    )
    out = tmp_path / "results"
    assert main(["infer", str(config), "--out", str(out)]) == 0
    assert "results written to" in capsys.readouterr().out
    assert any(path.name.startswith("summary") for path in out.rglob("*.csv"))


def test_infer_names_a_missing_config(tmp_path, capsys):
    assert main(["infer", str(tmp_path / "nothing.toml")]) == 1
    assert "nothing.toml" in capsys.readouterr().err
