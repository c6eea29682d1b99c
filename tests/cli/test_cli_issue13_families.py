"""`probgen fit / sample / score / evaluate` on WaveNet, PixelRNN and the VAE-GAN: the values.

Each command's figures are compared with the Python API on the same model file and data: the
printed mean log-likelihood equals `log_prob`, seeded `sample` writes `model.sample`'s draws,
and `evaluate` on a model without a density reports sample metrics and no likelihood.
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


def _printed(output: str, key: str) -> float:
    match = re.search(rf"^{re.escape(key)}: (\S+)", output, flags=re.MULTILINE)
    assert match, f"{key!r} not printed in:\n{output}"
    return float(match.group(1))


def _fit(tmp_path, recipe: str) -> str:
    out = tmp_path / f"{recipe}.probgen"
    assert main(["fit", recipe, "--smoke", "--out", str(out)]) == 0
    return str(out)


def test_wavenet_sample_and_score_agree_with_the_model(tmp_path, capsys):
    model_file = _fit(tmp_path, "wavenet_tones")
    draws = tmp_path / "draws.csv"
    arguments = ["-n", "3", "--length", "40", "--seed", "5", "--out", str(draws)]
    assert main(["sample", model_file, *arguments]) == 0
    frame = pd.read_csv(draws)
    assert frame["sequence_id"].nunique() == 3 and len(frame) == 120
    model = load(model_file)
    sequences = torch.as_tensor(
        np.stack([g["x0"].to_numpy() for _, g in frame.groupby("sequence_id", sort=True)])
    )
    expected = model.sample(3, length=40, seed=5)
    assert torch.equal(sequences, expected.reshape(3, 40).to(sequences.dtype))
    capsys.readouterr()
    assert main(["score", model_file, str(draws)]) == 0
    output = capsys.readouterr().out
    assert "log_prob_kind: exact" in output
    mean = float(model.log_prob(expected).detach().double().mean())
    assert _printed(output, "mean log_prob") == pytest.approx(mean, rel=1e-5)


def test_pixelrnn_score_of_images_equals_log_prob(tmp_path, capsys):
    from probgen.recipes import pixelrnn_mnist
    from probgen.recipes._shared_data import SharedDataMissing

    try:
        pixelrnn_mnist.data("test", n=1)
    except SharedDataMissing as error:
        pytest.skip(str(error))
    model_file = _fit(tmp_path, "pixelrnn_mnist")
    model = load(model_file)
    images = (torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    path = tmp_path / "images.npy"
    np.save(path, images.numpy())
    capsys.readouterr()
    assert main(["score", model_file, str(path)]) == 0
    output = capsys.readouterr().out
    assert "log_prob_kind: exact" in output
    values = model.log_prob(images).detach().double()
    assert _printed(output, "mean log_prob") == pytest.approx(float(values.mean()), rel=1e-5)
    bits = -float(values.mean()) / (784 * np.log(2.0))
    assert _printed(output, "mean bits per dimension") == pytest.approx(bits, rel=1e-5)


def test_vaegan_evaluate_reports_sample_metrics_and_no_likelihood(tmp_path, capsys):
    from probgen.recipes import vaegan_mnist

    model_file = _fit(tmp_path, "vaegan_mnist")
    held_out = vaegan_mnist.data("test", source="digits", n=48)
    path = tmp_path / "held_out.npy"
    np.save(path, held_out.numpy())
    out = tmp_path / "evaluation"
    arguments = ["--data", str(path), "--samples", "48", "--out", str(out), "--seed", "0"]
    assert main(["evaluate", model_file, *arguments]) == 0
    report = json.loads((out / "evaluation.json").read_text())["models"]["vaegan_mnist"]
    assert report["log_prob_kind"] == "none" and report["likelihood"]["kind"] == "none"
    metrics = report["samples"]
    assert metrics["n_samples"] == 48
    for name in ("fid", "kid_mean", "precision", "recall", "density", "coverage", "mmd"):
        assert np.isfinite(metrics[name]), name
    assert 0.0 <= metrics["precision"] <= 1.0 and 0.0 <= metrics["coverage"] <= 1.0
    assert (out / "samples.png").is_file()
    capsys.readouterr()
    assert main(["score", model_file, str(path)]) != 0  # no density: a clear refusal
    assert "has no density" in capsys.readouterr().err
