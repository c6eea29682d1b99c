"""The wavegan_tones recipe (data, spectral features, sample metrics, contract) and its example."""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
from probgen.recipes import wavegan_tones, wavenet_tones

from probgen.core.errors import DataError, NoDensityError
from probgen.core.testing import check_density
from probgen.metrics import mmd

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wavegan_tones.py"


def test_data_are_the_wavenet_tones_waveforms():
    waves = wavegan_tones.data("valid", seed=1, n=3, length=128)
    assert torch.equal(waves, wavenet_tones.waveforms("valid", seed=1, n=3, length=128))
    assert waves.dtype == torch.float32 and waves.abs().max() <= 1
    assert not torch.equal(waves, wavegan_tones.data("test", seed=1, n=3, length=128))
    assert wavegan_tones.data("test", length=64).shape == (64, 64)  # default test size
    with pytest.raises(DataError, match="split"):
        wavegan_tones.data("dev")


def test_recipe_meets_the_contract_without_density():
    model = wavegan_tones.build(**wavegan_tones.SMOKE["build"])
    report = check_density(
        model,
        wavegan_tones.data(**wavegan_tones.SMOKE["data"]),
        fit_options=wavegan_tones.SMOKE["fit"],
        **wavegan_tones.CONTRACT,
    )
    assert report["log_prob_kind"] == "none"
    with pytest.raises(NoDensityError):
        model.log_prob(wavegan_tones.data("test", n=2, length=64))
    assert model.sample(3, seed=0).shape == (3, 64)


def test_build_uses_the_recipe_settings_and_overrides():
    model = wavegan_tones.build()
    assert (model.length, model.n_layers, model.loss) == (1024, 3, "wgan_gp")
    assert model.generator_learning_rate == 3e-4
    assert wavegan_tones.build(width=8).width == 8


def test_spectral_features_peak_at_the_tone():
    """A pure tone at bin frequency f puts its largest log power in bin f * n_fft / rate."""
    rate, length = wavegan_tones.SAMPLE_RATE, 1024
    time = torch.arange(length, dtype=torch.float64) / rate
    for n_fft, bin_index in ((128, 20), (64, 7)):
        frequency = bin_index * rate / n_fft
        tone = torch.sin(2 * math.pi * frequency * time)[None]
        features = wavegan_tones.spectral_features(tone, n_fft=n_fft)
        assert features.shape == (1, n_fft // 2 + 1)
        assert int(features.argmax()) == bin_index
    # Shorter waveforms than n_fft: the frame shrinks to their length.
    assert wavegan_tones.spectral_features(torch.zeros(2, 40)).shape == (2, 21)
    with pytest.raises(DataError, match="waves"):
        wavegan_tones.spectral_features(torch.zeros(5))


def test_sample_metrics_are_the_metrics_of_the_features_and_rank_noise_last():
    test = wavegan_tones.data("test", n=32, length=256)
    real = wavegan_tones.data("train", n=32, length=256)
    noise = torch.randn(32, 256, generator=torch.Generator().manual_seed(0)) * test.std()
    good, bad = wavegan_tones.sample_metrics(test, real), wavegan_tones.sample_metrics(test, noise)
    features = wavegan_tones.spectral_features
    expected = mmd(features(test).double(), features(real).double())
    assert good["mmd"] == pytest.approx(float(expected))
    assert good["mmd"] < 0.05 < bad["mmd"] and good["frechet"] < bad["frechet"]
    assert good["precision"] > 0.5 and good["recall"] > 0.5 and bad["precision"] == 0.0
    assert wavegan_tones.sample_metrics(test, real, k=3)["k"] == 3  # k is passed on
    with pytest.raises(DataError, match="two"):
        wavegan_tones.sample_metrics(test[:1], real[:1])


def test_example_smoke_prints_metrics_and_writes_spectrograms(tmp_path, monkeypatch, capsys):
    png = tmp_path / "spectrograms.png"
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--smoke", "--out", str(png)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    output = capsys.readouterr().out
    rows = {line.split()[0] for line in output.splitlines() if line.strip()}
    assert {"WaveGAN", "real", "white"} <= rows
    assert png.stat().st_size > 1000
