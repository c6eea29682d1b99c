"""Autoregressive neural models next to published figures, after a stated CPU budget.

- MADE (one hidden layer of 500 units, one mask) on the debd sets dna, mushrooms and nips:
  average test negative log-likelihood in nats next to the MADE paper's one-mask figures
  (83.63, 9.68, 280.25). Settings are chosen on the validation split from a small grid, as the
  paper chose its hyperparameters; early stopping on validation log-likelihood.
- A character LSTM on tiny shakespeare (first 90% train, last 10% validation): validation
  nats and bits per character after a fixed wall-clock training budget, next to nanoGPT's
  1.88 nats/char (small model on CPU) and 1.47 (larger GPU configuration).

`benchmarks/neural_likelihood.py` calls `run_made_benchmark(quick)` and
`run_charlm_benchmark(quick)`; run this file on its own to write
`benchmarks/results/neural_autoregressive.json`:

    python benchmarks/_neural_autoregressive.py [--quick] [--threads N] [--load quiet]
        [--only made|charlm] [--out PATH]

Its figures are quality after a wall-clock budget, not ratios to a reference library, so
`--load` defaults to quiet here (`loaded` trains beside a CPU-burning process and reports
under "<section>_loaded"; `both` does both). Torch's thread count is left at its default so
the library's thread policy is measured (`--threads N` overrides it).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
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

from probgen.recipes import charlm_shakespeare, made_debd  # noqa: E402
from probgen.recipes._shared_data import SharedDataMissing  # noqa: E402

MADE_PAPER_ONE_MASK = {"dna": 83.63, "mushrooms": 9.68, "nips": 280.25}
CHARLM_REFERENCE = {"small_cpu": 1.88, "large_gpu": 1.47}

# Candidate settings for MADE (picked per data set on validation log-likelihood).
_MADE_CANDIDATES = [
    {"name": "adam", "build": {}, "fit": {"learning_rate": 1e-3}},
    {
        "name": "adamw-wd0.5-direct",
        "build": {"direct_connection": True},
        "fit": {"learning_rate": 1e-3, "optimizer": "adamw", "weight_decay": 0.5},
    },
]


def machine() -> dict[str, Any]:
    """Platform, CPU count, torch threads and versions (for the results file)."""
    import probgen

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "probgen": probgen.__version__,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }


def run_made_benchmark(quick: bool) -> dict[str, Any]:
    """MADE test NLL on debd dna, mushrooms, nips next to the MADE paper (one mask).

    Args:
        quick: one candidate setting and at most 40 epochs per set (under a minute in all);
            otherwise two candidates, at most 150 epochs each, early stopping (patience 10).

    Returns:
        A dict with the budget, and per data set: the chosen setting, its validation and test
        NLL, the paper's figure and the ratio ours / paper.
    """
    max_epochs = 40 if quick else 150
    candidates = _MADE_CANDIDATES[:1] if quick else _MADE_CANDIDATES
    results: dict[str, Any] = {
        "model": "MADE, one hidden layer of 500 ReLU units, one mask (natural order)",
        "budget": (
            f"CPU, {torch.get_num_threads()} torch thread(s); per data set "
            f"{len(candidates)} setting(s) x at most {max_epochs} epochs, batch 100, "
            "early stopping on validation (patience 10), chosen on validation NLL"
        ),
        "reference_source": made_debd.REFERENCE["source"],
        "datasets": {},
    }
    for dataset, paper in MADE_PAPER_ONE_MASK.items():
        try:
            train, valid, test = (
                made_debd.data(split, dataset=dataset) for split in ("train", "valid", "test")
            )
        except SharedDataMissing as error:
            results["datasets"][dataset] = {"skipped": str(error)}
            continue
        tried = []
        best_model = None
        best_valid = math.inf
        started = time.perf_counter()
        for candidate in candidates:
            model = made_debd.build(dataset=dataset, seed=0, **candidate["build"])
            began = time.perf_counter()
            model.fit(
                train,
                validation_data=valid,
                n_epochs=max_epochs,
                batch_size=100,
                early_stopping_patience=10,
                **candidate["fit"],
            )
            seconds = time.perf_counter() - began
            with torch.no_grad():
                valid_nll = -float(model.log_prob(valid).mean())
            tried.append(
                {
                    "setting": candidate["name"],
                    "epochs": len(model.history_),
                    "seconds": round(seconds, 2),
                    "valid_nll": round(valid_nll, 3),
                }
            )
            if valid_nll < best_valid:
                best_valid, best_model, chosen = valid_nll, model, candidate["name"]
        with torch.no_grad():
            test_nll = -float(best_model.log_prob(test).mean())
        results["datasets"][dataset] = {
            "n_variables": made_debd.DATASETS[dataset],
            "n_train": len(train),
            "n_test": len(test),
            "chosen_setting": chosen,
            "valid_nll": round(best_valid, 3),
            "test_nll": round(test_nll, 3),
            "paper_test_nll_one_mask": paper,
            "ratio_ours_over_paper": round(test_nll / paper, 4),
            "seconds": round(time.perf_counter() - started, 2),
            "candidates": tried,
        }
    return results


def _calibrated_steps(settings: dict[str, Any], train: str, budget_seconds: float) -> int:
    """Optimiser steps that fit in `budget_seconds`, timed on a throwaway copy of the model."""
    probe = charlm_shakespeare.build(**settings)
    sample = train[: probe.seq_length * probe.batch_size * 4]
    probe.fit(sample, n_epochs=1, max_steps=1)  # warm-up (allocations)
    began = time.perf_counter()
    probe.fit(sample, n_epochs=1, max_steps=3)
    per_step = (time.perf_counter() - began) / 3
    return max(1, int(budget_seconds / per_step))


def run_charlm_benchmark(quick: bool) -> dict[str, Any]:
    """Character LSTM on tiny shakespeare: validation nats and bits per character.

    Args:
        quick: a 25-second training budget (and validation on the first 20% of the
            validation text); otherwise 180 seconds and the whole validation text.

    Returns:
        A dict with the budget, the steps and characters seen, validation nats/char and
        bits/char, the reference figures and ratios ours / reference, and a sample.
    """
    budget = 25.0 if quick else 180.0
    settings: dict[str, Any] = {}
    results: dict[str, Any] = {
        "model": "SequenceModel arch=lstm, 1 layer, width 512, embedding 64 (recipe "
        "charlm_shakespeare, size='small'); windows of 128 characters, batch 32, Adam lr 3e-3, "
        "gradient clipping 1.0",
        "device": "cpu",
        "gpu": "no GPU in this session; the large (GPU) configuration was not run",
        "reference_nats_per_char": CHARLM_REFERENCE,
        "reference_source": charlm_shakespeare.REFERENCE["source"],
    }
    try:
        train = charlm_shakespeare.text("train")
        valid = charlm_shakespeare.text("valid")
    except SharedDataMissing as error:
        results["skipped"] = str(error)
        return results
    if quick:
        valid = valid[: len(valid) // 5]
    steps = _calibrated_steps(settings, train, budget)
    model = charlm_shakespeare.build(**settings)
    began = time.perf_counter()
    model.fit(train, n_epochs=max(1, math.ceil(steps / (len(train) / 4096))), max_steps=steps)
    train_seconds = time.perf_counter() - began
    began = time.perf_counter()
    segment_bits = model.bits_per_character(valid, segment_length=256)
    evaluation_seconds = time.perf_counter() - began
    segment_nats = segment_bits * math.log(2)
    results.update(
        {
            "budget": f"{budget:.0f} s of training on CPU, {torch.get_num_threads()} torch "
            f"thread(s) (steps fixed beforehand from a timing probe)",
            "steps": steps,
            "characters_seen": steps * model.batch_size * model.seq_length,
            "train_seconds": round(train_seconds, 1),
            "final_train_loss_nats": round(model.history_[-1]["train_loss"], 4),
            "valid_characters": len(valid),
            "valid_nats_per_char": round(segment_nats, 4),
            "valid_bits_per_char": round(segment_bits, 4),
            "evaluation": "validation text cut into segments of 256 characters, each scored "
            "from the begin token",
            "evaluation_seconds": round(evaluation_seconds, 1),
            "ratio_ours_over_small_cpu": round(segment_nats / CHARLM_REFERENCE["small_cpu"], 4),
            "ratio_ours_over_large_gpu": round(segment_nats / CHARLM_REFERENCE["large_gpu"], 4),
        }
    )
    if not quick:
        # Exact log p of the whole validation text: the LSTM carries its state through it.
        streamed_bits = model.bits_per_character(valid)
        results["valid_nats_per_char_streamed"] = round(streamed_bits * math.log(2), 4)
        results["valid_bits_per_char_streamed"] = round(streamed_bits, 4)
    results["sample"] = model.sample_text(1, length=200, prompt="ROMEO:", temperature=0.8, seed=0)[
        0
    ]
    return results


def _print_made(results: dict[str, Any]) -> None:
    print(f"MADE ({results['budget']})")
    print(f"{'data':<10} {'ours':>9} {'paper':>9} {'ratio':>7} {'setting':<20} {'seconds':>8}")
    for name, row in results["datasets"].items():
        if "skipped" in row:
            print(f"{name:<10} skipped: {row['skipped']}")
            continue
        print(
            f"{name:<10} {row['test_nll']:>9.2f} {row['paper_test_nll_one_mask']:>9.2f} "
            f"{row['ratio_ours_over_paper']:>7.3f} {row['chosen_setting']:<20} "
            f"{row['seconds']:>8.1f}"
        )


def _print_charlm(results: dict[str, Any]) -> None:
    if "skipped" in results:
        print(f"char model skipped: {results['skipped']}")
        return
    print(f"\nCharacter LSTM on tiny shakespeare ({results['budget']})")
    print(
        f"steps {results['steps']}, characters seen {results['characters_seen']:,}, "
        f"train {results['train_seconds']} s"
    )
    print(
        f"validation: {results['valid_nats_per_char']:.3f} nats/char "
        f"({results['valid_bits_per_char']:.3f} bits/char); reference 1.88 (small, CPU) -> "
        f"ratio {results['ratio_ours_over_small_cpu']:.3f}; 1.47 (large, GPU) -> ratio "
        f"{results['ratio_ours_over_large_gpu']:.3f}"
    )
    if "valid_nats_per_char_streamed" in results:
        print(f"streamed (exact, whole text): {results['valid_nats_per_char_streamed']:.3f}")
    print(f"{results['gpu']}\nsample: {results['sample']!r}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short budgets (under a minute each)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _load import add_options, apply_threads, load_modes, under

    add_options(parser, default_load="quiet")
    parser.add_argument("--only", choices=("made", "charlm"), default=None)
    parser.add_argument("--out", type=Path, default=None, help="results file")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    output: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    output["machine"]["load_modes"] = load_modes(args.load)
    for mode in load_modes(args.load):
        suffix = "" if mode == "quiet" else f"_{mode}"
        if args.only in (None, "made"):
            with under(mode):
                output["made" + suffix] = run_made_benchmark(args.quick)
            _print_made(output["made" + suffix])
        if args.only in (None, "charlm"):
            with under(mode):
                output["charlm" + suffix] = run_charlm_benchmark(args.quick)
            _print_charlm(output["charlm" + suffix])
    path = args.out or ROOT / "benchmarks" / "results" / "neural_autoregressive.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() and args.only else {}
    previous.update(copy.deepcopy(output))
    path.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"\nwrote {path}")
    return output


if __name__ == "__main__":
    main()
