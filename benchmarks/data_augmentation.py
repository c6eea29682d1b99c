"""Do generated samples help a classifier trained on few labels? (issue 12, data augmentation)

Protocol. scikit-learn's 8x8 digits (1,797 images, pixel values scaled to [0, 1]) are split
once into a pool of 1,000 training images and 797 test images. For each seed and each
labelled-set size (20 and 50 images per class), the labelled set is drawn from the pool; three
class-conditional generators are fitted on that labelled set only (the premise: no more data
exists): a conditional GAN (`probgen.GAN(n_classes=10)`), a conditional VAE
(`probgen.VAE(n_classes=10)`) and a conditional flow (`probgen.Flow(context_dim=10)`, a MAF
given the one-hot label). Each generator draws `--synthetic` images per class, clipped to
[0, 1]. A classifier (scikit-learn's `LogisticRegression`, and an `MLPClassifier`) is trained
on the real labelled images alone and on real + synthetic, and scored on the 797 test images.
The table reports test accuracy, mean over seeds with a 95 % t-interval, and the gain of each
augmentation over the real-only baseline (paired by seed, with its own t-interval).

The gain is reported as measured, including when it is zero or negative. Draws that are not
finite (a flow that diverged on a tiny labelled set) are dropped and counted per run.

Usage:
    python benchmarks/data_augmentation.py [--quick] [--seeds N] [--synthetic M] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.deep.flows import Flow  # noqa: E402
from probgen.deep.vae import VAE  # noqa: E402
from probgen.gan.model import GAN  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "data_augmentation.json"
N_CLASSES = 10
# Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pool images, pool labels, test images, test labels): a fixed split of the digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.data / 16.0).astype(np.float32)
    order = np.random.default_rng(12345).permutation(len(images))
    pool, test = order[:1000], order[1000:]
    return images[pool], bunch.target[pool], images[test], bunch.target[test]


def labelled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` examples of each class, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in range(N_CLASSES)]
    return np.concatenate(picked)


def generators(quick: bool, seed: int) -> dict[str, Any]:
    """The three class-conditional generators with their fitting settings."""
    epochs = 0.1 if quick else 1.0
    return {
        "gan": GAN(64, latent_dim=16, hidden_dims=(128, 128), n_classes=N_CLASSES,
                   n_epochs=max(2, int(300 * epochs)), batch_size=50, ema=0.99,
                   generator_learning_rate=1e-3, discriminator_learning_rate=1e-3, seed=seed),
        "vae": VAE(64, latent_dim=8, hidden_dims=(128, 128), n_classes=N_CLASSES,
                   likelihood="gaussian", n_epochs=max(2, int(300 * epochs)), batch_size=50,
                   seed=seed),
        "flow": Flow(64, kind="maf", n_layers=4, hidden_dims=(128,), context_dim=N_CLASSES,
                     n_epochs=max(2, int(200 * epochs)), batch_size=50, learning_rate=1e-3,
                     seed=seed),
    }


def synthesise(name: str, model: Any, x: torch.Tensor, y: torch.Tensor, per_class: int,
               seed: int) -> torch.Tensor:
    """Fit `model` on (x, y) and draw `per_class` images of each class, clipped to [0, 1]."""
    labels = torch.arange(N_CLASSES).repeat_interleave(per_class)
    if name == "flow":
        # Dequantisation noise keeps the flow off the many exactly-zero pixels.
        noisy = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        model.fit(noisy, context=torch.nn.functional.one_hot(y, N_CLASSES).float())
        draws = model.sample(len(labels), seed=seed,
                             context=torch.nn.functional.one_hot(labels, N_CLASSES).float())
    elif name == "vae":
        model.fit(x, labels=y)
        draws = model.sample(len(labels), seed=seed, labels=labels, mean=True)
    else:
        model.fit(x, labels=y)
        draws = model.sample(len(labels), seed=seed, labels=labels)
    draws = draws.reshape(len(labels), -1).detach()
    # A diverged draw (NaN) is dropped, not clipped: it would carry no image at all.
    finite = torch.isfinite(draws).all(1)
    return draws[finite].clamp(0, 1), labels[finite]


def classifiers(seed: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    return {
        "logistic": LogisticRegression(max_iter=3000, C=1.0),
        "mlp": MLPClassifier((128,), max_iter=1000, random_state=seed),
    }


def accuracy(classifier: Any, x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
             y_test: np.ndarray) -> float:
    classifier.fit(x, y)
    return float((classifier.predict(x_test) == y_test).mean())


def interval(values: list[float]) -> dict[str, float]:
    """Mean and 95 % t-interval half-width of `values`."""
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if len(array) < 2:
        return {"mean": mean, "half_width": float("nan"), "n": len(array)}
    t = _T975[min(len(array) - 2, len(_T975) - 1)]
    return {"mean": mean, "half_width": float(t * array.std(ddof=1) / math.sqrt(len(array))),
            "n": len(array)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a smoke test)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--synthetic", type=int, default=100, help="synthetic images per class")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.sizes, args.synthetic = 2, [20], 20
    out = args.out or (Path("/tmp/data_augmentation_quick.json") if args.quick else RESULTS)

    pool_x, pool_y, test_x, test_y = digits_split()
    runs: list[dict[str, Any]] = []
    started = time.time()
    for size in args.sizes:
        for seed in range(args.seeds):
            chosen = labelled_subset(pool_y, size, seed)
            x, y = pool_x[chosen], pool_y[chosen]
            row: dict[str, Any] = {"per_class": size, "seed": seed, "accuracy": {},
                                   "fit_seconds": {}}
            for clf_name, clf in classifiers(seed).items():
                row["accuracy"][f"real/{clf_name}"] = accuracy(clf, x, y, test_x, test_y)
            for name, model in generators(args.quick, seed).items():
                tick = time.time()
                fake_x, fake_y = synthesise(name, model, torch.from_numpy(x),
                                            torch.from_numpy(y).long(), args.synthetic, seed)
                row["fit_seconds"][name] = time.time() - tick
                row.setdefault("dropped_non_finite", {})[name] = (
                    args.synthetic * N_CLASSES - len(fake_y))
                both_x = np.concatenate([x, fake_x.numpy()])
                both_y = np.concatenate([y, fake_y.numpy()])
                for clf_name, clf in classifiers(seed).items():
                    row["accuracy"][f"{name}/{clf_name}"] = accuracy(
                        clf, both_x, both_y, test_x, test_y
                    )
            runs.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                              for k, v in row["accuracy"].items()}), f"size={size} seed={seed}",
                  flush=True)

    summary: dict[str, Any] = {}
    for size in args.sizes:
        rows = [r for r in runs if r["per_class"] == size]
        table: dict[str, Any] = {}
        for key in rows[0]["accuracy"]:
            source, clf_name = key.split("/")
            values = [r["accuracy"][key] for r in rows]
            entry = {"accuracy": interval(values)}
            if source != "real":
                gains = [r["accuracy"][key] - r["accuracy"][f"real/{clf_name}"] for r in rows]
                entry["gain_over_real"] = interval(gains)
            table[key] = entry
        summary[str(size)] = table

    result = {
        "benchmark": "data_augmentation",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "protocol": __doc__.split("Usage:")[0].strip(),
        "settings": {"seeds": args.seeds, "sizes": args.sizes,
                     "synthetic_per_class": args.synthetic, "quick": args.quick,
                     "test_images": len(test_y)},
        "summary": summary,
        "runs": runs,
        "seconds": time.time() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for size, table in summary.items():
        print(f"\n{size} labelled images per class (test accuracy, mean ± 95% CI over seeds)")
        for key, entry in table.items():
            acc = entry["accuracy"]
            gain = entry.get("gain_over_real")
            extra = "" if gain is None else (
                f"   gain {gain['mean']:+.3f} ± {gain['half_width']:.3f}")
            print(f"  {key:<16} {acc['mean']:.3f} ± {acc['half_width']:.3f}{extra}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
