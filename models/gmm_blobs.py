"""Three 2-D Gaussian blobs with full covariances, fitted by a Gaussian mixture (EM).

The generating mixture (`TRUE_PARAMETERS`) has three well-separated components with
correlated features; `data(split, seed)` draws points from it, so a fit can be compared with
the truth up to a relabelling of the components. The same data serve the Bayesian mixture:
`probgen.sample_chains(GaussianMixture(3, covariance="diag"), "gibbs", evidence=data())`.

Example:
    >>> from probgen.recipes import gmm_blobs
    >>> gmm_blobs.data(n_samples=5).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.mixture.model import GaussianMixture

FAMILY = "mixture"
TRUE_PARAMETERS = {
    "weights": [0.5, 0.3, 0.2],
    "means": [[-4.0, 0.0], [3.0, 3.0], [2.0, -4.0]],
    "covariances": [
        [[1.0, 0.5], [0.5, 1.0]],
        [[0.6, -0.2], [-0.2, 0.4]],
        [[0.5, 0.0], [0.0, 1.5]],
    ],
}
REFERENCE = {
    **TRUE_PARAMETERS,
    "source": "generating parameters of the simulated data (a fit recovers them up to a "
    "permutation of the components)",
}
SMOKE: dict[str, Any] = {
    "build": {"n_init": 1, "max_iter": 50},
    "data": {"n_samples": 300},
}
CONTRACT: dict[str, Any] = {}


def true_model() -> GaussianMixture:
    """The generating mixture (float64)."""
    return GaussianMixture(3, covariance="full").double().set_parameters(**TRUE_PARAMETERS)


def build(**overrides: Any) -> GaussianMixture:
    """A three-component full-covariance mixture (k-means start, 3 restarts, float64)."""
    options: dict[str, Any] = dict(covariance="full", n_init=3, max_iter=200, seed=0)
    options.update(overrides)
    n_components = options.pop("n_components", 3)
    return GaussianMixture(n_components, **options).double()


def data(split: str = "train", seed: int = 0, n_samples: int = 1000) -> torch.Tensor:
    """Points drawn from the generating mixture, shape (n_samples, 2), float64."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    stream = seed if split == "train" else seed + 10_000
    return true_model().sample(n_samples, seed=stream)
