"""The measurements behind probgen's thread policy (`probgen.core.threads`).

1. Per-call cost of `torch.get_num_threads` and of a `torch.set_num_threads` pin-and-restore
   pair (what the policy adds to every public call).
2. A loop of small ops (a (64 x size) @ (size x size) product and a softmax per step, 300
   steps; per-step work 64 * size**2 multiply-adds) at 1 and at 2 intra-op threads, on a quiet
   machine and beside a CPU-burning process (`benchmarks/_load.py`): mean microseconds per
   step over 3 runs, and the ratio 2 threads / 1 thread (above 1: one thread is faster).

The policy pins one thread where the ratio is above 1 in both modes, i.e. for per-step work up
to `THREADED_WORK` (2**22) multiply-adds, and keeps the caller's setting above it.

Usage:
    python benchmarks/threads_policy.py [--quick] [--load both] [--out PATH]

Writes benchmarks/results/threads.json (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _load import LOAD_CHOICES, load_modes, under

RESULTS = Path(__file__).resolve().parent / "results" / "threads.json"


def per_call_microseconds(function: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1e6


def small_op_loop(size: int, steps: int) -> float:
    """Microseconds per step of a loop of small ops."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.rand(size, size, generator=generator)
    state = torch.rand(64, size, generator=generator)
    started = time.perf_counter()
    for _ in range(steps):
        state = torch.softmax(state @ weights, dim=1)
    return (time.perf_counter() - started) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and steps")
    parser.add_argument("--load", choices=LOAD_CHOICES, default="both")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    caller = torch.get_num_threads()
    sizes = (8, 128, 512) if args.quick else (8, 32, 128, 256, 512, 1024)
    steps = 50 if args.quick else 300
    calls = 2000 if args.quick else 20000

    def pin_and_restore() -> None:
        torch.set_num_threads(1)
        torch.set_num_threads(caller)

    report: dict = {
        "benchmark": "threads_policy",
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_default_threads": caller,
            "torch": torch.__version__,
        },
        "per_call_microseconds": {
            "get_num_threads": per_call_microseconds(torch.get_num_threads, calls),
            "set_num_threads_pin_and_restore": per_call_microseconds(pin_and_restore, calls),
        },
        "loops": [],
    }
    print("per call (us):", {k: round(v, 3) for k, v in report["per_call_microseconds"].items()})
    print(f"{'load':>7} {'size':>5} {'work':>10} {'1 thr us':>10} {'2 thr us':>10} {'2/1':>6}")
    try:
        for mode in load_modes(args.load):
            with under(mode):
                for size in sizes:
                    timings = {}
                    for threads in (1, 2):
                        torch.set_num_threads(threads)
                        small_op_loop(size, 10)  # warm-up
                        runs = [small_op_loop(size, steps) for _ in range(3)]
                        timings[threads] = sum(runs) / len(runs)
                    row = {
                        "load": mode,
                        "size": size,
                        "work_per_step": 64 * size * size,
                        "microseconds_per_step_1_thread": timings[1],
                        "microseconds_per_step_2_threads": timings[2],
                        "ratio_2_over_1": timings[2] / timings[1],
                    }
                    report["loops"].append(row)
                    print(
                        f"{mode:>7} {size:>5} {row['work_per_step']:>10} {timings[1]:>10.1f} "
                        f"{timings[2]:>10.1f} {row['ratio_2_over_1']:>6.2f}",
                        flush=True,
                    )
    finally:
        torch.set_num_threads(caller)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
