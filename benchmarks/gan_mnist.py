"""Implicit models on grey-level MNIST at one CPU budget, judged on in-repo classifier features.

1. Sample quality: DCGAN and WGAN-GP (`probgen.gan.GAN`, DCGAN networks), the style-based
   generator (`probgen.StyleGAN`, the `stylegan_mnist` recipe) and a convolutional Gaussian
   VAE (`probgen.VAE`, samples = decoder means) each train for the same CPU seconds of this
   process (``--budget``; ``--clock wall`` counts wall-clock seconds instead) on the 8,000
   training images of `probgen.recipes._mnist`, then draw as many
   images as the held-out set has (2,000). Figures: FID and KID on the penultimate features of
   the in-repo MNIST classifier (`probgen.metrics.load_feature_classifier("mnist")`; not
   comparable with Inception-based figures), precision/recall (Kynkäänniemi et al. 2019) and
   density/coverage (Naeem et al. 2020) with k=5 on the same features. The row "train images"
   scores 2,000 real training images against the test images: the floor a perfect model
   would reach.
2. CycleGAN (`cyclegan_mnist` recipe): digits <-> colour-inverted digits, trained unpaired for
   ``--cyclegan-budget`` seconds; on the held-out images the pixel error (MAE, RMSE) of each
   translation against the true counterpart, and label preservation: the classifier's accuracy
   on the inverse transform of A -> B translations and on B -> A translations (target >= 90 %),
   beside its accuracy on the real test images.

Training runs in chunks of ``--chunk-steps`` optimiser steps through `fit(...,
checkpoint_dir=..., resume=True, max_steps=...)`, so each model stops at the first chunk
boundary past its budget (the overshoot is recorded). Torch's thread count is left at its
default (``--threads`` overrides it); the machines are shared: the JSON records the load
average at the start and the end.

Usage:
    python benchmarks/gan_mnist.py [--quick] [--budget S] [--cyclegan-budget S]
        [--only NAME ...] [--threads N] [--out PATH]

``--quick`` runs on scikit-learn's 8x8 digits for a few seconds per model (no shared data
needed) and writes to /tmp/gan_mnist_quick.json unless ``--out`` is given.
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.recipes import cyclegan_mnist, stylegan_mnist  # noqa: E402
from probgen.recipes._gan_images import SOURCES, digit_images  # noqa: E402

from probgen.deep.vae import VAE  # noqa: E402
from probgen.gan.model import GAN  # noqa: E402
from probgen.metrics import (  # noqa: E402
    frechet_distance_from_samples,
    kernel_distance,
    load_feature_classifier,
    precision_recall_density_coverage,
)

MODELS = ("dcgan", "wgan_gp", "stylegan", "vae")
RESULTS = ROOT / "benchmarks" / "results" / "gan_mnist.json"


def build(name: str, shape: tuple[int, int, int], quick: bool) -> Any:
    """The model `name` for images of `shape` (smaller networks in quick mode)."""
    width = 16 if quick else 64
    if name == "dcgan":
        return GAN(shape, architecture="dcgan", latent_dim=64, width=width, loss="non_saturating",
                   betas=(0.5, 0.999), ema=0.999, batch_size=64, seed=0)
    if name == "wgan_gp":
        # Gulrajani et al.'s critic schedule (5 critic steps per generator step, betas
        # (0.5, 0.9)); at a fixed budget it makes a fifth as many generator updates.
        return GAN(shape, architecture="dcgan", latent_dim=64, width=width, loss="wgan_gp",
                   n_critic=5, betas=(0.5, 0.9), ema=0.999, batch_size=64, seed=0)
    if name == "stylegan":
        if quick:
            return stylegan_mnist.build(
                image_shape=shape, latent_dim=16, style_dim=16, channels=16,
                discriminator_channels=16, n_upsamplings=1,
            )
        return stylegan_mnist.build(image_shape=shape)
    if name == "vae":
        return VAE(shape, latent_dim=16, likelihood="gaussian", encoder="conv",
                   hidden_dims=(256,), batch_size=64, learning_rate=1e-3, seed=0)
    raise ValueError(name)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def train_for(
    model: Any, data: Any, seconds: float, chunk_steps: int, clock: str = "cpu"
) -> dict[str, Any]:
    """Fit in chunks of `chunk_steps` steps (resuming from a checkpoint) for `seconds`.

    `clock="cpu"` counts this process's CPU seconds (all its threads), so a model trained
    beside other jobs gets the same work as on a quiet machine; "wall" counts elapsed time."""
    now = CLOCKS[clock]
    started, wall_started, cpu_started = now(), time.perf_counter(), time.process_time()
    steps = 0
    with tempfile.TemporaryDirectory() as folder:
        while now() - started < seconds:
            steps += chunk_steps
            model.fit(data, n_epochs=10**6, max_steps=steps, checkpoint_dir=folder, resume=True)
    history = model.history_
    return {
        "seconds": time.perf_counter() - wall_started,
        "cpu_seconds": time.process_time() - cpu_started,
        "budget_seconds": seconds,
        "budget_clock": clock,
        "steps": int(history[-1]["steps"]) if history else 0,
        "images_seen": int(history[-1]["steps"]) * int(model.batch_size) if history else 0,
        "last_record": _jsonable(history[-1]) if history else None,
    }


def draw(name: str, model: Any, n: int) -> torch.Tensor:
    if name == "vae":
        return model.sample(n, seed=0, mean=True).clamp(0.0, 1.0)
    return model.sample(n, seed=0)


def sample_metrics(real: torch.Tensor, fake: torch.Tensor, features: Any) -> dict[str, float]:
    kid = kernel_distance(real, fake, features=features, subsets=100,
                          subset_size=min(1000, real.shape[0], fake.shape[0]), seed=0)
    prdc = precision_recall_density_coverage(real, fake, k=5, features=features)
    return {
        "fid": float(frechet_distance_from_samples(real, fake, features=features)),
        "kid": float(kid.mean),
        "kid_std": float(kid.std),
        "precision": prdc["precision"],
        "recall": prdc["recall"],
        "density": prdc["density"],
        "coverage": prdc["coverage"],
    }


def run_cyclegan(source: str, quick: bool, seconds: float, chunk_steps: int, n_eval: int,
                 classifier: Any, clock: str = "cpu") -> dict[str, Any]:
    shape = SOURCES[source]
    overrides: dict[str, Any] = {"image_shape": shape}
    if quick:
        overrides.update(channels=8, n_blocks=1, discriminator_channels=8)
    model = cyclegan_mnist.build(**overrides)
    a, b = cyclegan_mnist.data("train", source=source)
    training = train_for(model, (a, b), seconds, chunk_steps, clock)
    test_a, test_b, labels = cyclegan_mnist.labelled_test(n=n_eval, source=source)
    to_b = model.translate(test_a, "a_to_b")
    to_a = model.translate(test_b, "b_to_a")

    def accuracy(images: torch.Tensor) -> float:
        with torch.no_grad():
            return float((classifier.predict(images) == labels).float().mean())

    return {
        "settings": model.get_config(),
        "training": training,
        "n_test": int(test_a.shape[0]),
        "a_to_b_mae": float((to_b - test_b).abs().mean()),
        "a_to_b_rmse": float((to_b - test_b).square().mean().sqrt()),
        "b_to_a_mae": float((to_a - test_a).abs().mean()),
        "b_to_a_rmse": float((to_a - test_a).square().mean().sqrt()),
        "identity_map_mae": float((test_a - test_b).abs().mean()),
        "label_preservation_a_to_b": accuracy(cyclegan_mnist.transform(to_b)),
        "label_preservation_b_to_a": accuracy(to_a),
        "classifier_accuracy_on_real": accuracy(test_a),
        "target_label_preservation": 0.9,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float, default=None,
                        help="training seconds per model (default 300; quick 4)")
    parser.add_argument("--cyclegan-budget", type=float, default=None,
                        help="CycleGAN training seconds (default 600; quick 4)")
    parser.add_argument("--chunk-steps", type=int, default=None,
                        help="optimiser steps between budget checks (default 20; quick 2)")
    parser.add_argument("--only", nargs="+", default=None,
                        choices=MODELS + ("train_images", "cyclegan"))
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu",
                        help="what the budgets count: this process's CPU seconds (default) "
                             "or wall-clock seconds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    apply_threads(args.threads)
    quick = args.quick
    source = "digits" if quick else "mnist"
    budget = args.budget if args.budget is not None else (4.0 if quick else 300.0)
    cycle_budget = args.cyclegan_budget if args.cyclegan_budget is not None else (
        4.0 if quick else 600.0)
    chunk = args.chunk_steps or (2 if quick else 20)
    out = args.out or (Path(tempfile.gettempdir()) / "gan_mnist_quick.json" if quick else RESULTS)
    chosen = args.only or list(MODELS) + ["train_images", "cyclegan"]

    shape = SOURCES[source]
    train, _ = digit_images(source, "train")
    test, _ = digit_images(source, "test")
    classifier = load_feature_classifier(source)
    features = classifier.features
    n_eval = test.shape[0]
    results: dict[str, Any] = {}
    if out.exists() and args.only:
        results = json.loads(out.read_text())  # rerun some sections, keep the others
    results.update({
        "date": time.strftime("%Y-%m-%d"),
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
            elif name == "cyclegan":
                results["cyclegan"] = run_cyclegan(source, quick, cycle_budget, chunk, n_eval,
                                                   classifier, args.clock)
            else:
                model = build(name, shape, quick)
                training = train_for(model, train, budget, chunk, args.clock)
                fake = draw(name, model, n_eval)
                models[name] = {
                    "class": type(model).__name__,
                    "settings": _jsonable(model.get_config()),
                    "parameters": int(sum(p.numel() for p in model.parameters())),
                    "training": training,
                    "metrics": sample_metrics(test, fake, features),
                }
        except Exception as error:  # record and go on: one failure should not lose the rest
            traceback.print_exc()
            if name == "cyclegan":
                results["cyclegan"] = {"error": repr(error)}
            else:
                models[name] = {"error": repr(error)}
        print(json.dumps(results.get("cyclegan") if name == "cyclegan" else models.get(name),
                         indent=1, default=str)[:1500], flush=True)
    results["load_average_end"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_jsonable(results), indent=1, default=str) + "\n")
    print(f"wrote {out}")
    rows = [(k, v.get("metrics", {})) for k, v in models.items()]
    print(f"{'model':<14}{'FID':>9}{'KID':>9}{'prec':>7}{'rec':>7}{'dens':>7}{'cov':>7}")
    for name, m in rows:
        if m:
            print(f"{name:<14}{m['fid']:9.3f}{m['kid']:9.4f}{m['precision']:7.3f}"
                  f"{m['recall']:7.3f}{m['density']:7.3f}{m['coverage']:7.3f}")


if __name__ == "__main__":
    main()
