"""A synthetic contamination study: probgen's anomaly detectors on unlabelled, polluted data.

Inliers are a mixture of three elongated Gaussian blobs in 8 dimensions; a fraction of the
training set (1%, 5%, 10%, 20%) is replaced by outliers drawn uniformly from a box around
them. Each detector is fitted on the polluted data without labels, with `contamination` set to
the true fraction, and judged on a clean test set with the same fraction of outliers: ROC AUC,
and the precision of `predict` (outliers flagged that are outliers). IsolationForest from
scikit-learn runs beside them. With `--plot PATH` it draws the test score distributions
(inliers vs outliers) per detector at 10% contamination.

Run: python examples/anomaly_contamination.py [--smoke] [--plot scores.png]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import precision_score, roc_auc_score

from probgen.anomaly import AutoencoderDetector, DeepSVDD, DensityDetector
from probgen.mixture import GaussianMixture


def polluted(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(points, is_outlier): three Gaussian blobs plus `fraction` uniform outliers."""
    rng = np.random.default_rng(seed)
    centres = np.array([[3.0] * 8, [-3.0] * 8, [3.0, -3.0] * 4])
    n_out = int(round(fraction * n))
    labels = rng.integers(0, 3, n - n_out)
    stretch = np.linspace(0.5, 1.5, 8)
    inliers = centres[labels] + rng.standard_normal((n - n_out, 8)) * stretch
    outliers = rng.uniform(-5.0, 5.0, (n_out, 8))
    points = np.concatenate([inliers, outliers]).astype(np.float32)
    return points, np.r_[np.zeros(n - n_out, bool), np.ones(n_out, bool)]


def detectors(fraction: float, epochs: int) -> dict:
    return {
        "gaussian mixture": DensityDetector(GaussianMixture(3, seed=0), contamination=fraction),
        "autoencoder": AutoencoderDetector(hidden_dims=(32,), code_dim=3, n_epochs=epochs,
                                           learning_rate=3e-3, contamination=fraction, seed=0),
        "deep svdd": DeepSVDD(hidden_dims=(32,), rep_dim=8, n_epochs=epochs,
                              learning_rate=1e-3, contamination=fraction, seed=0),
        "isolation forest": IsolationForest(contamination=fraction, random_state=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--plot", default=None, help="write the score histograms to this PNG")
    arguments = parser.parse_args()
    n, epochs = (400, 5) if arguments.smoke else (2000, 60)
    fractions = [0.1] if arguments.smoke else [0.01, 0.05, 0.1, 0.2]
    torch.set_num_threads(1)
    shown = {}
    print(f"{'fraction':>8}  {'detector':17s} {'AUC':>6}  {'precision':>9}")
    for fraction in fractions:
        train, _ = polluted(n, fraction, seed=0)
        test, truth = polluted(n, fraction, seed=1)
        for name, detector in detectors(fraction, epochs).items():
            data = train if name == "isolation forest" else torch.from_numpy(train)
            points = test if name == "isolation forest" else torch.from_numpy(test)
            detector.fit(data)
            scores = np.asarray(detector.score_samples(points))
            flagged = np.asarray(detector.predict(points)) == -1
            auc = roc_auc_score(truth, -scores)
            precision = precision_score(truth, flagged, zero_division=0.0)
            print(f"{fraction:8.2f}  {name:17s} {auc:6.3f}  {precision:9.3f}")
            if fraction == 0.1:
                shown[name] = (scores, truth)
    if arguments.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3))
        for axis, (name, (scores, truth)) in zip(axes, shown.items()):
            bins = np.linspace(scores.min(), scores.max(), 40)
            axis.hist(scores[~truth], bins, alpha=0.6, label="inliers", density=True)
            axis.hist(scores[truth], bins, alpha=0.6, label="outliers", density=True)
            axis.set_title(f"{name} (10% outliers)")
            axis.set_xlabel("score_samples (higher = more normal)")
        axes[0].legend()
        figure.tight_layout()
        figure.savefig(arguments.plot, dpi=90)
        print(f"wrote {arguments.plot}")


if __name__ == "__main__":
    main()
