"""VAE-GAN vs VAE vs DCGAN on grey-level MNIST at one CPU budget, on in-repo classifier features.

The VAE-GAN (`probgen.gan.vaegan.VAEGAN`, the `vaegan_mnist` recipe: DCGAN-style encoder, decoder
and discriminator, reconstruction on the discriminator's last hidden layer), a convolutional
Gaussian VAE (`probgen.VAE`, samples = decoder means, as in `benchmarks/gan_mnist.py`) and DCGAN
(`probgen.gan.GAN`, the settings of `benchmarks/gan_mnist.py`) each train for the same CPU seconds
of this process (``--budget``; ``--clock wall``: wall-clock seconds) on the 8,000 training images
of `probgen.recipes._mnist`, then draw as many images as the held-out set has (2,000). Figures, as
in `benchmarks/gan_mnist.py`: FID and KID on the penultimate features of the in-repo MNIST
classifier (`probgen.metrics.load_feature_classifier("mnist")`; not comparable with Inception-based
figures), precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) with
k=5 on the same features. For the two autoencoders also their reconstructions of the held-out
images (decoded posterior means): pixel MSE, the classifier's accuracy on them (label kept) and
their FID. The row "train images" scores 2,000 real training images against the test images: the
floor a perfect model would reach.

Training runs in chunks of ``--chunk-steps`` optimiser steps (one step = one minibatch, all of a
model's parameter groups) through `fit(..., checkpoint_dir=..., resume=True, max_steps=...)`,
so each model stops at the first chunk boundary past its budget (the overshoot is recorded).
The machines are shared: the JSON records the load average at the start and the end.

Usage:
    python benchmarks/vaegan_mnist.py [--quick] [--budget S] [--only NAME ...]
        [--gamma G] [--threads N] [--out PATH]

``--quick`` runs on scikit-learn's 8x8 digits for a few seconds per model (no shared data
needed) and writes to /tmp/vaegan_mnist_quick.json unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from _load import apply_threads
from gan_mnist import CLOCKS, _jsonable, sample_metrics, train_for

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.recipes import vaegan_mnist  # noqa: E402
from probgen.recipes._gan_images import SOURCES, digit_images  # noqa: E402

from probgen.deep.vae import VAE  # noqa: E402
from probgen.gan.model import GAN  # noqa: E402
from probgen.metrics import frechet_distance_from_samples, load_feature_classifier  # noqa: E402

MODELS = ("vaegan", "vae", "dcgan")
RESULTS = ROOT / "benchmarks" / "results" / "vaegan_mnist.json"


def build(name: str, shape: tuple[int, int, int], quick: bool, gamma: float | None) -> Any:
    """The model `name` for images of `shape` (smaller networks in quick mode)."""
    if name == "vaegan":
        overrides: dict[str, Any] = {"data_shape": shape}
        if quick:
            overrides.update(width=8, latent_dim=8)
        if gamma is not None:
            overrides["gamma"] = gamma
        return vaegan_mnist.build(**overrides)
    if name == "vae":  # benchmarks/gan_mnist.py's VAE
        return VAE(shape, latent_dim=16, likelihood="gaussian", encoder="conv",
                   hidden_dims=(256,), batch_size=64, learning_rate=1e-3, seed=0)
    if name == "dcgan":  # benchmarks/gan_mnist.py's DCGAN
        return GAN(shape, architecture="dcgan", latent_dim=64, width=16 if quick else 64,
                   loss="non_saturating", betas=(0.5, 0.999), ema=0.999, batch_size=64, seed=0)
    raise ValueError(name)


def draw(name: str, model: Any, n: int) -> torch.Tensor:
    if name == "vae":
        return model.sample(n, seed=0, mean=True).clamp(0.0, 1.0)
    return model.sample(n, seed=0)


def reconstruction_metrics(model: Any, test: torch.Tensor, labels: torch.Tensor,
                           classifier: Any) -> dict[str, float]:
    """Decoded posterior means of the held-out images: pixel MSE, label kept, FID."""
    with torch.no_grad():
        rebuilt = torch.cat([model.reconstruct(chunk) for chunk in test.split(500)])
        rebuilt = rebuilt.reshape(test.shape).clamp(0.0, 1.0)
        accuracy = float((classifier.predict(rebuilt) == labels).float().mean())
    return {
        "pixel_mse": float((rebuilt - test).square().mean()),
        "label_accuracy": accuracy,
        "fid": float(frechet_distance_from_samples(test, rebuilt, features=classifier.features)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float, default=None,
                        help="training seconds per model (default 300; quick 4)")
    parser.add_argument("--chunk-steps", type=int, default=None,
                        help="optimiser steps between budget checks (default 20; quick 2)")
    parser.add_argument("--only", nargs="+", default=None, choices=MODELS + ("train_images",))
    parser.add_argument("--gamma", type=float, default=None,
                        help="the VAE-GAN's gamma (default: the recipe's)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu",
                        help="what the budget counts: this process's CPU seconds (default) "
                             "or wall-clock seconds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    apply_threads(args.threads)
    quick = args.quick
    source = "digits" if quick else "mnist"
    budget = args.budget if args.budget is not None else (4.0 if quick else 300.0)
    chunk = args.chunk_steps or (2 if quick else 20)
    out = args.out or (
        Path(tempfile.gettempdir()) / "vaegan_mnist_quick.json" if quick else RESULTS
    )
    chosen = args.only or list(MODELS) + ["train_images"]

    shape = SOURCES[source]
    train, _ = digit_images(source, "train")
    test, test_labels = digit_images(source, "test")
    classifier = load_feature_classifier(source)
    features = classifier.features
    n_eval = test.shape[0]
    results: dict[str, Any] = {}
    if out.exists() and args.only:
        results = json.loads(out.read_text())  # rerun some rows, keep the others
    results.update({
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python"] + sys.argv),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "source": source,
        "n_train": int(train.shape[0]),
        "n_eval": int(n_eval),
        "budget_seconds_per_model": budget,
        "budget_clock": args.clock,
        "features": f"load_feature_classifier({source!r}).features (penultimate layer)",
        "note": "machines shared with other jobs: see load averages; FID/KID on in-repo "
                "classifier features, not comparable with Inception-based figures",
    })
    models = results.setdefault("models", {})
    for name in chosen:
        print(f"== {name}", flush=True)
        try:
            if name == "train_images":
                real = digit_images(source, "train", n=n_eval, seed=1)[0]
                models[name] = {"metrics": sample_metrics(test, real, features)}
                continue
            model = build(name, shape, quick, args.gamma)
            training = train_for(model, train, budget, chunk, args.clock)
            row: dict[str, Any] = {
                "class": type(model).__name__,
                "settings": _jsonable(model.get_config()),
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "training": training,
                "metrics": sample_metrics(test, draw(name, model, n_eval), features),
            }
            if name in ("vaegan", "vae"):
                row["reconstruction"] = reconstruction_metrics(
                    model, test, test_labels, classifier
                )
            models[name] = row
        except Exception as error:  # record and go on: one failure should not lose the rest
            traceback.print_exc()
            models[name] = {"error": repr(error)}
        finally:
            print(json.dumps(models.get(name), indent=1, default=str)[:1500], flush=True)
    results["load_average_end"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_jsonable(results), indent=1, default=str) + "\n")
    print(f"wrote {out}")
    print(f"{'model':<14}{'FID':>9}{'KID':>9}{'prec':>7}{'rec':>7}{'dens':>7}{'cov':>7}"
          f"{'recFID':>8}{'recAcc':>8}")
    for name, row in models.items():
        m, r = row.get("metrics"), row.get("reconstruction", {})
        if m:
            extra = f"{r['fid']:8.3f}{r['label_accuracy']:8.3f}" if r else ""
            print(f"{name:<14}{m['fid']:9.3f}{m['kid']:9.4f}{m['precision']:7.3f}"
                  f"{m['recall']:7.3f}{m['density']:7.3f}{m['coverage']:7.3f}{extra}")


if __name__ == "__main__":
    main()
