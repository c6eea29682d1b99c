"""Evaluation metrics for generative models: held-out log-likelihood (nats, bits/dim), MMD,
Fréchet distance and mode coverage.

Example:
    >>> from probgen.metrics import mmd, frechet_distance, mode_coverage, bits_per_dim
    >>> callable(mmd) and callable(frechet_distance)
    True
"""

from probgen.metrics.coverage import mode_coverage
from probgen.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_samples,
)
from probgen.metrics.likelihood import bits_per_dim, heldout_log_likelihood
from probgen.metrics.mmd import median_bandwidth, mmd

__all__ = [
    "bits_per_dim",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_samples",
    "heldout_log_likelihood",
    "median_bandwidth",
    "mmd",
    "mode_coverage",
]
