"""Semi-supervised HMM EM: held-out state accuracy against the fraction of labelled steps.

Durbin's dishonest casino (`models/hmm_casino.py`): for each data size and seed, simulate
rolls and dice, keep the die at a random fraction of the rolls (-1 elsewhere) and fit
`probgen.HMM.fit(rolls, states=labels)` (2 restarts); fraction 0 is plain unsupervised EM,
fitted by probgen and, beside it, by hmmlearn's `CategoricalHMM` (the nearest tool: it has no
semi-supervised fit). Accuracy is posterior decoding of held-out rolls against the true dice;
unsupervised fits are given the best relabelling of their two states (semi-supervised ones
are not: the labels name the states). The ceiling is posterior decoding with the true
parameters. Only accuracy is compared, so there is no timing ratio and no `--load` option.

Usage: python benchmarks/hmm_partial_labels.py [--quick] [--seeds N]

Writes benchmarks/results/hmm_partial_labels.json and prints mean (sd) accuracy over seeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "hmm_partial_labels.json"
FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 1.0)


def accuracy(paths: torch.Tensor, truth: torch.Tensor, relabel: bool) -> float:
    orders = itertools.permutations(range(2)) if relabel else [(0, 1)]
    return max(float((torch.tensor(order)[paths] == truth).double().mean()) for order in orders)


def hmmlearn_accuracy(rolls: torch.Tensor, test_rolls: torch.Tensor, test_dice: torch.Tensor,
                      seed: int) -> float:
    from hmmlearn.hmm import CategoricalHMM

    best = None
    for restart in range(2):  # the same number of restarts as probgen's fits
        model = CategoricalHMM(2, n_features=6, n_iter=300, tol=1e-6 * rolls.numel(),
                               random_state=seed * 10 + restart)
        model.fit(rolls.reshape(-1, 1).numpy(), [rolls.shape[1]] * rolls.shape[0])
        score = model.score(rolls.reshape(-1, 1).numpy(), [rolls.shape[1]] * rolls.shape[0])
        if best is None or score > best[0]:
            best = (score, model)
    assert best is not None
    flat = test_rolls.reshape(-1, 1).numpy()
    paths = best[1].predict_proba(flat, [test_rolls.shape[1]] * test_rolls.shape[0]).argmax(1)
    return accuracy(torch.as_tensor(paths).reshape(test_dice.shape), test_dice, relabel=True)


def run_size(n_sequences: int, length: int, seeds: int, fractions: tuple[float, ...]) -> dict:
    from probgen.recipes import hmm_casino

    truth = hmm_casino.true_model()
    test_rolls, test_dice = truth.sample(20, length=500, seed=999, return_states=True)
    ceiling = accuracy(truth.decode(test_rolls, "posterior").paths, test_dice, relabel=False)
    scores: dict[str, list[float]] = {f"{f:g}": [] for f in fractions}
    scores["hmmlearn_unsupervised"] = []
    seconds = 0.0
    for seed in range(seeds):
        rolls, dice = truth.sample(n_sequences, length=length, seed=seed, return_states=True)
        for fraction in fractions:
            known = torch.rand(dice.shape, generator=torch.Generator().manual_seed(seed)) < fraction
            labels = torch.where(known, dice, torch.full_like(dice, -1))
            model = hmm_casino.build(n_init=2, max_iter=300, tol=1e-6, seed=seed)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(rolls) if fraction == 0.0 else model.fit(rolls, states=labels)
            seconds += time.perf_counter() - start
            paths = model.decode(test_rolls, "posterior").paths
            scores[f"{fraction:g}"].append(accuracy(paths, test_dice, relabel=fraction == 0.0))
        scores["hmmlearn_unsupervised"].append(
            hmmlearn_accuracy(rolls, test_rolls, test_dice, seed))
    return {
        "n_sequences": n_sequences, "length": length, "seeds": seeds,
        "ceiling_true_parameters": ceiling,
        "accuracy_mean": {k: float(np.mean(v)) for k, v in scores.items()},
        "accuracy_sd": {k: float(np.std(v)) for k, v in scores.items()},
        "accuracy_min": {k: float(np.min(v)) for k, v in scores.items()},
        "probgen_fit_seconds_total": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small size, one seed")
    parser.add_argument("--seeds", type=int, default=5, help="data sets per size")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args()
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    sizes = [(4, 200)] if args.quick else [(5, 200), (20, 500)]
    seeds = 1 if args.quick else args.seeds
    fractions = (0.0, 0.05, 1.0) if args.quick else FRACTIONS

    import hmmlearn

    import probgen

    results: dict = {
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "probgen": probgen.__version__, "torch": torch.__version__,
            "hmmlearn": hmmlearn.__version__, "quick": args.quick,
        },
        "sizes": [],
    }
    for n_sequences, length in sizes:
        row = run_size(n_sequences, length, seeds, fractions)
        results["sizes"].append(row)
        print(f"{n_sequences} sequences x {length} rolls, {seeds} seeds; ceiling (true "
              f"parameters) {row['ceiling_true_parameters']:.3f}")
        for key, mean in row["accuracy_mean"].items():
            label = key if key.startswith("hmmlearn") else (
                "probgen unsupervised" if key == "0" else f"probgen {float(key):.1%} labelled")
            print(f"  {label:28} accuracy {mean:.3f} (sd {row['accuracy_sd'][key]:.3f}, "
                  f"min {row['accuracy_min'][key]:.3f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
