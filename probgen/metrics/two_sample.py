"""Two-sample tests: do `x` and `y` come from the same distribution?

- `mmd_test`: the unbiased squared MMD with a Gaussian kernel (median-distance bandwidth by
  default, as `probgen.metrics.mmd`) and a permutation p-value;
- `energy_test`: the energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely and Rizzo's
  V-statistic) with a permutation p-value;
- `classifier_test`: the classifier two-sample test (Lopez-Paz and Oquab 2017): a classifier
  learns to tell x from y on half of a balanced sample; its accuracy on the other half is about
  0.5 when the distributions agree, and the p-value is the binomial tail of that accuracy.

Permutation p-values are (1 + #{permuted statistic >= observed}) / (1 + n_permutations), which is
a valid (never anti-conservative) p-value for any number of permutations.

Example:
    >>> import torch
    >>> from probgen.metrics.two_sample import mmd_test
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(60, 2, generator=g), torch.randn(60, 2, generator=g) + 1
    >>> mmd_test(x, y, n_permutations=200).p_value < 0.01
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from probgen.core.errors import DataError
from probgen.metrics.mmd import median_bandwidth
from probgen.metrics.prdc import as_feature_matrix

__all__ = ["mmd_test", "energy_test", "classifier_test", "TwoSampleTest"]

# Permutations evaluated at once: bounds memory at about this many x (n + m) floats.
_BATCH = 64


class TwoSampleTest(NamedTuple):
    """A test result: the statistic on the observed split and its p-value."""

    statistic: float
    p_value: float
    n_permutations: int


def _pair(
    x: Any, y: Any, features: Callable[[torch.Tensor], torch.Tensor] | None, minimum: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    x_features = as_feature_matrix(x, "x", features)
    y_features = as_feature_matrix(y, "y", features)
    if x_features.shape[1] != y_features.shape[1]:
        raise DataError(
            f"x has {x_features.shape[1]} features per example, y has {y_features.shape[1]}"
        )
    for name, values in (("x", x_features), ("y", y_features)):
        if values.shape[0] < minimum:
            raise DataError(f"{name} needs at least {minimum} examples, got {values.shape[0]}")
    return x_features, y_features


def _check_permutations(n_permutations: int) -> int:
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int):
        raise DataError(f"n_permutations must be an integer, got {n_permutations!r}")
    if n_permutations < 1:
        raise DataError(f"n_permutations must be at least 1, got {n_permutations}")
    return n_permutations


def _permutation_test(
    matrix: torch.Tensor,
    n: int,
    weights: tuple[float, float, float],
    n_permutations: int,
    seed: int | None,
) -> TwoSampleTest:
    """Statistic w_xx S_xx + w_yy S_yy + w_xy S_xy of a pairwise matrix with zero diagonal.

    S_xx, S_yy, S_xy sum `matrix` over pairs within x, within y and across; the first n rows of
    `matrix` are x. Permutations relabel the pooled rows.
    """
    total_rows = matrix.shape[0]
    row_sums = matrix.sum(0)
    grand_total = row_sums.sum()
    w_xx, w_yy, w_xy = weights

    def statistics(assign: torch.Tensor) -> torch.Tensor:
        # assign (p, N) holds 1 for the rows labelled x.
        s_xx = ((assign @ matrix) * assign).sum(1)
        s_xy = assign @ row_sums - s_xx
        s_yy = grand_total - s_xx - 2 * s_xy
        return w_xx * s_xx + w_yy * s_yy + w_xy * s_xy

    observed_assign = torch.zeros(1, total_rows, dtype=matrix.dtype)
    observed_assign[0, :n] = 1
    observed = statistics(observed_assign)[0]
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    exceed = 0
    for start in range(0, n_permutations, _BATCH):
        size = min(_BATCH, n_permutations - start)
        chosen = torch.rand(size, total_rows, generator=generator).argsort(1)[:, :n]
        assign = torch.zeros(size, total_rows, dtype=matrix.dtype).scatter_(1, chosen, 1.0)
        permuted = statistics(assign)
        # A relative tolerance: sums in a different order may differ in the last bits.
        exceed += int((permuted >= observed - 1e-12 * abs(float(observed))).sum())
    return TwoSampleTest(float(observed), (1 + exceed) / (1 + n_permutations), n_permutations)


def mmd_test(
    x: Any,
    y: Any,
    *,
    bandwidth: float | list[float] | None = None,
    n_permutations: int = 500,
    seed: int | None = 0,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TwoSampleTest:
    """MMD two-sample test with a permutation p-value.

    Args:
        x: first sample (n, ...) (flattened to vectors).
        y: second sample (m, ...).
        bandwidth: Gaussian kernel bandwidth h (or a list, kernels summed); default the median
            pairwise distance of the pooled sample (fixed across permutations).
        n_permutations: random relabellings of the pooled sample.
        seed: seed of the permutations.
        features: optional map from examples to features.

    Returns:
        `TwoSampleTest(statistic, p_value, n_permutations)`; the statistic is the unbiased
        squared MMD, as `probgen.metrics.mmd(x, y, bandwidth=...)`.
    """
    n_permutations = _check_permutations(n_permutations)
    x_values, y_values = _pair(x, y, features)
    if bandwidth is None:
        bandwidths = [median_bandwidth(x_values, y_values)]
    else:
        bandwidths = [float(b) for b in (bandwidth if isinstance(bandwidth, list) else [bandwidth])]
    if any(not b > 0 for b in bandwidths):
        raise DataError(f"bandwidth must be positive, got {bandwidth}")
    pooled = torch.cat([x_values, y_values])
    squared = torch.cdist(pooled, pooled).pow(2)
    kernel = sum(torch.exp(-squared / (2 * h * h)) for h in bandwidths)
    kernel.fill_diagonal_(0.0)
    n, m = x_values.shape[0], y_values.shape[0]
    weights = (1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -2.0 / (n * m))
    return _permutation_test(kernel, n, weights, n_permutations, seed)


def energy_test(
    x: Any,
    y: Any,
    *,
    n_permutations: int = 500,
    seed: int | None = 0,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TwoSampleTest:
    """Energy-distance two-sample test with a permutation p-value.

    The statistic is 2 mean|x_i - y_j| - mean|x_i - x_k| - mean|y_j - y_l|, the means over all
    pairs (i = k included), which in one dimension is the square of
    `scipy.stats.energy_distance`.

    Args:
        x: first sample (n, ...).
        y: second sample (m, ...).
        n_permutations: random relabellings of the pooled sample.
        seed: seed of the permutations.
        features: optional map from examples to features.
    """
    n_permutations = _check_permutations(n_permutations)
    x_values, y_values = _pair(x, y, features, minimum=1)
    pooled = torch.cat([x_values, y_values])
    distances = torch.cdist(pooled, pooled, compute_mode="donot_use_mm_for_euclid_dist")
    n, m = x_values.shape[0], y_values.shape[0]
    weights = (-1.0 / (n * n), -1.0 / (m * m), 2.0 / (n * m))
    return _permutation_test(distances, n, weights, n_permutations, seed)


class ClassifierTest(NamedTuple):
    """Held-out accuracy of a classifier telling x from y, and its binomial p-value."""

    accuracy: float
    p_value: float
    n_test: int


def classifier_test(
    x: Any,
    y: Any,
    *,
    classifier: str | Any = "knn",
    test_fraction: float = 0.5,
    seed: int | None = 0,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ClassifierTest:
    """Classifier two-sample test (C2ST).

    Both samples are cut to the size of the smaller (a random subset), so that chance accuracy
    is exactly 0.5; a stratified `test_fraction` of the pooled rows is held out.

    Args:
        x: first sample (n, ...).
        y: second sample (m, ...).
        classifier: ``"knn"`` (k nearest neighbours, k = sqrt of the training size),
            ``"logistic"`` (logistic regression), or any scikit-learn-style estimator with
            `fit(X, labels)` and `predict(X)` (cloned before fitting).
        test_fraction: share of the balanced sample held out to measure accuracy.
        seed: seed of the subsampling and the split.
        features: optional map from examples to features.

    Returns:
        `ClassifierTest(accuracy, p_value, n_test)`; p-value P(Binomial(n_test, 1/2) >=
        correct), small when the classifier tells the samples apart better than chance.
    """
    from scipy.stats import binom
    from sklearn.base import clone
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x_values, y_values = _pair(x, y, features, minimum=4)
    size = min(x_values.shape[0], y_values.shape[0])
    rng = np.random.default_rng(seed)
    x_rows = rng.permutation(x_values.shape[0])[:size]
    y_rows = rng.permutation(y_values.shape[0])[:size]
    pooled = torch.cat([x_values[x_rows], y_values[y_rows]]).numpy()
    labels = np.repeat([0, 1], size)
    train_x, test_x, train_y, test_y = train_test_split(
        pooled,
        labels,
        test_size=test_fraction,
        stratify=labels,
        random_state=None if seed is None else int(seed),
    )
    if isinstance(classifier, str):
        estimator = _named_classifier(classifier, len(train_y))
    else:
        if not (hasattr(classifier, "fit") and hasattr(classifier, "predict")):
            raise DataError("classifier must be 'knn', 'logistic' or an estimator with fit/predict")
        estimator = clone(classifier)
    estimator.fit(train_x, train_y)
    correct = int((np.asarray(estimator.predict(test_x)) == test_y).sum())
    n_test = len(test_y)
    return ClassifierTest(correct / n_test, float(binom.sf(correct - 1, n_test, 0.5)), n_test)


def _named_classifier(name: str, n_train: int) -> Any:
    if name == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=max(1, int(math.sqrt(n_train))) | 1)
    if name == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000)
    raise DataError(f"classifier must be 'knn', 'logistic' or an estimator, got {name!r}")
