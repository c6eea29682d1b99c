"""WaveNet on synthetic waveforms (tones, chirps and noise), quantised to 256 mu-law levels.

Data: generated here (no files). Each waveform, sampled at 8 kHz, sums one to three steady
tones (100-1000 Hz), one linear chirp (its frequency sweeping between 100 and 1500 Hz) and
white Gaussian noise (standard deviation 0.02), scaled to peak at 0.9; `waveforms()` gives the
real values and `data()` their mu-law codes (n, length). The splits come from different seeds.
Known answer: `noise_floor_bits()` is the entropy of the quantised noise around the clean
signal, the bits per sample a model that knew each waveform's tones and chirp would need; a
WaveNet must also learn them from the samples it has seen, so it lands above that floor.

Example:
    >>> from probgen.recipes import wavenet_tones
    >>> wavenet_tones.data(n=2, length=64).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from probgen.core.data import check_positive_int
from probgen.core.errors import DataError
from probgen.deep.wavenet import WaveNet, mu_law_encode

FAMILY = "autoregressive"
SAMPLE_RATE = 8000
NOISE_STD = 0.02
PEAK = 0.9
N_LEVELS = 256
_SPLIT_SEEDS = {"train": 0, "valid": 1, "test": 2}
_DEFAULT_N = {"train": 256, "valid": 32, "test": 32}
REFERENCE = {
    "what": "bits per mu-law sample; the noise floor (entropy of the quantised noise given the "
    "clean signal) is a lower bound for any model",
    "source": "computed from the generator (noise_floor_bits)",
}
SMOKE = {
    "build": {"residual_channels": 8, "skip_channels": 8, "n_layers": 3},
    "data": {"n": 8, "length": 64},
    "fit": {"n_epochs": 1},
}
# 256**5 sequences cannot be enumerated; normalisation is checked on tiny models in tests.
CONTRACT = {"check_normalization": False, "n_samples": 50}

SETTINGS: dict[str, Any] = dict(
    output="categorical",
    n_levels=N_LEVELS,
    residual_channels=32,
    skip_channels=64,
    kernel_size=2,
    n_layers=8,
    n_cycles=1,
    mu_law_input=True,
    n_epochs=40,
    batch_size=16,
    learning_rate=2e-3,
    seed=0,
)


def build(**overrides: Any) -> WaveNet:
    """A categorical WaveNet over 256 mu-law levels (receptive field 256 samples) that also
    reads each past sample's amplitude (`mu_law_input`)."""
    return WaveNet(**{**SETTINGS, **overrides})


def _clean_and_noisy(
    n: int, length: int, seed: int, noise_std: float
) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    time = np.arange(length) / SAMPLE_RATE
    clean = np.zeros((n, length))
    for row in clean:
        for _ in range(generator.integers(1, 4)):
            frequency = generator.uniform(100, 1000)
            row += generator.uniform(0.2, 1.0) * np.sin(
                2 * math.pi * frequency * time + generator.uniform(0, 2 * math.pi)
            )
        start, end = generator.uniform(100, 1500, size=2)
        sweep = (end - start) / max(time[-1], 1e-9)  # Hz per second
        phase = 2 * math.pi * (start * time + 0.5 * sweep * time**2)
        row += generator.uniform(0.2, 1.0) * np.sin(phase + generator.uniform(0, 2 * math.pi))
    clean *= (PEAK - 4 * noise_std) / np.abs(clean).max(1, keepdims=True)
    noisy = clean + generator.normal(0.0, noise_std, size=clean.shape)
    return clean, np.clip(noisy, -1.0, 1.0)


def _check(split: str, n: int | None, length: int) -> tuple[str, int, int]:
    split = "valid" if split == "validation" else split
    if split not in _SPLIT_SEEDS:
        raise DataError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    count = _DEFAULT_N[split] if n is None else check_positive_int(n, "n")
    return split, count, check_positive_int(length, "length", minimum=2)


def waveforms(
    split: str = "train", seed: int = 0, n: int | None = None, length: int = 1024
) -> torch.Tensor:
    """Real waveforms (n, length) in [-1, 1] of a split (default n: 256/32/32)."""
    split, n, length = _check(split, n, length)
    _, noisy = _clean_and_noisy(n, length, 1000 * seed + _SPLIT_SEEDS[split], NOISE_STD)
    return torch.as_tensor(noisy, dtype=torch.float32)


def data(
    split: str = "train", seed: int = 0, n: int | None = None, length: int = 1024
) -> torch.Tensor:
    """Mu-law codes (n, length), long, 0..255, of `waveforms(split, seed, n, length)`."""
    return mu_law_encode(waveforms(split, seed, n, length), N_LEVELS)


def noise_floor_bits(
    split: str = "test", seed: int = 0, n: int | None = None, length: int = 1024
) -> float:
    """Mean -log2 p(code | clean signal) of the split's codes under the true noise model."""
    from scipy.stats import norm

    split, n, length = _check(split, n, length)
    clean, noisy = _clean_and_noisy(n, length, 1000 * seed + _SPLIT_SEEDS[split], NOISE_STD)
    codes = mu_law_encode(torch.as_tensor(noisy), N_LEVELS).numpy()
    # Cell of each level in the waveform domain: between the mu-law images of the midpoints.
    mu = N_LEVELS - 1
    boundaries = (np.arange(N_LEVELS + 1) - 0.5) / mu * 2 - 1
    edges = np.sign(boundaries) * np.expm1(np.abs(boundaries) * math.log1p(mu)) / mu
    edges[0], edges[-1] = -np.inf, np.inf
    upper = norm.cdf((edges[codes + 1] - clean) / NOISE_STD)
    lower = norm.cdf((edges[codes] - clean) / NOISE_STD)
    return float(-np.log2(np.maximum(upper - lower, 1e-300)).mean())
