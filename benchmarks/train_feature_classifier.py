"""Train the in-repo feature classifiers whose weights ship in probgen/metrics/weights/.

Two small CNNs (`probgen.metrics.features.FeatureClassifier`), seeded and deterministic on a
given machine and thread count:

- "digits": scikit-learn's 8x8 digits scaled to [0, 1] (pixel / 16), trained on the 1,600
  train+valid rows of the digits recipes' split (`probgen.recipes._digits`, seed 0) and tested on
  their 197 test rows;
- "mnist": grey-level MNIST (`probgen.recipes._mnist.grey_mnist`), trained on its 8,000-image
  train split and tested on the 2,000 test images (needs ../shared/data).

Half of every training batch is binarised (pixel >= 0.5), and MNIST batches are shifted by up to
one pixel, so that the binarised-image recipes and slightly off-centre samples stay in the
classifiers' domain. Test accuracy is reported on grey and on binarised test images.

Usage:
    python benchmarks/train_feature_classifier.py [--only digits|mnist] [--quick]
        [--out-dir DIR] [--results PATH]

`--quick` trains one epoch and writes to /tmp (it never overwrites the shipped weights).
Writes probgen/metrics/weights/NAME.safetensors and benchmarks/results/feature_classifier.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.recipes._digits import SPLIT_BOUNDS  # noqa: E402
from probgen.recipes._mnist import grey_mnist  # noqa: E402
from probgen.recipes._shared_data import SharedDataMissing  # noqa: E402

from probgen.metrics.features import (  # noqa: E402
    WEIGHTS_DIR,
    FeatureClassifier,
    load_feature_classifier,
    save_feature_classifier,
)

SETTINGS = {
    "digits": {"epochs": 60, "batch_size": 64, "learning_rate": 2e-3, "weight_decay": 1e-4},
    "mnist": {"epochs": 15, "batch_size": 64, "learning_rate": 1e-3, "weight_decay": 1e-4},
}


def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.data))
    images = torch.as_tensor(digits.data[order] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    labels = torch.as_tensor(digits.target[order], dtype=torch.long)
    cut = SPLIT_BOUNDS["valid"][1]
    return images[:cut], labels[:cut], images[cut:], labels[cut:]


def mnist_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train_x, train_y = grey_mnist("train")
    test_x, test_y = grey_mnist("test")
    return train_x, train_y, test_x, test_y


def augment(x: torch.Tensor, shift: bool, generator: torch.Generator) -> torch.Tensor:
    """Binarise a random half of the batch; shift MNIST images by up to one pixel."""
    binarise = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(binarise[:, None, None, None], (x >= 0.5).to(x.dtype), x)
    if shift:
        dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=generator))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    return x


@torch.no_grad()
def accuracy(net: FeatureClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    return float((net.predict(x) == y).double().mean())


def train(name: str, epochs: int, seed: int = 0) -> tuple[FeatureClassifier, dict[str, Any]]:
    settings = SETTINGS[name]
    train_x, train_y, test_x, test_y = digits_data() if name == "digits" else mnist_data()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = FeatureClassifier(name, train_x.shape[-1])
    optimiser = torch.optim.Adam(
        net.parameters(), lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    start = time.perf_counter()
    history = []
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train_x), generator=generator)
        total = 0.0
        for first in range(0, len(order), settings["batch_size"]):
            batch = order[first : first + settings["batch_size"]]
            x = augment(train_x[batch], shift=name == "mnist", generator=generator)
            loss = F.cross_entropy(net(x), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        schedule.step()
        history.append({"epoch": epoch + 1, "loss": total / len(train_x)})
        print(f"{name} epoch {epoch + 1}/{epochs}: loss {total / len(train_x):.4f}", flush=True)
    seconds = time.perf_counter() - start
    net.eval()
    report = {
        "n_train": len(train_x),
        "n_test": len(test_x),
        "epochs": epochs,
        "seed": seed,
        **settings,
        "train_seconds": round(seconds, 1),
        "test_accuracy": accuracy(net, test_x, test_y),
        "test_accuracy_binarised": accuracy(net, (test_x >= 0.5).float(), test_y),
        "train_accuracy": accuracy(net, train_x, train_y),
        "parameters": sum(p.numel() for p in net.parameters()),
        "final_loss": history[-1]["loss"],
    }
    return net, report


def tensors_sha256(path: Path) -> str:
    """Hash of the weights themselves (the file's header order varies from run to run)."""
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for key, value in sorted(load_file(str(path)).items()):
        digest.update(key.encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(SETTINGS), action="append")
    parser.add_argument("--quick", action="store_true", help="one epoch, written under /tmp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=None)
    arguments = parser.parse_args()
    out_dir = arguments.out_dir or (
        Path("/tmp/probgen_feature_classifier") if arguments.quick else WEIGHTS_DIR
    )
    results_path = arguments.results or (
        out_dir / "feature_classifier.json"
        if arguments.quick
        else ROOT / "benchmarks" / "results" / "feature_classifier.json"
    )
    results: dict[str, Any] = {}
    if results_path.exists():
        results = json.loads(results_path.read_text())
    results["machine"] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    for name in arguments.only or sorted(SETTINGS):
        epochs = 1 if arguments.quick else SETTINGS[name]["epochs"]
        try:
            net, report = train(name, epochs, seed=arguments.seed)
        except SharedDataMissing as error:
            print(f"{name}: skipped ({error})")
            results[name] = {"skipped": str(error)}
            continue
        path = save_feature_classifier(
            net, out_dir / f"{name}.safetensors", test_accuracy=report["test_accuracy"]
        )
        reloaded = load_feature_classifier(path=path)
        _, _, test_x, test_y = digits_data() if name == "digits" else mnist_data()
        assert accuracy(reloaded, test_x, test_y) == report["test_accuracy"]
        report["weights"] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        report["weights_bytes"] = path.stat().st_size
        report["tensors_sha256"] = tensors_sha256(path)
        results[name] = report
        print(
            f"{name}: test accuracy {report['test_accuracy']:.4f} "
            f"(binarised {report['test_accuracy_binarised']:.4f}) on {report['n_test']} images, "
            f"{report['parameters']} parameters, {report['weights_bytes']} bytes, "
            f"{report['train_seconds']} s"
        )
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {results_path}")


if __name__ == "__main__":
    main()
