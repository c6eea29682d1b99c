"""What every probgen anomaly detector shares: scikit-learn's outlier-detector habits.

`ThresholdedDetector` turns a per-example normality score (higher = more normal, as
scikit-learn's `score_samples`) into `decision_function` (score minus `offset_`) and `predict`
(+1 inlier, -1 outlier). `offset_` is set by `fit` from the training scores so that a
`contamination` fraction of the training examples falls below it. Scores come back as numpy
arrays, as scikit-learn's detectors return them, so `roc_auc_score` and friends take them
directly.

Example:
    >>> import numpy as np
    >>> from probgen.anomaly.base import contamination_offset
    >>> scores = np.array([5.0, 1.0, 4.0, 3.0, 2.0])
    >>> contamination_offset(scores, 0.2)  # one of five training scores lies below it
    1.5
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from probgen.core.data import as_tensor
from probgen.core.errors import DataError, NotFittedError

__all__ = [
    "ThresholdedDetector",
    "check_contamination",
    "contamination_offset",
    "as_examples",
]


def check_contamination(value: Any) -> float:
    """`value` as a float in (0, 0.5], else `DataError` naming `contamination`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise DataError(f"contamination must be a number in (0, 0.5], got {value!r}")
    value = float(value)
    if not (0.0 < value <= 0.5) or math.isnan(value):
        raise DataError(
            f"contamination must lie in (0, 0.5] (the expected fraction of outliers in the "
            f"training data), got {value!r}"
        )
    return value


def contamination_offset(scores: np.ndarray, contamination: float) -> float:
    """The threshold below which `round(contamination * n)` of the `n` training scores fall.

    It lies midway between the k-th and (k+1)-th smallest scores, so that exactly k training
    examples are flagged when the scores are distinct (scikit-learn's percentile can be off by
    one there). At least one example is flagged.

    Args:
        scores: the training scores (higher = more normal).
        contamination: fraction of training examples to call outliers, in (0, 0.5].

    Returns:
        The offset subtracted by `decision_function`.
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    if ordered.size < 2:
        raise DataError("X must hold at least 2 examples to set the contamination threshold")
    k = min(max(int(round(contamination * ordered.size)), 1), ordered.size - 1)
    return float(0.5 * (ordered[k - 1] + ordered[k]))


def as_examples(
    x: Any, name: str, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """`x` as a float tensor of examples (n, ...) with at least one feature dimension."""
    tensor = as_tensor(x, name, dtype=dtype, device=device)
    if tensor.dim() < 2:
        raise DataError(
            f"{name} has shape {tuple(tensor.shape)}; give a batch (n_examples, n_features) "
            "or (n_examples, *example_shape)"
        )
    return tensor


class ThresholdedDetector:
    """Mixin of the detectors: `decision_function`, `predict`, `fit_predict` from scores.

    A detector defines `_normality(x) -> torch.Tensor` (per example, higher = more normal) and
    `contamination`; its `fit` calls `_set_offset(training_scores)`.
    """

    contamination: float
    offset_: float | None = None
    #: examples scored at once (bounds memory on large test sets)
    scoring_batch_size: int = 1024
    _estimator_type = "outlier_detector"  # scikit-learn before 1.6 reads this

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: an outlier detector that checks its own input."""
        from sklearn.utils import Tags, TargetTags

        return Tags(
            estimator_type="outlier_detector",
            target_tags=TargetTags(required=False),
            no_validation=True,
        )

    def _normality(self, x: Any) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check_offset(self, method: str) -> float:
        if self.offset_ is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet; call fit(X) before {method}"
            )
        return float(self.offset_)

    def _set_offset(self, training_scores: np.ndarray) -> None:
        self.offset_ = contamination_offset(training_scores, self.contamination)

    def score_samples(self, X: Any) -> np.ndarray:
        """Normality score per example: higher means more normal (scikit-learn's convention).

        Args:
            X: examples (n, n_features) or (n, *example_shape).

        Returns:
            float64 array (n,).
        """
        self._check_offset("score_samples")
        return self._normality(X).detach().double().cpu().numpy()

    def decision_function(self, X: Any) -> np.ndarray:
        """`score_samples(X) - offset_`: negative for outliers, non-negative for inliers."""
        offset = self._check_offset("decision_function")
        return self.score_samples(X) - offset

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers and -1 for outliers (below the contamination threshold)."""
        return np.where(self.decision_function(X) < 0, -1, 1).astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None, **options: Any) -> np.ndarray:
        """`fit(X)` then `predict(X)`: -1 marks the training examples taken as outliers."""
        self.fit(X, **options)  # type: ignore[attr-defined]
        return self.predict(X)

    def set_contamination(self, contamination: float, X: Any) -> ThresholdedDetector:
        """Change `contamination` and reset `offset_` from the scores of `X`, without refitting.

        Args:
            contamination: the new fraction of outliers, in (0, 0.5].
            X: the training examples (or any reference sample of normal data).

        Returns:
            self.
        """
        self._check_offset("set_contamination")
        self.contamination = check_contamination(contamination)
        self._set_offset(self.score_samples(X))
        return self


def batched_scores(function: Any, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`function` applied to `x` in chunks of `batch_size` examples, concatenated, no grad."""
    with torch.no_grad():
        return torch.cat([function(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
