"""DBN filtering: probgen's DynamicBayesianNetwork against pgmpy's DBNInference.

For each network, draw sequences, hide the state variables, and compute the filtered marginal
of a hidden variable at the last step given every observation up to it. pgmpy answers one
`forward_inference` call per sequence; probgen filters the whole batch in one call (which
also yields every earlier step). Both run in this process on the same sequences; the largest
absolute difference of the answers is reported beside the times. Networks: the umbrella world
(3 binary variables) and coupled hidden chains, each with an observed child (`--pairs`:
2**(2*pairs) slice states, 2**pairs interface states).

Usage: python benchmarks/dbn_vs_pgmpy.py [--quick] [--load both] [--threads N]

Writes benchmarks/results/dbn_vs_pgmpy.json and prints a table. Times are the best of
`--repeats` runs (the machine is shared); rows carry "load" (quiet, or beside a CPU-burning
process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _load import add_options, apply_threads, load_modes, under

from probgen.networks.dynamic import DynamicBayesianNetwork

RESULTS = Path(__file__).resolve().parent / "results" / "dbn_vs_pgmpy.json"


def umbrella() -> tuple[DynamicBayesianNetwork, list[str]]:
    from probgen.recipes import dbn_umbrella

    return dbn_umbrella.true_model(), ["rain", "wet_grass"]


def hidden_pairs(pairs: int, seed: int = 0) -> tuple[DynamicBayesianNetwork, list[str]]:
    """`pairs` hidden chains h_i (h_i[t-1] -> h_i[t], h_{i-1}[t-1] -> h_i[t]), each observed
    through o_i (h_i -> o_i)."""
    hidden = [f"h{i}" for i in range(pairs)]
    states = {name: 2 for i in range(pairs) for name in (f"h{i}", f"o{i}")}
    intra = [(f"h{i}", f"o{i}") for i in range(pairs)]
    inter = [(f"h{i}", f"h{i}") for i in range(pairs)] + [
        (f"h{i - 1}", f"h{i}") for i in range(1, pairs)
    ]
    shell = DynamicBayesianNetwork(states, intra, inter)
    generator = torch.Generator().manual_seed(seed)

    def table(shape):
        values = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.1
        return values / values.sum(-1, keepdim=True)

    model = DynamicBayesianNetwork(
        states, intra, inter,
        prior_tables={v: table(shell.table_shape(v, "prior")) for v in states},
        transition_tables={v: table(shell.table_shape(v)) for v in states},
    )
    return model, hidden


def bench(name: str, model: DynamicBayesianNetwork, hidden: list[str], n_sequences: int,
          length: int, repeats: int) -> dict:
    from pgmpy.inference import DBNInference

    sequences = model.sample(n_sequences, length=length, seed=0)
    for variable in hidden:
        sequences[..., model.variables.index(variable)] = -1
    target = hidden[-1]
    observed = [v for v in model.variables if v not in hidden]
    evidence = [
        {(v, t): int(sequences[i, t, model.variables.index(v)]) for v in observed
         for t in range(length)}
        for i in range(n_sequences)
    ]
    ours_times, theirs_times = [], []
    reference = model.to_pgmpy()  # conversion outside the timing
    for _ in range(repeats):
        model._cache.clear()  # each run builds its slice tables, as pgmpy builds its own
        start = time.perf_counter()
        ours = model.filter(sequences)[target][:, -1].numpy()
        ours_times.append(time.perf_counter() - start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            inference = DBNInference(reference)
            theirs = np.stack([
                inference.forward_inference([(target, length - 1)], e)[(target, length - 1)].values
                for e in evidence
            ])
            theirs_times.append(time.perf_counter() - start)
    ours_time, theirs_time = min(ours_times), min(theirs_times)
    return {
        "network": name,
        "joint_states": int(np.prod(model.cardinalities)),
        "interface_states": int(np.prod([len(model.states[v]) for v in model.interface])),
        "n_sequences": n_sequences,
        "length": length,
        "probgen_seconds": ours_time,
        "pgmpy_seconds": theirs_time,
        "speedup": theirs_time / ours_time,
        "max_abs_difference": float(np.abs(ours - theirs).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few sequences, a seconds run")
    parser.add_argument("--pairs", type=int, default=3, help="hidden/observed pairs")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    add_options(parser)
    args = parser.parse_args()
    apply_threads(args.threads)
    n_sequences, length = (3, 4) if args.quick else (20, 10)
    repeats = 1 if args.quick else args.repeats

    import pgmpy

    import probgen

    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "probgen": probgen.__version__,
            "torch": torch.__version__,
            "pgmpy": pgmpy.__version__,
            "quick": args.quick,
            "repeats_best_of": repeats,
            "threads_option": args.threads,
            "load_modes": load_modes(args.load),
        },
        "filtering": [],
    }
    networks = {"umbrella": umbrella(), f"hidden_pairs_{args.pairs}": hidden_pairs(args.pairs)}
    print(f"{'network':18} {'load':7} {'S':>5} {'S_I':>5} {'probgen s':>10} {'pgmpy s':>10} "
          f"{'speedup':>8} {'max diff':>9}")
    for mode in load_modes(args.load):
        for name, (model, hidden) in networks.items():
            with under(mode):
                row = bench(name, model, hidden, n_sequences, length, repeats)
            row["load"] = mode
            results["filtering"].append(row)
            print(f"{name:18} {mode:7} {row['joint_states']:5d} "
                  f"{row['interface_states']:5d} {row['probgen_seconds']:10.4f} "
                  f"{row['pgmpy_seconds']:10.3f} {row['speedup']:8.1f} "
                  f"{row['max_abs_difference']:9.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
