"""probgen BayesianNetwork vs pgmpy 1.1.2, side by side on the same networks and data.

Figures (each with time and ratio pgmpy / probgen):

1. batched marginal queries: N queries (one query variable, 3 random evidence variables each,
   evidence states from a forward sample so every query is possible) on alarm, hepar2 and
   win95pts; probgen answers all N with one batched junction-tree calibration
   (`marginals(evidence_frame)`), pgmpy with `VariableElimination.query` per query; max
   absolute difference of the posteriors; best of 5 repeats for both (`--repeats`);
2. forward sampling of 100,000 rows from alarm (tensor of state indices and DataFrame of
   state names) vs pgmpy `BayesianModelSampling.forward_sample`, best of 5 repeats for both;
3. structure learning from 5,000 alarm samples: probgen `learn_structure(score="bic")` vs
   pgmpy `HillClimbSearch.estimate(scoring_method="bic-d")`: time and structural Hamming
   distance to the true graph;
4. exact posterior marginals of every variable given evidence on 5 variables on andes,
   pathfinder and munin: probgen junction tree vs pgmpy `VariableElimination` per variable,
   run in a subprocess under a time cap (recorded as timed out, with how many it answered).

0. the issue's call, `query([target], evidence=<300-row DataFrame>)` on the same three
   networks (key "query_api"), pgmpy `VariableElimination.query` per row.

Sections 0 and 1 (the headline ratios) run quiet and beside a CPU-burning process (`--load`,
default both; rows carry "load"). Torch's thread count is left at its default so the library's
own thread policy is measured (`--threads N` overrides it).

Usage: python benchmarks/bn_vs_pgmpy.py [--quick] [--threads N] [--load both] [--cap 120]
    [--repeats 5] [--only queries|sampling|structure|large ...] [--out PATH]
Writes benchmarks/results/bn_vs_pgmpy.json (or `--out`) and prints a table; with `--only` it
runs just the named sections and updates only their keys (and "machine") in the results file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _load import add_options, apply_threads, load_modes, under

warnings.filterwarnings("ignore")

RESULTS = Path(__file__).resolve().parent / "results" / "bn_vs_pgmpy.json"
SECTIONS = ("queries", "sampling", "structure", "large")


def pgmpy_model(name: str):
    from pgmpy.utils import get_example_model

    return get_example_model(name)


def make_queries(network, n_queries: int, seed: int) -> tuple[list[str], pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = network.sample(n_queries, seed=seed, as_frame=True)
    targets, evidence = [], []
    for index in range(n_queries):
        chosen = rng.choice(network.variables, 4, replace=False)
        targets.append(str(chosen[0]))
        evidence.append({v: rows.iloc[index][v] for v in chosen[1:]})
    return targets, pd.DataFrame(evidence, columns=network.variables)


def bench_queries(name: str, n_queries: int, repeats: int = 3, seed: int = 0) -> dict:
    from pgmpy.inference import VariableElimination

    from probgen.networks.bayesnet import BayesianNetwork

    ours = BayesianNetwork.from_example(name)
    targets, frame = make_queries(ours, n_queries, seed)
    ours.marginals(frame.iloc[:2])  # build the junction tree once (reused across evidence)
    engine = VariableElimination(pgmpy_model(name))
    evidences = [
        {k: v for k, v in frame.iloc[index].items() if isinstance(v, str)}
        for index in range(n_queries)
    ]
    ours_time = theirs_time = float("inf")
    # best of `repeats` for both libraries (the shared machine is noisy); each repeat answers
    # all queries from scratch: probgen one batched call on the DataFrame, pgmpy one query each
    for _ in range(repeats):
        start = time.perf_counter()
        marginals = ours.marginals(frame)
        ours_time = min(ours_time, time.perf_counter() - start)
        start = time.perf_counter()
        answers = [
            engine.query([target], evidence=evidence, show_progress=False)
            for target, evidence in zip(targets, evidences)
        ]
        theirs_time = min(theirs_time, time.perf_counter() - start)
    worst = 0.0
    for index, (target, answer) in enumerate(zip(targets, answers)):
        order = [answer.state_names[target].index(s) for s in ours.states[target]]
        difference = np.abs(marginals[target][index].numpy() - answer.values[order]).max()
        worst = max(worst, float(difference))
    return {
        "network": name,
        "n_queries": n_queries,
        "repeats_best_of": repeats,
        "probgen_seconds": ours_time,
        "pgmpy_seconds": theirs_time,
        "probgen_queries_per_second": n_queries / ours_time,
        "pgmpy_queries_per_second": n_queries / theirs_time,
        "throughput_ratio": theirs_time / ours_time,
        "max_abs_difference": worst,
    }


def bench_query_api(name: str, n_rows: int = 300, repeats: int = 3, seed: int = 0) -> dict:
    """`BayesianNetwork.query([target], evidence=<n_rows-row DataFrame>)`, the issue's call.

    One query variable for every row, 3 random evidence variables per row (states from a
    forward sample, so every row is possible); pgmpy's `VariableElimination.query` per row.
    """
    from pgmpy.inference import VariableElimination

    from probgen.networks.bayesnet import BayesianNetwork

    ours = BayesianNetwork.from_example(name)
    rng = np.random.default_rng(seed)
    target = str(rng.choice(ours.variables))
    others = [v for v in ours.variables if v != target]
    rows = ours.sample(n_rows, seed=seed, as_frame=True)
    evidences = []
    for index in range(n_rows):
        chosen = rng.choice(others, 3, replace=False)
        evidences.append({str(v): rows.iloc[index][v] for v in chosen})
    frame = pd.DataFrame(evidences, columns=others)
    ours.query([target], evidence=frame.iloc[:2])
    engine = VariableElimination(pgmpy_model(name))
    ours_time = theirs_time = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        table = ours.query([target], evidence=frame)
        ours_time = min(ours_time, time.perf_counter() - start)
        start = time.perf_counter()
        answers = [
            engine.query([target], evidence=evidence, show_progress=False)
            for evidence in evidences
        ]
        theirs_time = min(theirs_time, time.perf_counter() - start)
    order = [answers[0].state_names[target].index(s) for s in ours.states[target]]
    theirs = np.stack([answer.values[order] for answer in answers])
    return {
        "network": name,
        "target": target,
        "n_rows": n_rows,
        "repeats_best_of": repeats,
        "probgen_seconds": ours_time,
        "pgmpy_seconds": theirs_time,
        "ratio": theirs_time / ours_time,
        "max_abs_difference": float(np.abs(table.values.numpy() - theirs).max()),
    }


def bench_sampling(n_rows: int, repeats: int = 3) -> dict:
    from pgmpy.sampling import BayesianModelSampling

    from probgen.networks.bayesnet import BayesianNetwork

    ours = BayesianNetwork.from_example("alarm")
    ours.sample(10, seed=0)
    sampler = BayesianModelSampling(pgmpy_model("alarm"))
    tensor_time = frame_time = theirs_time = float("inf")
    # best of `repeats` for both libraries: the shared machine is noisy
    for repeat in range(repeats):
        start = time.perf_counter()
        ours.sample(n_rows, seed=repeat)
        tensor_time = min(tensor_time, time.perf_counter() - start)
        start = time.perf_counter()
        ours.sample(n_rows, seed=repeat, as_frame=True)
        frame_time = min(frame_time, time.perf_counter() - start)
        start = time.perf_counter()
        sampler.forward_sample(size=n_rows, seed=repeat, show_progress=False)
        theirs_time = min(theirs_time, time.perf_counter() - start)
    return {
        "network": "alarm",
        "n_rows": n_rows,
        "repeats_best_of": repeats,
        "probgen_tensor_seconds": tensor_time,
        "probgen_dataframe_seconds": frame_time,
        "pgmpy_seconds": theirs_time,
        "ratio_tensor": theirs_time / tensor_time,
        "ratio_dataframe": theirs_time / frame_time,
    }


def bench_structure(n_rows: int) -> dict:
    from pgmpy.estimators import HillClimbSearch

    from probgen.networks.bayesnet import BayesianNetwork
    from probgen.networks.structure import learn_structure, structural_hamming_distance

    truth = BayesianNetwork.from_example("alarm")
    data = truth.sample(n_rows, seed=2, as_frame=True)
    start = time.perf_counter()
    learned = learn_structure(data, score="bic")
    ours_time = time.perf_counter() - start
    start = time.perf_counter()
    greedy = learn_structure(data, score="bic", patience=0)
    greedy_time = time.perf_counter() - start
    start = time.perf_counter()
    theirs = HillClimbSearch(data).estimate(scoring_method="bic-d", show_progress=False)
    theirs_time = time.perf_counter() - start
    return {
        "network": "alarm",
        "n_rows": n_rows,
        "true_edges": len(truth.edges),
        "probgen_seconds": ours_time,
        "probgen_shd": structural_hamming_distance(learned, truth),
        "probgen_greedy_seconds": greedy_time,
        "probgen_greedy_shd": structural_hamming_distance(greedy, truth),
        "pgmpy_seconds": theirs_time,
        "pgmpy_shd": structural_hamming_distance(theirs, truth),
        "time_ratio": theirs_time / ours_time,
    }


def _pgmpy_all_marginals(name: str, evidence: dict, queue) -> None:
    warnings.filterwarnings("ignore")
    from pgmpy.inference import VariableElimination

    model = pgmpy_model(name)
    engine = VariableElimination(model)
    start = time.perf_counter()
    for variable in model.nodes():
        if variable in evidence:
            continue
        answer = engine.query([variable], evidence=evidence, show_progress=False)
        queue.put(
            (
                variable,
                answer.state_names[variable],
                answer.values.tolist(),
                time.perf_counter() - start,
            )
        )
    queue.put(None)


def bench_large(name: str, cap: float, n_evidence: int = 5, seed: int = 0) -> dict:
    from probgen.networks.bayesnet import BayesianNetwork

    ours = BayesianNetwork.from_example(name)
    # evidence on a few variables, states from a forward sample (so it is possible); without
    # evidence pgmpy prunes each query to the target's ancestors and has an easy job
    row = ours.sample(1, seed=seed, as_frame=True).iloc[0]
    chosen = np.random.default_rng(seed).choice(ours.variables, n_evidence, replace=False)
    evidence = {str(v): row[v] for v in chosen}
    start = time.perf_counter()
    marginals = ours.marginals(evidence)
    ours_time = time.perf_counter() - start
    context = mp.get_context("fork")
    queue = context.Queue()
    process = context.Process(
        target=_pgmpy_all_marginals, args=(name, evidence, queue), daemon=True
    )
    start = time.perf_counter()
    process.start()
    done, worst, finished = 0, 0.0, False
    while True:
        remaining = cap - (time.perf_counter() - start)
        if remaining <= 0:
            break
        try:
            item = queue.get(timeout=remaining)
        except Exception:
            break
        if item is None:
            finished = True
            break
        variable, states, values, _ = item
        order = [[str(s) for s in states].index(s) for s in ours.states[variable]]
        worst = max(
            worst, float(np.abs(marginals[variable].numpy() - np.array(values)[order]).max())
        )
        done += 1
    theirs_time = time.perf_counter() - start
    if process.is_alive():
        process.kill()
    process.join()
    return {
        "network": name,
        "n_variables": len(ours.variables),
        "n_evidence": n_evidence,
        "n_queried": len(ours.variables) - n_evidence,
        "probgen_seconds": ours_time,
        "pgmpy_seconds": theirs_time if finished else None,
        "pgmpy_timed_out": not finished,
        "pgmpy_cap_seconds": cap,
        "pgmpy_variables_done": done,
        "max_abs_difference_on_done": worst if done else None,
        "ratio": (theirs_time / ours_time) if finished else None,
        "ratio_lower_bound": theirs_time / ours_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 queries, short caps")
    add_options(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    parser.add_argument("--cap", type=float, default=None, help="pgmpy cap on large networks")
    parser.add_argument(
        "--repeats", type=int, default=5, help="best of this many runs (queries, sampling)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        default=None,
        help="run only these sections and update only their keys in the results file",
    )
    args = parser.parse_args()
    sections = set(args.only or SECTIONS)
    apply_threads(args.threads)
    n_queries = 100 if args.quick else 1000
    cap = args.cap if args.cap is not None else (30.0 if args.quick else 120.0)

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
            "repeats_best_of": args.repeats,
            "threads_option": args.threads,
            "load_modes": load_modes(args.load),
        },
    }
    if "queries" in sections:
        results["queries"] = []
        results["query_api"] = []
    for mode in load_modes(args.load) if "queries" in sections else ():
        for name in ("alarm", "hepar2", "win95pts"):
            with under(mode):
                row = bench_query_api(name, 300, repeats=args.repeats)
            row["load"] = mode
            results["query_api"].append(row)
            print(
                f"query    {name:9s} 300 rows [{mode:6s}]: probgen {row['probgen_seconds']:.4f}s"
                f"  pgmpy {row['pgmpy_seconds']:.2f}s  x{row['ratio']:.0f}  "
                f"max|diff| {row['max_abs_difference']:.1e}",
                flush=True,
            )
            with under(mode):
                row = bench_queries(name, n_queries, repeats=args.repeats)
            row["load"] = mode
            results["queries"].append(row)
            print(
                f"marginals {name:9s} n={n_queries} [{mode:6s}]: probgen "
                f"{row['probgen_seconds']:.3f}s  pgmpy {row['pgmpy_seconds']:.2f}s  "
                f"x{row['throughput_ratio']:.0f}  max|diff| {row['max_abs_difference']:.1e}",
                flush=True,
            )
    if "sampling" in sections:
        row = bench_sampling(100_000, repeats=args.repeats)
        results["sampling"] = row
        print(
            f"sampling alarm 100k: probgen {row['probgen_tensor_seconds']:.3f}s (tensor) "
            f"{row['probgen_dataframe_seconds']:.3f}s (DataFrame)  "
            f"pgmpy {row['pgmpy_seconds']:.2f}s"
            f"  x{row['ratio_tensor']:.0f} / x{row['ratio_dataframe']:.0f}",
            flush=True,
        )
    if "structure" in sections:
        row = bench_structure(5000)
        results["structure"] = row
        print(
            f"structure alarm 5k: probgen {row['probgen_seconds']:.2f}s SHD {row['probgen_shd']} "
            f"(greedy {row['probgen_greedy_seconds']:.2f}s SHD {row['probgen_greedy_shd']})  "
            f"pgmpy {row['pgmpy_seconds']:.2f}s SHD {row['pgmpy_shd']}  x{row['time_ratio']:.1f}",
            flush=True,
        )
    if "large" in sections:
        results["large"] = []
    for name in ("andes", "pathfinder", "munin") if "large" in sections else ():
        row = bench_large(name, cap)
        results["large"].append(row)
        theirs = (
            f"timed out after {cap:.0f}s ({row['pgmpy_variables_done']}/{row['n_queried']} "
            f"variables)"
            if row["pgmpy_timed_out"]
            else f"{row['pgmpy_seconds']:.1f}s"
        )
        print(
            f"exact marginals {name:10s}: probgen {row['probgen_seconds']:.2f}s  pgmpy {theirs}"
            f"  x>={row['ratio_lower_bound']:.0f}  max|diff| {row['max_abs_difference_on_done']}",
            flush=True,
        )
    if args.only and args.out.exists():
        # a partial run keeps the other sections' figures from the last full run
        results = {**json.loads(args.out.read_text()), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
