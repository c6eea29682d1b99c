"""Anomaly detection with scikit-learn's habits: density, reconstruction and one-class detectors.

Every detector has `fit(X)`, `score_samples` (higher = more normal), `decision_function`
(score minus the threshold `offset_`), `predict` (+1 inlier, -1 outlier) and `fit_predict`;
`contamination` is the fraction of the training examples below the threshold.

- `DensityDetector(model)`: any probgen density (GaussianMixture, Flow, RBM, MADE, ...) scores
  by its `log_prob`, labelled with the model's `log_prob_kind` (`score_kind`).
- `VAEDetector(vae)`: a probgen VAE's ELBO (a lower bound) or IWAE bound (an estimate).
- `AutoencoderDetector`: reconstruction error of an MLP autoencoder.
- `DeepSVDD`: one-class Deep SVDD (Ruff et al., 2018), one-class or soft-boundary objective.

The package is a model family: it imports only the engines and core, and takes other
families' models as objects, so any model with `log_prob` and `log_prob_kind` plugs in.

Example:
    >>> import torch
    >>> from probgen.anomaly import DensityDetector
    >>> from probgen.mixture import GaussianMixture
    >>> x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    >>> DensityDetector(GaussianMixture(1, seed=0)).fit(x).predict(x).tolist().count(-1)
    10
"""

from probgen.anomaly.autoencoder import AutoencoderDetector
from probgen.anomaly.base import ThresholdedDetector
from probgen.anomaly.density import DensityDetector, VAEDetector
from probgen.anomaly.svdd import DeepSVDD

__all__ = [
    "AutoencoderDetector",
    "DeepSVDD",
    "DensityDetector",
    "ThresholdedDetector",
    "VAEDetector",
]
