"""Tabular anomaly detection on binary DEBD sets: density detectors beside an autoencoder.

Data: the DEBD sets nltcs (16 variables), mushrooms (112) and dna (180) from
`../shared/data/debd` (the example says so and stops when they are absent). Each detector is
fitted on the clean training split and scores a test set of `--n-test` rows of the test split
in which a fraction `--fraction` (10%) are anomalies made by one of two protocols:

- `shuffled`: rows of other test examples whose columns are permuted independently across the
  rows. Every variable keeps its marginal frequency and only the dependence between variables
  is broken, so a detector must model the joint distribution to find them.
- `flipped`: test rows with a random contiguous block of 10% of their bits (at least two)
  flipped: local corruption of otherwise real rows.

Detectors: `DensityDetector` around MADE (exact log-likelihood), an RBM (exact: its partition
function is summed over the hidden units), a diagonal Gaussian mixture (a mixture of
independent features, fitted by EM on the bits; its density is on the reals, which still ranks
rows), and `AutoencoderDetector` (reconstruction error). For each set, protocol and detector it
prints the ROC AUC (anomalies as the positive class, `-score_samples` as the score) and writes
a PNG of the score distributions of inliers and anomalies (`--plot`).

Run: python examples/anomaly_debd.py [--smoke] [--sets nltcs mushrooms dna] [--n-test 1000]
    [--plot anomaly_debd.png]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from probgen.recipes._shared_data import SharedDataMissing, debd
from sklearn.metrics import roc_auc_score

from probgen.anomaly import AutoencoderDetector, DensityDetector
from probgen.boltzmann import RBM
from probgen.deep.autoregressive import MADE
from probgen.mixture import GaussianMixture

SETS = ("nltcs", "mushrooms", "dna")
PROTOCOLS = ("shuffled", "flipped")


def contaminated(
    test: np.ndarray, n: int, fraction: float, protocol: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, is_anomaly): n rows of `test`, `fraction` of them anomalies by `protocol`."""
    rng = np.random.default_rng(seed)
    n = min(n, len(test) // 2)
    n_anomalies = max(1, int(round(fraction * n)))
    order = rng.permutation(len(test))
    inliers = test[order[: n - n_anomalies]]
    # Anomalies come from other test rows than the inliers.
    source = test[order[n - n_anomalies : n - n_anomalies + max(n_anomalies, 50)]].copy()
    if protocol == "shuffled":
        for column in range(source.shape[1]):
            source[:, column] = rng.permutation(source[:, column])
        anomalies = source[:n_anomalies]
    elif protocol == "flipped":
        anomalies = source[:n_anomalies]
        width = max(2, int(round(0.1 * test.shape[1])))
        for row in anomalies:
            start = rng.integers(0, test.shape[1] - width + 1)
            row[start : start + width] = 1 - row[start : start + width]
    else:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    rows = np.concatenate([inliers, anomalies]).astype(np.float32)
    return rows, np.r_[np.zeros(len(inliers), bool), np.ones(len(anomalies), bool)]


def detectors(n_features: int, smoke: bool, fraction: float) -> dict[str, Any]:
    """The detectors, unfitted: three densities and an autoencoder."""
    epochs = 4 if smoke else 30
    return {
        "MADE": DensityDetector(
            MADE(n_features, hidden_dims=[32 if smoke else 500], likelihood="bernoulli",
                 n_epochs=epochs, batch_size=100, learning_rate=3e-3 if smoke else 1e-3,
                 seed=0),
            contamination=fraction,
        ),
        "RBM": DensityDetector(
            RBM(n_features, 4 if smoke else 16, method="pcd", learning_rate=0.05,
                batch_size=16, n_epochs=1 if smoke else 20, seed=0),
            contamination=fraction,
        ),
        "Gaussian mixture": DensityDetector(
            GaussianMixture(2 if smoke else 10, covariance="diag", reg_covar=1e-2,
                            max_iter=100 if smoke else 200, seed=0),
            contamination=fraction,
        ),
        "autoencoder": AutoencoderDetector(
            hidden_dims=(64,), code_dim=max(2, min(16, n_features // 4)), n_epochs=epochs,
            learning_rate=3e-3, contamination=fraction, seed=0,
        ),
    }


def run(
    sets: tuple[str, ...], n_train: int | None, n_test: int, fraction: float, smoke: bool
) -> dict[str, dict[str, dict[str, Any]]]:
    """AUC and test scores per set, protocol and detector: {set: {protocol: {detector: ...}}}."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name in sets:
        train, test = debd(name, "train"), debd(name, "test")
        if n_train is not None:
            train = train[:n_train]
        train_tensor = torch.as_tensor(train, dtype=torch.float32)
        started = time.perf_counter()
        fitted = detectors(train.shape[1], smoke, fraction)
        for detector in fitted.values():
            detector.fit(train_tensor)
        print(f"{name}: {train.shape[0]} training rows of {train.shape[1]} bits, four "
              f"detectors fitted in {time.perf_counter() - started:.1f} s")
        results[name] = {}
        for protocol in PROTOCOLS:
            rows, truth = contaminated(test, n_test, fraction, protocol, seed=0)
            results[name][protocol] = {}
            for label, detector in fitted.items():
                scores = np.asarray(detector.score_samples(torch.from_numpy(rows)))
                results[name][protocol][label] = {
                    "auc": float(roc_auc_score(truth, -scores)),
                    "scores": scores,
                    "truth": truth,
                    "kind": getattr(detector, "score_kind", "reconstruction error"),
                }
    return results


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    labels = list(next(iter(next(iter(results.values())).values())))
    print("\nROC AUC (anomalies positive; 0.5 is chance)")
    print(f"{'set':10s} {'protocol':9s}" + "".join(f"{label:>18s}" for label in labels))
    for name, by_protocol in results.items():
        for protocol, by_detector in by_protocol.items():
            cells = "".join(f"{by_detector[label]['auc']:18.3f}" for label in labels)
            print(f"{name:10s} {protocol:9s}{cells}")
    kinds = next(iter(next(iter(results.values())).values()))
    print("scores: " + ", ".join(f"{label} {entry['kind']}" for label, entry in kinds.items()))


def plot(results: dict[str, dict[str, dict[str, Any]]], protocol: str, path: str) -> None:
    """Histograms of the test scores, inliers against anomalies: a row per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(next(iter(results.values()))[protocol])
    figure, axes = plt.subplots(
        len(results), len(labels), figsize=(3.6 * len(labels), 2.6 * len(results)),
        squeeze=False,
    )
    for row, (name, by_protocol) in enumerate(results.items()):
        for column, label in enumerate(labels):
            entry, axis = by_protocol[protocol][label], axes[row][column]
            scores, truth = entry["scores"], entry["truth"]
            bins = np.linspace(scores.min(), scores.max(), 40)
            axis.hist(scores[~truth], bins, alpha=0.6, density=True, label="inliers")
            axis.hist(scores[truth], bins, alpha=0.6, density=True, label="anomalies")
            axis.set_title(f"{name}: {label} (AUC {entry['auc']:.2f})", fontsize=9)
            axis.tick_params(labelsize=7)
            if row == len(results) - 1:
                axis.set_xlabel("score_samples (higher = more normal)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"test scores, {protocol} anomalies", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=None)
    parser.add_argument("--n-test", type=int, default=None, help="test rows (default 1000)")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of anomalies")
    parser.add_argument("--plot", default=None, help="PNG of the score distributions")
    parser.add_argument("--plot-protocol", choices=PROTOCOLS, default="shuffled")
    arguments = parser.parse_args()
    torch.manual_seed(0)
    sets = tuple(arguments.sets or (("nltcs",) if arguments.smoke else SETS))
    n_test = arguments.n_test or (400 if arguments.smoke else 1000)
    try:
        results = run(sets, 1000 if arguments.smoke else None, n_test, arguments.fraction,
                      arguments.smoke)
    except SharedDataMissing as error:
        print(f"DEBD data not found, nothing to do: {error}")
        return
    print_table(results)
    if arguments.plot:
        plot(results, arguments.plot_protocol, arguments.plot)


if __name__ == "__main__":
    main()
