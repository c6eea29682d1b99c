"""Mode collapse on PacGAN's 2-D grid and ring: the recipes' GAN against a plain baseline.

Protocol of PacGAN (Lin et al. 2018, Section 4.1, Table 1): a generator trained on the
25-Gaussian grid (means on {-4, -2, 0, 2, 4}^2, sd 0.05) or the 8-Gaussian ring (radius 1,
sd 0.01), 100,000 training draws, judged on 2,500 of its samples by
`probgen.metrics.mode_collapse_metrics`: modes captured, share of high-quality samples (within
3 sd of the nearest mode) and the reverse KL of the per-mode histogram to uniform.

Settings, each over `--seeds` seeds (model seed = data seed), 12,000 generator steps each:
- ``best``: the recipes `gan_grid` / `gan_ring` as they are (`build()`). Grid: an MLP GAN,
  non-saturating loss, constant learning rates 1e-3, the R1 penalty on real data (gamma 0.3,
  Mescheder et al. 2018) and an EMA (0.999) of the generator's weights, sampled from. Ring: the
  same GAN without R1 and EMA, learning rates decaying exponentially to a tenth;
- ``plain``: the plain GAN baseline, the same network, learning rates and budget without the
  stabilisers (`build(**recipe.PLAIN)`: grid without R1 and EMA, ring with constant rates);
- ``pack2`` (grid, with ``--with-pack``): `build(pack=2)`, PacGAN2 on the best setting.

PacGAN's Table 1 (10 runs, grid): GAN 17.3 modes / 94.8 % / 0.70; PacGAN4 24.8 / 93.6 % / 0.04.
Issue 12's targets (mean of 3 seeds, these CPUs): grid >= 24 modes, >= 90 % high quality,
reverse KL <= 0.10; ring >= 7.5 modes. Training time is recorded as wall-clock and CPU seconds
of `fit` (the CPU seconds are the fairer figure on a shared machine); torch's threads follow the
library's policy; the load average is recorded since the machines are shared.

Usage:
    python benchmarks/gan_modes.py [--quick] [--seeds N] [--with-pack] [--only grid|ring]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.recipes import gan_grid, gan_ring  # noqa: E402

from probgen.metrics.modes import N_EVAL_SAMPLES, mode_collapse_metrics  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "gan_modes.json"
TARGETS = {
    "grid": {"modes": 24.0, "high_quality": 0.90, "reverse_kl": 0.10},
    "ring": {"modes": 7.5},
}


def settings(dataset: str, with_pack: bool) -> dict[str, dict[str, Any]]:
    recipe = {"grid": gan_grid, "ring": gan_ring}[dataset]
    chosen: dict[str, dict[str, Any]] = {"plain": dict(recipe.PLAIN), "best": {}}
    if with_pack and dataset == "grid":
        chosen["pack2"] = {"pack": 2}
    return chosen


def run_one(recipe: Any, overrides: dict[str, Any], seed: int, quick: bool,
            train_size: int | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Fit one GAN and judge 2,500 of its samples."""
    n = 4_000 if quick else (train_size or 100_000)
    extra = {"n_epochs": 2} if quick else ({"n_epochs": epochs} if epochs else {})
    model = recipe.build(seed=seed, **overrides, **extra)
    data = recipe.data("train", seed=seed, n=n)
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(data)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    samples = model.sample(N_EVAL_SAMPLES, seed=seed)
    report = mode_collapse_metrics(samples, recipe.MEANS, std=recipe.STD)
    return {
        "seed": seed,
        "modes": report["modes_captured"],
        "high_quality": report["high_quality_fraction"],
        "reverse_kl": report["reverse_kl"],
        "fit_seconds": seconds,
        "fit_cpu_seconds": cpu_seconds,
        "generator_steps": model.history_[-1]["steps"],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("modes", "high_quality", "reverse_kl", "fit_seconds", "fit_cpu_seconds")
    return {key: sum(r[key] for r in runs) / len(runs) for key in keys}


def meets(dataset: str, mean: dict[str, float]) -> bool:
    target = TARGETS[dataset]
    ok = mean["modes"] >= target["modes"]
    if "high_quality" in target:
        ok = ok and mean["high_quality"] >= target["high_quality"]
        ok = ok and mean["reverse_kl"] <= target["reverse_kl"]
    return bool(ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds (smoke test)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--with-pack", action="store_true", help="add PacGAN2 on the grid")
    parser.add_argument("--only", choices=("grid", "ring"), default=None)
    parser.add_argument("--settings", nargs="+", default=None, help="subset of plain best pack2")
    parser.add_argument("--train-size", type=int, default=None,
                        help="training draws (default: the recipe's 100,000)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    out = args.out or (Path("/tmp/gan_modes_quick.json") if args.quick else RESULTS)

    recipes = {"grid": gan_grid, "ring": gan_ring}
    if args.only:
        recipes = {args.only: recipes[args.only]}
    results: dict[str, Any] = {}
    load_start = os.getloadavg()
    for dataset, recipe in recipes.items():
        results[dataset] = {}
        for name, overrides in settings(dataset, args.with_pack).items():
            if args.settings and name not in args.settings:
                continue
            runs = []
            for seed in range(seeds):
                run = run_one(recipe, overrides, seed, args.quick, args.train_size, args.epochs)
                runs.append(run)
                print(dataset, name, json.dumps(run), flush=True)
            mean = summarise(runs)
            results[dataset][name] = {
                "overrides": overrides,
                "runs": runs,
                "mean": mean,
                "meets_target": meets(dataset, mean),
            }
            print(f"{dataset} {name}: modes {mean['modes']:.2f}, high quality "
                  f"{mean['high_quality']:.3f}, reverse KL {mean['reverse_kl']:.3f}, "
                  f"{mean['fit_seconds']:.0f} s per fit ({mean['fit_cpu_seconds']:.0f} s CPU)",
                  flush=True)
    document = {
        "benchmark": "gan_modes",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "load_average_start": load_start, "load_average_end": os.getloadavg()},
        "protocol": __doc__.split("Usage:")[0].strip(),
        "recipe_settings": {
            name: {k: repr(v) for k, v in recipe.SETTINGS.items()}
            for name, recipe in (("grid", gan_grid), ("ring", gan_ring))
        },
        "reference": gan_grid.REFERENCE,
        "targets": TARGETS,
        "seeds": seeds,
        "train_size": args.train_size or 100_000,
        "epochs": args.epochs or gan_grid.SETTINGS["n_epochs"],
        "quick": args.quick,
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
