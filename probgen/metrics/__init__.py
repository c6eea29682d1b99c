"""Evaluation metrics for generative models: held-out log-likelihood (nats, bits/dim), MMD,
Fréchet distance and mode coverage; sample metrics on the features of an in-repo classifier
(KID, precision/recall/density/coverage, an Inception-Score-style score), two-sample tests (MMD,
energy, classifier) and memorisation checks (data-copying test, nearest-neighbour distances).

Example:
    >>> from probgen.metrics import mmd, frechet_distance, mode_coverage, bits_per_dim
    >>> callable(mmd) and callable(frechet_distance)
    True
"""

from probgen.metrics.coverage import mode_coverage
from probgen.metrics.features import load_feature_classifier
from probgen.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_samples,
)
from probgen.metrics.inception_score import inception_score
from probgen.metrics.kernel_distance import kernel_distance
from probgen.metrics.likelihood import bits_per_dim, heldout_log_likelihood
from probgen.metrics.memorisation import data_copying_test, nearest_neighbour_distances
from probgen.metrics.mmd import median_bandwidth, mmd
from probgen.metrics.modes import mode_collapse_metrics
from probgen.metrics.prdc import precision_recall_density_coverage
from probgen.metrics.two_sample import classifier_test, energy_test, mmd_test

__all__ = [
    "bits_per_dim",
    "classifier_test",
    "data_copying_test",
    "energy_test",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_samples",
    "heldout_log_likelihood",
    "inception_score",
    "kernel_distance",
    "load_feature_classifier",
    "median_bandwidth",
    "mmd",
    "mmd_test",
    "mode_collapse_metrics",
    "mode_coverage",
    "nearest_neighbour_distances",
    "precision_recall_density_coverage",
]
