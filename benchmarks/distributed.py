"""Sharded EM on 1 vs 2 processes (torch.distributed, gloo): wall time per EM iteration.

Two workloads from issue 14, each fitted in one process and on 2 local processes started by
`probgen.distributed.spawn_local` (one thread each, the CPU cores shared out), with the same
settings and seed:

- a Gaussian mixture, N = 2,000,000 points in 3 dimensions, 4 full-covariance components;
- a Gaussian HMM, 10,000 ragged sequences (50 to 150 steps), 3 states, diagonal covariances.

The one-process figure is the faster of 1 thread and one thread per core (on a shared machine
two threads of one process can wait on each other badly). The time per iteration is the median
time between the starts of consecutive EM iterations (the start, k-means, is left out); on 2
processes it is the slower rank's. The communication time per iteration is the
time spent inside `torch.distributed.all_reduce` (it includes waiting for the
other rank), with the number of collectives and the bytes each rank sends per iteration: the
sufficient statistics, whose size does not depend on N. A ring all-reduce moves about
2 (p - 1) / p times those bytes per rank on p ranks, so at a few kilobytes per iteration the
cost on many machines is the network latency of one to three collectives (tens of
microseconds each on a data-centre network), against 0.4 to 3 seconds of work per iteration here.

`--load both` (the default) measures quiet and beside a CPU-burning process; the machine may
be shared, so quote the speed-ups loosely.

Usage:
    python benchmarks/distributed.py               # the issue's sizes (a few minutes)
    python benchmarks/distributed.py --quick --out /tmp/distributed.json   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from _load import add_options, apply_threads, load_modes, under

import probgen
from probgen import distributed
from probgen.hmm import HMM
from probgen.mixture import GaussianMixture

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.json"


# ---- data (every rank makes the same data from the seed and keeps its shard) -----------------
def mixture_data(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor(
        [[-4.0, 0.0, 1.0], [0.0, 3.0, -1.0], [4.0, -1.0, 0.0], [0.0, -4.0, 2.0]],
        dtype=torch.float64,
    )
    labels = torch.randint(len(centres), (n,), generator=generator)
    return centres[labels] + torch.randn(n, 3, generator=generator, dtype=torch.float64)


def hmm_data(n: int, seed: int = 0) -> list[torch.Tensor]:
    truth = HMM(3, "gaussian", n_features=2).double()
    truth.set_parameters(
        start_probs=[0.5, 0.3, 0.2],
        transition_probs=[[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]],
        means=[[-2.0, 0.0], [0.0, 2.0], [2.0, -1.0]],
        covariances=torch.eye(2, dtype=torch.float64).expand(3, 2, 2).clone(),
    )
    observations = truth.sample(n, length=150, seed=seed)
    lengths = torch.randint(50, 151, (n,), generator=torch.Generator().manual_seed(seed))
    return [observations[i, :length] for i, length in enumerate(lengths.tolist())]


def _fit(workload: str, data: Any, max_iter: int) -> None:
    if workload == "gmm":
        GaussianMixture(4, covariance="full", max_iter=max_iter, tol=0.0, seed=0).double().fit(
            data
        )
    else:
        HMM(3, "gaussian", max_iter=max_iter, tol=0.0, seed=0).double().fit(data)


# ---- measurement ---------------------------------------------------------------------------
class _Clock:
    """Records when each call of `owner.name` starts (and, for all-reduce, its seconds and
    bytes) while the block runs; `owner.name` is put back afterwards."""

    def __init__(self, owner: Any, name: str) -> None:
        self.owner, self.name = owner, name
        self.original = getattr(owner, name)
        self.calls: list[tuple[float, float, int]] = []  # (start, seconds, bytes)

    def __enter__(self) -> _Clock:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                first = args[0] if args else None
                size = first.numel() * first.element_size() if torch.is_tensor(first) else 0
                self.calls.append((began, time.perf_counter() - began, size))

        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *exc: Any) -> None:
        setattr(self.owner, self.name, self.original)


def _iteration_step(workload: str) -> tuple[Any, str]:
    """The function each EM iteration calls once (its start times mark the iterations)."""
    if workload == "gmm":
        import probgen.mixture.model as mixture_model

        return mixture_model, "em_iteration"
    import probgen.hmm.sharded as hmm_sharded

    return hmm_sharded, "reduced_e_step"


def measure(workload: str, n: int, iterations: int, threads: int | None = None) -> dict[str, Any]:
    """Seconds per EM iteration of this process (its shard under torch.distributed): the median
    time between the starts of consecutive iterations, so the start (k-means) is left out."""
    if threads is not None:
        torch.set_num_threads(threads)
    data = mixture_data(n) if workload == "gmm" else hmm_data(n)
    if distributed.is_distributed():
        rows = distributed.shard_indices(len(data))
        data = data[rows.start : rows.stop]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter warnings: tol=0 runs every iteration
        _fit(workload, data, 2)  # warm-up (first-call costs)
        distributed.barrier()
        with _Clock(*_iteration_step(workload)) as steps, _Clock(dist, "all_reduce") as reduces:
            _fit(workload, data, 1 + iterations)
    starts = [began for began, _, _ in steps.calls]
    gaps = sorted(b - a for a, b in zip(starts, starts[1:]))
    inside = [(s, b) for began, s, b in reduces.calls if starts[0] <= began < starts[-1]]
    return {
        "seconds_per_iteration": statistics.median(gaps),
        "reduce_seconds_per_iteration": sum(s for s, _ in inside) / len(gaps),
        "reduce_calls_per_iteration": len(inside) / len(gaps),
        "reduce_bytes_per_iteration": sum(b for _, b in inside) / len(gaps),
        "threads": torch.get_num_threads(),
    }


def compare(workload: str, n: int, iterations: int, world: int = 2) -> dict[str, Any]:
    # One process with one thread and with every core's thread (torch's default on an idle
    # machine); the speed-up is against the faster of the two.
    cores = os.cpu_count() or 1
    singles = [measure(workload, n, iterations, t) for t in sorted({1, cores})]
    single = min(singles, key=lambda r: r["seconds_per_iteration"])
    ranks = distributed.spawn_local(measure, world, args=(workload, n, iterations, 1))
    slowest = max(ranks, key=lambda r: r["seconds_per_iteration"])
    row = {
        "workload": workload,
        "size": n,
        "iterations_timed": iterations,
        "one_process": singles,
        "processes": world,
        "per_rank": ranks,
        "seconds_per_iteration_1": single["seconds_per_iteration"],
        "threads_1": single["threads"],
        "seconds_per_iteration_2": slowest["seconds_per_iteration"],
        "speed_up": single["seconds_per_iteration"] / slowest["seconds_per_iteration"],
        "reduce_seconds_per_iteration_2": slowest["reduce_seconds_per_iteration"],
        "statistics_bytes_per_iteration": ranks[0]["reduce_bytes_per_iteration"],
        "collectives_per_iteration": ranks[0]["reduce_calls_per_iteration"],
    }
    print(
        f"{workload:>4} {n:>9} {row['seconds_per_iteration_1'] * 1e3:>10.1f} "
        f"{'(' + str(row['threads_1']) + 't)':>5} "
        f"{row['seconds_per_iteration_2'] * 1e3:>10.1f} {row['speed_up']:>8.2f} "
        f"{row['reduce_seconds_per_iteration_2'] * 1e3:>9.2f} "
        f"{row['collectives_per_iteration']:>5.1f} {row['statistics_bytes_per_iteration']:>8.0f}",
        flush=True,
    )
    return row


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"probgen": probgen.__version__, "torch": torch.__version__},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--out", type=Path, default=None, help="results file")
    add_options(parser)
    args = parser.parse_args()
    apply_threads(args.threads)
    cases = [("gmm", 100_000, 5), ("hmm", 500, 5)] if args.quick else [
        ("gmm", 2_000_000, 5),
        ("hmm", 10_000, 5),
    ]
    report: dict[str, Any] = {"benchmark": "distributed", "quick": args.quick}
    report["machine"] = {**machine(), "load_modes": load_modes(args.load)}
    report["rows"] = []
    print(f"{'':>4} {'size':>9} {'ms/it 1p':>10} {'':>5} {'ms/it 2p':>10} {'speed-up':>8} "
          f"{'comm ms':>9} {'coll':>5} {'bytes':>8}")
    for mode in load_modes(args.load):
        print(f"[{mode}]")
        with under(mode):
            for workload, n, iterations in cases:
                report["rows"].append({**compare(workload, n, iterations), "load": mode})
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
