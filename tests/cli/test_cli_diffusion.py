"""`probgen fit / sample / score / evaluate` on diffusion models: the values, not only exit codes.

The command's figures are checked against the Python API on the same model file and data: the
printed mean and total equal `log_prob` (the bound over all steps), the label says it is a lower
bound (or an estimate for sampled steps), samples equal `model.sample` with the same seed, and
images survive the CSV round trip (one row of pixels per image).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from probgen.cli import main
from probgen.core.io import load


def _printed(output: str, key: str) -> str:
    match = re.search(rf"^{re.escape(key)}: (.+)$", output, flags=re.MULTILINE)
    assert match, f"{key!r} not printed in:\n{output}"
    return match.group(1)


def _fit_with_config(tmp_path, name: str, config: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(config)
    out = tmp_path / f"{name}.probgen"
    assert main(["fit", str(path), "--out", str(out)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def gaussians(tmp_path_factory):
    """A T = 8 DDPM on the 2-D mixture, fitted by `probgen fit` (12 Adam steps), and test data."""
    from probgen.recipes import diffusion_gaussians

    folder = tmp_path_factory.mktemp("diffusion_cli")
    model_file = _fit_with_config(
        folder,
        "gaussians",
        'recipe = "diffusion_gaussians"\nsmoke = true\n'
        "[build]\nhidden_dims = [16]\nn_steps = 8\n[fit]\nn_epochs = 3\nbatch_size = 64\n",
    )
    test = diffusion_gaussians.data("test", n=40).numpy()
    np.save(folder / "test.npy", test)
    return folder, model_file, test


def test_fit_writes_the_configured_model(gaussians):
    _, model_file, _ = gaussians
    model = load(model_file)
    # The config's build settings reach the model (not the recipe's T = 100 MLP).
    assert model.n_steps == 8 and model.hidden_dims == (16,)
    assert model.n_iter_ == 3 and model.log_prob_kind.value == "lower_bound"


def test_score_prints_the_bound_over_all_steps(gaussians, capsys):
    folder, model_file, test = gaussians
    per_example = folder / "scores.csv"
    capsys.readouterr()
    assert main(["score", model_file, str(folder / "test.npy"), "--out", str(per_example)]) == 0
    output = capsys.readouterr().out
    assert _printed(output, "log_prob_kind") == "lower_bound"
    assert "a lower bound on log p(x)" in _printed(output, "meaning")
    model = load(model_file)
    bound = model.variational_bound(torch.from_numpy(test), steps="all", seed=0).double()
    assert float(_printed(output, "mean log_prob")) == pytest.approx(float(bound.mean()), rel=1e-5)
    assert float(_printed(output, "total log_prob")) == pytest.approx(float(bound.sum()), rel=1e-5)
    assert int(_printed(output, "examples")) == len(test)
    frame = pd.read_csv(per_example)
    np.testing.assert_allclose(frame["log_prob"], bound.numpy(), rtol=1e-5)
    assert set(frame["log_prob_kind"]) == {"lower_bound"}
    # 2-D vectors are not images: no bits per dimension line.
    assert "bits per dimension" not in output


def test_sample_matches_the_api_with_the_same_seed(gaussians, capsys):
    folder, model_file, _ = gaussians
    draws = folder / "draws.npy"
    assert main(["sample", model_file, "-n", "6", "--seed", "3", "--out", str(draws)]) == 0
    expected = load(model_file).sample(6, seed=3)
    np.testing.assert_allclose(np.load(draws), expected.numpy(), rtol=1e-6)
    other = folder / "other.npy"
    assert main(["sample", model_file, "-n", "6", "--seed", "4", "--out", str(other)]) == 0
    assert not np.allclose(np.load(other), np.load(draws))  # the seed is not ignored


def test_evaluate_reports_the_bound_as_a_lower_bound(gaussians, capsys):
    folder, model_file, test = gaussians
    out = folder / "report"
    capsys.readouterr()
    code = main(["evaluate", model_file, "--data", str(folder / "test.npy"), "--out", str(out)])
    assert code == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("gaus"))
    assert row.split()[1] == "lower_bound" and row.split()[2].startswith(">=")
    likelihood = json.loads((out / "evaluation.json").read_text())["models"]["gaussians"][
        "likelihood"
    ]
    assert likelihood["kind"] == "lower_bound"
    expected = load(model_file).log_prob(torch.from_numpy(test)).double().mean()
    assert likelihood["mean_log_prob"] == pytest.approx(float(expected), rel=1e-5)


def test_sampled_steps_are_labelled_an_estimate(tmp_path, capsys):
    from probgen.recipes import diffusion_gaussians

    model_file = _fit_with_config(
        tmp_path,
        "sampled",
        'recipe = "diffusion_gaussians"\nsmoke = true\n[build]\nhidden_dims = [8]\nn_steps = 6\n'
        "bound_steps = 2\n[fit]\nn_epochs = 1\n",
    )
    test = diffusion_gaussians.data("test", n=10).numpy()
    np.save(tmp_path / "test.npy", test)
    capsys.readouterr()
    assert main(["score", model_file, str(tmp_path / "test.npy")]) == 0
    output = capsys.readouterr().out
    assert _printed(output, "log_prob_kind") == "estimate"
    assert "estimate" in _printed(output, "meaning") and "lower bound" not in output
    model = load(model_file)
    expected = model.variational_bound(torch.from_numpy(test), steps=2, seed=0).double().mean()
    assert float(_printed(output, "mean log_prob")) == pytest.approx(float(expected), rel=1e-5)


def test_binary_images_round_trip_through_csv(tmp_path, capsys):
    """Digits (8x8, two levels): samples are written one image per CSV row of 64 codes, and
    `score` reads such rows back as images, with bits per dimension marked as an upper bound."""
    model_file = _fit_with_config(
        tmp_path, "digits", 'recipe = "diffusion_digits"\nsmoke = true\n'
    )
    draws = tmp_path / "draws.csv"
    assert main(["sample", model_file, "-n", "4", "--seed", "1", "--out", str(draws)]) == 0
    frame = pd.read_csv(draws)
    assert frame.shape == (4, 64)
    assert set(np.unique(frame.to_numpy())) <= {0.0, 1.0}
    assert not np.signbit(frame.to_numpy()).any()  # no "-0.0" codes
    model = load(model_file)
    np.testing.assert_array_equal(frame.to_numpy().reshape(4, 8, 8), model.sample(4, seed=1))
    capsys.readouterr()
    assert main(["score", model_file, str(draws)]) == 0
    output = capsys.readouterr().out
    images = torch.from_numpy(frame.to_numpy().reshape(4, 8, 8)).float()
    expected = model.log_prob(images).double()
    assert float(_printed(output, "mean log_prob")) == pytest.approx(float(expected.mean()), 1e-5)
    bits = _printed(output, "mean bits per dimension")
    assert bits.startswith("<= ")
    assert float(bits[3:]) == pytest.approx(float(model.bits_per_dim(images).mean()), rel=1e-5)


def test_image_rows_of_the_wrong_width_are_named(tmp_path, capsys):
    model_file = _fit_with_config(
        tmp_path, "digits", 'recipe = "diffusion_digits"\nsmoke = true\n'
    )
    pd.DataFrame(np.zeros((3, 63))).to_csv(tmp_path / "bad.csv", index=False)
    capsys.readouterr()
    assert main(["score", model_file, str(tmp_path / "bad.csv")]) == 1
    assert "(8, 8)" in capsys.readouterr().err


def test_binarized_mnist_smoke_fit_and_score(tmp_path, capsys):
    """The binarized-MNIST recipe through the command (skipped without ../shared/data)."""
    from probgen.recipes import diffusion_mnist
    from probgen.recipes._shared_data import SharedDataMissing

    try:
        test = diffusion_mnist.data("test", n=3)
    except SharedDataMissing as error:
        pytest.skip(str(error))
    model_file = _fit_with_config(tmp_path, "mnist", 'recipe = "diffusion_mnist"\nsmoke = true\n')
    np.save(tmp_path / "test.npy", test.numpy())
    capsys.readouterr()
    assert main(["score", model_file, str(tmp_path / "test.npy")]) == 0
    output = capsys.readouterr().out
    # The recipe scores with sampled steps (bound_steps): an estimate, said so.
    assert _printed(output, "log_prob_kind") == "estimate"
    expected = load(model_file).log_prob(test).double().mean()
    assert float(_printed(output, "mean log_prob")) == pytest.approx(float(expected), rel=1e-5)
    assert _printed(output, "mean bits per dimension").startswith("~")
