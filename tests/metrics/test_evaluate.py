"""`probgen.evaluate`: one report that respects `log_prob_kind`, sample metrics for every model,
the JSON file, the picture and the side-by-side table."""

from __future__ import annotations

import json
import math

import pytest
import torch

import probgen
from probgen.core.errors import DataError, NoDensityError
from probgen.evaluation import evaluate


class _Sampler:
    """A model without a density (like a GAN) that draws from a fixed function of noise."""

    log_prob_kind = probgen.LogProbKind.NONE

    def __init__(self, draw, width: int) -> None:
        self.draw = draw
        self.event_shape = torch.Size([width])

    def sample(self, n: int, *, seed: int | None = None) -> torch.Tensor:
        return self.draw(n, torch.Generator().manual_seed(seed or 0))

    def log_prob(self, x):
        raise NoDensityError("no density: judge the samples")


def _gaussian_data(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def test_report_respects_log_prob_kind_and_ranks_samples(tmp_path):
    train, test = _gaussian_data(400, 0), _gaussian_data(200, 1)
    mixture = probgen.GaussianMixture(n_components=2, seed=0).fit(train)
    honest = _Sampler(lambda n, g: torch.randn(n, 2, generator=g), 2)
    collapsed = _Sampler(lambda n, g: 0.01 * torch.randn(n, 2, generator=g), 2)
    shifted = _Sampler(lambda n, g: torch.randn(n, 2, generator=g) + 1.5, 2)
    report = evaluate(
        {"gmm": mixture, "honest": honest, "collapsed": collapsed, "shifted": shifted},
        test,
        out_dir=tmp_path,
        n_permutations=50,
    )
    models = report["models"]
    assert report["feature_space"] == "raw"
    # Exact density: the held-out log-likelihood in nats and bits/dim, nothing else.
    likelihood = models["gmm"]["likelihood"]
    expected = float(mixture.log_prob(test).double().mean())
    assert likelihood["kind"] == "exact" and math.isclose(likelihood["mean_log_prob"], expected)
    assert math.isclose(likelihood["bits_per_dim"], -expected / (2 * math.log(2)))
    # No density: no likelihood figure at all, but sample metrics.
    assert models["honest"]["likelihood"]["kind"] == "none"
    assert "mean_log_prob" not in models["honest"]["likelihood"]
    samples = {name: models[name]["samples"] for name in models}
    assert samples["honest"]["precision"] > 0.8 and samples["honest"]["recall"] > 0.8
    assert samples["collapsed"]["precision"] > 0.9 and samples["collapsed"]["recall"] < 0.1
    assert samples["shifted"]["fid"] > 10 * samples["honest"]["fid"]
    assert samples["shifted"]["mmd_p_value"] < 0.05 < samples["honest"]["mmd_p_value"]
    assert "inception_score" not in samples["honest"]  # raw features: no classifier
    # The table has one row per model; a model without a density shows no log-likelihood.
    lines = report["table"].splitlines()
    assert len(lines) == 2 + 4 and lines[0].startswith("model")
    honest_row = next(line for line in lines if line.startswith("honest")).split()
    assert honest_row[1] == "none" and honest_row[2] == "-" and honest_row[3] == "-"
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["table"] == report["table"]
    assert written["models"]["gmm"]["likelihood"]["kind"] == "exact"
    assert (tmp_path / "samples.png").stat().st_size > 1000
    assert report["files"] == {
        "samples": str(tmp_path / "samples.png"),
        "json": str(tmp_path / "evaluation.json"),
    }


def test_digit_images_use_the_classifier_and_name_a_bound():
    from probgen.recipes import vae_digits

    train = vae_digits.data("train", n=300)
    test = vae_digits.data("test")
    vae = vae_digits.build(hidden_dims=[32], latent_dim=2, n_epochs=1).fit(train)
    copier = _Sampler(lambda n, g: train[torch.randperm(len(train), generator=g)[:n]], 64)
    report = evaluate(
        {"vae": vae, "copier": copier},
        test,
        train_data=train,
        n_permutations=0,
    )
    assert report["feature_space"] == "classifier:digits"
    assert 1 <= report["data"]["inception_score"] <= 10
    vae_report = report["models"]["vae"]
    assert vae_report["likelihood"]["kind"] == "lower_bound"
    assert "lower bound" in vae_report["likelihood"]["label"]
    vae_row = next(line for line in report["table"].splitlines() if line.startswith("vae"))
    assert ">=" in vae_row and "<=" in vae_row  # ELBO is a lower bound, so bits/dim an upper one
    assert "inception_score" in vae_report["samples"] and "mmd_p_value" not in vae_report["samples"]
    # The copier returns training images: the memorisation checks flag it, not the VAE.
    assert report["models"]["copier"]["samples"]["data_copying_flag"]
    assert report["models"]["copier"]["samples"]["nearest_neighbour"]["median_ratio"] == 0
    assert not vae_report["samples"]["data_copying_flag"]


def test_bad_input():
    test = _gaussian_data(50, 0)
    wide = _Sampler(lambda n, g: torch.randn(n, 3, generator=g), 3)
    with pytest.raises(DataError, match="'wide' draws 3 values"):
        evaluate({"wide": wide}, test)
    broken = _Sampler(lambda n, g: torch.full((n, 2), float("nan")), 2)
    with pytest.raises(DataError, match="broken"):
        evaluate({"broken": broken}, test)
    honest = _Sampler(lambda n, g: torch.randn(n, 2, generator=g), 2)
    with pytest.raises(DataError, match="data is empty"):
        evaluate(honest, test[:0])
    with pytest.raises(DataError, match="names"):
        evaluate([honest, honest], test, names=["one"])
    with pytest.raises(DataError, match="features"):
        evaluate(honest, test, features="inception")
    with pytest.raises(DataError, match="train_data"):
        evaluate(honest, test, train_data=torch.zeros(10, 3))
    # Duplicate names get a suffix; a bare model is named after its class.
    report = evaluate([honest, honest], test, n_permutations=0)
    assert list(report["models"]) == ["_Sampler", "_Sampler_2"]


def test_evaluate_is_a_public_name():
    assert probgen.evaluate is evaluate
