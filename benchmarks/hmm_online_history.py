"""Cost of recording the full-data log-likelihood after each epoch of minibatch (stepwise) EM.

Minibatch EM changes the parameters after every minibatch, so since issue 11 each epoch ends
with one forward pass over all the data at the parameters it leaves (what `history_`, the
convergence test and the ranking of restarts use). This script times, on the Gaussian case of
`hmm_vs_hmmlearn.py` (8 states, 4 features, diagonal covariances, 500 x 200 steps,
batch_size=50), an epoch's minibatch e-steps and m-steps against that extra forward pass, and
reports the added fraction for float32 and float64.

Usage:
    python benchmarks/hmm_online_history.py                      # full size
    python benchmarks/hmm_online_history.py --quick --out /tmp/online.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from probgen.hmm import HMM
from probgen.hmm.sequences import _Batch


def _data(n_sequences: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    truth = HMM(8, emission="gaussian", n_features=4, seed=0).set_parameters(
        means=torch.arange(32, dtype=torch.float64).reshape(8, 4) / 4
    )
    return truth.sample(n_sequences, length=length, seed=1).to(dtype)


def measure(n_sequences: int, length: int, batch_size: int, dtype: torch.dtype, repeats: int):
    """Seconds per epoch of minibatch EM steps, and of the added full forward pass."""
    data = _data(n_sequences, length, dtype)
    model = HMM(8, emission="gaussian", seed=0, max_iter=1, batch_size=batch_size, tol=0.0)
    model = model.to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch does not converge
        model.fit(data)  # initialised parameters, warm caches
    prepared = model._prepare(data)
    epoch_times, forward_times = [], []
    for _ in range(repeats):
        begin = time.perf_counter()
        for start in range(0, n_sequences, batch_size):
            index = torch.arange(start, min(start + batch_size, n_sequences))
            statistics, _ = model.e_step(_Batch.of(prepared[index]))
            model.m_step(statistics)
        epoch_times.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        with torch.no_grad(), model._threads(n_sequences):  # as inside `fit`
            float(model._log_prob_prepared(prepared).sum())
        forward_times.append(time.perf_counter() - begin)
    epoch, forward = min(epoch_times), min(forward_times)
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "epoch_s": epoch,
        "forward_s": forward,
        "added_fraction": forward / epoch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--out", default="benchmarks/results/hmm_online_history.json")
    args = parser.parse_args()
    n_sequences, length, repeats = (100, 50, 2) if args.quick else (500, 200, 5)
    results = [
        measure(n_sequences, length, 50, dtype, repeats) for dtype in (torch.float32, torch.float64)
    ]
    report = {
        "case": f"gaussian diag, 8 states, 4 features, {n_sequences} x {length}, batch_size=50",
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for row in results:
        print(
            f"{row['dtype']}: epoch {row['epoch_s'] * 1e3:.1f} ms, forward pass "
            f"{row['forward_s'] * 1e3:.1f} ms (+{100 * row['added_fraction']:.0f}%)"
        )


if __name__ == "__main__":
    main()
