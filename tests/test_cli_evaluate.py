"""`probgen evaluate MODEL [MODEL ...] --data DATA --out DIR` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from probgen.cli import main


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from probgen.recipes import vae_digits

    folder = tmp_path_factory.mktemp("models")
    train = vae_digits.data("train", n=200)
    model = vae_digits.build(hidden_dims=[16], latent_dim=2, n_epochs=1).fit(train)
    paths = []
    for sub in ("a", "b"):
        path = folder / sub / "vae.probgen"
        path.parent.mkdir()
        model.save(path)
        paths.append(str(path))
    return paths


def test_evaluate_several_models_on_a_recipe_split(model_files, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            *model_files,
            "--data",
            "vae_digits",
            "--out",
            str(out),
            "--max-examples",
            "150",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "classifier:digits" in printed
    # Same file name twice: the second gets a suffix; both rows name the ELBO a lower bound.
    rows = [line for line in printed.splitlines() if line.startswith("vae")]
    assert [row.split()[0] for row in rows] == ["vae", "vae_2"]
    assert all(row.split()[1] == "lower_bound" and row.split()[2].startswith(">=") for row in rows)
    report = json.loads((out / "evaluation.json").read_text())
    assert set(report["models"]) == {"vae", "vae_2"}
    assert report["data"]["n_examples"] == 150
    assert report["models"]["vae"]["samples"]["n_samples"] == 150
    # The same model under two names: the same seeded samples, the same figures.
    assert report["models"]["vae"]["samples"]["fid"] == report["models"]["vae_2"]["samples"]["fid"]
    assert (out / "samples.png").stat().st_size > 1000


def test_evaluate_reads_data_files_and_reports_errors(model_files, tmp_path, capsys):
    from probgen.recipes import vae_digits

    data = tmp_path / "test.npy"
    np.save(data, vae_digits.data("test").numpy())
    train = tmp_path / "train.npy"
    np.save(train, vae_digits.data("train", n=200).numpy())
    code = main(
        ["evaluate", model_files[0], "--data", str(data), "--train", str(train), "--samples", "60"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "written" not in printed  # no --out: nothing written
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((20, 3)))
    assert main(["evaluate", model_files[0], "--data", str(wrong)]) == 1
    assert "error" in capsys.readouterr().err
    assert main(["evaluate", model_files[0], "--data", str(tmp_path / "absent.npy")]) == 1
    assert "does not exist" in capsys.readouterr().err
