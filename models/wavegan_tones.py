"""WaveGAN on the synthetic tones and chirps of `wavenet_tones` (real waveforms; no density).

Data: `wavenet_tones.waveforms` (8 kHz waveforms summing one to three steady tones, a linear
chirp and white noise, peak 0.9), as real values in [-1, 1] rather than mu-law codes: WaveGAN's
generator ends in tanh. The model is the setting `benchmarks/wavenet_jsb.py` measures (three
x4 layers, width 16, WGAN-GP, phase shuffle 2, learning rates 3e-4 as the CPU budget allows few
steps). A WaveGAN has no likelihood (`log_prob_kind` "none"): it is judged by `sample_metrics`,
the sample metrics of `probgen.metrics` (MMD, Frechet distance, precision / recall / density /
coverage) on `spectral_features`, the log power spectrum of each waveform. Known answer: real
held-out waveforms score MMD about 0 and precision and recall about 1 against the test split
(the best a model can do); white noise of the same level scores the worst.

Example:
    >>> from probgen.recipes import wavegan_tones
    >>> waves = wavegan_tones.data("test", n=4, length=256)
    >>> waves.shape, bool(waves.abs().max() <= 1)
    (torch.Size([4, 256]), True)
    >>> wavegan_tones.spectral_features(waves).shape
    torch.Size([4, 65])
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes import wavenet_tones

from probgen.core.data import as_tensor, check_positive_int
from probgen.core.errors import DataError
from probgen.gan.wavegan import WaveGAN

FAMILY = "gan"
SAMPLE_RATE = wavenet_tones.SAMPLE_RATE
_DEFAULT_N = {"train": 1024, "valid": 64, "test": 64}
REFERENCE = {
    "what": "sample metrics on spectral features against the test split: held-out real "
    "waveforms are the best achievable (MMD ~ 0, precision and recall ~ 1), white noise of the "
    "data's level a bad baseline",
    "source": "computed from the generator (sample_metrics on wavenet_tones.waveforms)",
}
SMOKE = {
    "build": {"length": 64, "latent_dim": 4, "width": 4, "n_layers": 2, "n_critic": 1,
              "batch_size": 8},
    "data": {"n": 16, "length": 64},
    "fit": {"n_epochs": 1},
}
CONTRACT = {"n_samples": 32}

SETTINGS: dict[str, Any] = dict(
    length=1024,
    latent_dim=32,
    width=16,
    n_layers=3,
    phase_shuffle=2,
    loss="wgan_gp",
    n_critic=5,
    # The paper's 1e-4 is too slow for a CPU budget of a few hundred generator steps.
    generator_learning_rate=3e-4,
    discriminator_learning_rate=3e-4,
    n_epochs=20,
    batch_size=32,
    seed=0,
)


def build(**overrides: Any) -> WaveGAN:
    """WaveGAN for 1024-sample waveforms (three x4 transposed convolutions from length 16)."""
    return WaveGAN(**{**SETTINGS, **overrides})


def data(
    split: str = "train", seed: int = 0, n: int | None = None, length: int = 1024
) -> torch.Tensor:
    """Real waveforms (n, length) float32 in [-1, 1] (default n: 1024 / 64 / 64 for
    train / valid / test), the same generator and split seeds as `wavenet_tones`."""
    key = "valid" if split == "validation" else split
    if key not in _DEFAULT_N:
        raise DataError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    count = _DEFAULT_N[key] if n is None else check_positive_int(n, "n")
    return wavenet_tones.waveforms(key, seed=seed, n=count, length=length)


def spectral_features(waves: Any, n_fft: int = 128) -> torch.Tensor:
    """Log power spectrum of each waveform (n, n_fft // 2 + 1), averaged over Hann frames
    (hop n_fft / 2): the features the sample metrics compare. n_fft shrinks to the waveform's
    length (rounded down to even) for short waveforms."""
    x = as_tensor(waves, "waves")
    if x.dim() != 2 or x.shape[1] < 4:
        raise DataError(f"waves must have shape (n, length >= 4), got {tuple(x.shape)}")
    n_fft = check_positive_int(min(n_fft, x.shape[1]) // 2 * 2, "n_fft", minimum=4)
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    frames = torch.stft(
        x, n_fft, hop_length=n_fft // 2, window=window, return_complex=True
    )
    return torch.log(frames.abs().pow(2).mean(-1) + 1e-6)


def sample_metrics(real: Any, generated: Any, k: int = 5, n_fft: int = 128) -> dict[str, float]:
    """MMD, Frechet distance and precision / recall / density / coverage (k nearest
    neighbours) of `generated` against `real` waveforms on `spectral_features`."""
    from probgen.metrics import (
        frechet_distance_from_samples,
        mmd,
        precision_recall_density_coverage,
    )

    real_features = spectral_features(real, n_fft).double()
    fake_features = spectral_features(generated, n_fft).double()
    k = min(k, real_features.shape[0] - 1, fake_features.shape[0] - 1)
    if k < 1:
        raise DataError("sample_metrics needs at least two real and two generated waveforms")
    prdc = precision_recall_density_coverage(real_features, fake_features, k=k)
    return {
        "mmd": float(mmd(real_features, fake_features)),
        "frechet": float(frechet_distance_from_samples(real_features, fake_features)),
        **{name: float(value) for name, value in prdc.items()},
    }
