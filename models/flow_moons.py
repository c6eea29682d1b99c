"""RealNVP flow on scikit-learn's two moons.

Data: `sklearn.datasets.make_moons` with noise 0.05 (train/valid/test drawn with disjoint
seeds). There is no closed-form answer; the benchmark compares held-out log-likelihood with
zuko's flows of the same architecture.

Example:
    >>> from models import flow_moons
    >>> flow_moons.data("train", n=64).shape
    torch.Size([64, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.deep.flows import Flow
from probgen.errors import DataError

FAMILY = "flow"
NOISE = 0.05
_SIZES = {"train": 10_000, "valid": 2_000, "test": 5_000}
_SPLIT_OFFSETS = {"train": 0, "valid": 1_000_003, "test": 2_000_003}

SMOKE = {
    "build": {"n_layers": 2, "hidden_dims": [16, 16]},
    "data": {"n": 512},
    "fit": {"epochs": 2},
}


def build(**overrides: Any) -> Flow:
    """A RealNVP (affine coupling) flow with 8 layers."""
    settings = dict(
        dim=2,
        kind="realnvp",
        n_layers=8,
        hidden_dims=(64, 64),
        epochs=60,
        batch_size=256,
        lr=1e-3,
        seed=0,
    )
    settings.update(overrides)
    return Flow(**settings)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Two-moons points (n, 2) as float32."""
    from sklearn.datasets import make_moons

    if split not in _SIZES:
        raise DataError(f"split must be one of {', '.join(_SIZES)}; got {split!r}")
    n = _SIZES[split] if n is None else int(n)
    points, _ = make_moons(n_samples=n, noise=NOISE, random_state=int(seed) + _SPLIT_OFFSETS[split])
    return torch.as_tensor(points, dtype=torch.float32)
