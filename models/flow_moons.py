"""RealNVP flow on scikit-learn's two moons.

Data: `sklearn.datasets.make_moons` with noise 0.05 (train/valid/test drawn with disjoint
seeds). There is no closed-form answer; the benchmark compares held-out log-likelihood with
zuko's flows of the same architecture.

Example:
    >>> from probgen.recipes import flow_moons
    >>> flow_moons.data("train", n=64).shape
    torch.Size([64, 2])
"""

from __future__ import annotations

from typing import Any

import torch
from probgen.recipes._flow_recipe import build_flow, split_size_and_seed

from probgen.deep.flows import Flow

FAMILY = "flow"
NOISE = 0.05

SMOKE = {
    "build": {"n_layers": 2, "hidden_dims": [16, 16]},
    "data": {"n": 512},
    "fit": {"n_epochs": 2},
}


def build(**overrides: Any) -> Flow:
    """A RealNVP (affine coupling) flow with 8 layers."""
    return build_flow(dict(kind="realnvp", n_layers=8, learning_rate=1e-3), overrides)


def data(split: str = "train", seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Two-moons points (n, 2) as float32."""
    from sklearn.datasets import make_moons

    n, split_seed = split_size_and_seed(split, seed, n)
    points, _ = make_moons(n_samples=n, noise=NOISE, random_state=split_seed)
    return torch.as_tensor(points, dtype=torch.float32)
