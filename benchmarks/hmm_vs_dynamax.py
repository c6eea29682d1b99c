"""probgen's HMM in float32 (its default) and float64 against dynamax (JAX) and hmmlearn.

Cases, on the data and starting parameters of `hmm_vs_hmmlearn.py`:
    (a) Gaussian-diagonal EM, 8 states, 4 features, 500 sequences x 200 steps, 20 iterations;
    (c) forward pass (log-likelihood of every sequence), 64 Gaussian states, 4 features,
        200 sequences x 200 steps.
probgen runs with its default settings (no thread setting: its own thread policy), once per
dtype; hmmlearn computes in float64 whatever the input. dynamax (`DiagonalGaussianHMM`,
`fit_em` and a jitted, vmapped `marginal_log_prob`) runs in a subprocess per dtype (JAX's x64
switch is process-wide): it is timed after compilation, and the compile time (first call minus
one timed call) is reported separately. dynamax's m-step is MAP under its default priors, so its
final log-likelihood is close to, not equal to, the others'. dynamax and jax are optional
benchmark dependencies (`pip install dynamax jax`); without them the script says so and skips
them. Per-iteration EM times divide by the iterations each library ran (a float32 fit stops early
if its log-likelihood falls by more than rounding).

Usage:
    python benchmarks/hmm_vs_dynamax.py --quick --out /tmp/hmm_dynamax.json   # a few seconds
    python benchmarks/hmm_vs_dynamax.py                     # full sizes, quiet and loaded
    python benchmarks/hmm_vs_dynamax.py --load quiet --cases a
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _load import LOAD_CHOICES, load_modes, under
from hmm_vs_hmmlearn import (
    as_hmmlearn_data,
    categorical_parameters,
    gaussian_parameters,
    hmmlearn_model,
    simulate,
    timed,
)

import probgen
from probgen.hmm.model import HMM

RESULTS = Path(__file__).resolve().parent / "results" / "hmm_vs_dynamax.json"
DTYPES = ("float32", "float64")


def dynamax_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("dynamax", "jax"))


def cases_data(quick: bool) -> dict[str, dict[str, Any]]:
    """The two cases' data and parameters, drawn as `hmm_vs_hmmlearn.run_cases` draws them."""
    scale = 0.1 if quick else 1.0
    rng = np.random.default_rng(0)
    truth = gaussian_parameters(rng, 8, 4, spread=3.0)
    start = gaussian_parameters(rng, 8, 4, spread=3.0)
    em = {
        "sequences": simulate("gaussian", truth, int(500 * scale), 200, seed=1),
        "start": start,
        "n_iter": 5 if quick else 20,
    }
    # hmm_vs_hmmlearn draws its categorical case's parameters next: keep the same stream.
    categorical_parameters(rng, 16, 32)
    categorical_parameters(rng, 16, 32)
    forward_truth = gaussian_parameters(rng, 64, 4, spread=4.0)
    forward = {
        "sequences": simulate("gaussian", forward_truth, int(200 * scale), 200, seed=3),
        "start": forward_truth,
    }
    return {"a": em, "c": forward}


def probgen_em(case: dict[str, Any], dtype: str) -> dict[str, Any]:
    n_iter = case["n_iter"]
    model = HMM.from_hmmlearn(hmmlearn_model("gaussian", case["start"], n_iter))
    model.max_iter, model.tol = n_iter, 0.0
    model = model.to(getattr(torch, dtype))
    sequences = case["sequences"].to(getattr(torch, dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds, _ = timed(lambda: model.fit(sequences, warm_start=True))
    return {
        "seconds_per_iteration": seconds / model.n_iter_,
        "iterations_run": model.n_iter_,
        "final_log_likelihood": float(model.log_prob(sequences).double().sum()),
    }


def probgen_forward(case: dict[str, Any], dtype: str, repeats: int) -> dict[str, Any]:
    model = HMM.from_hmmlearn(hmmlearn_model("gaussian", case["start"], 1))
    model = model.to(getattr(torch, dtype))
    sequences = case["sequences"].to(getattr(torch, dtype))
    seconds, value = timed(lambda: float(model.log_prob(sequences).double().sum()), repeats)
    return {"seconds": seconds, "log_likelihood": value}


def hmmlearn_em(case: dict[str, Any]) -> dict[str, Any]:
    flat, lengths = as_hmmlearn_data(case["sequences"])
    reference = hmmlearn_model("gaussian", case["start"], case["n_iter"])
    seconds, _ = timed(lambda: reference.fit(flat, lengths))
    iterations = int(reference.monitor_.iter)
    return {
        "seconds_per_iteration": seconds / iterations,
        "iterations_run": iterations,
        "final_log_likelihood": float(reference.score(flat, lengths)),
    }


def hmmlearn_forward(case: dict[str, Any], repeats: int) -> dict[str, Any]:
    flat, lengths = as_hmmlearn_data(case["sequences"])
    reference = hmmlearn_model("gaussian", case["start"], 1)
    seconds, value = timed(lambda: float(reference.score(flat, lengths)), repeats)
    return {"seconds": seconds, "log_likelihood": value}


# ---- dynamax, in a subprocess per dtype -------------------------------------------------------
def dynamax_worker(data_path: str, dtype: str, repeats: int) -> dict[str, Any]:
    """Run inside the subprocess: JAX's x64 flag is set before jax is imported."""
    import jax
    import jax.numpy as jnp
    from dynamax.hidden_markov_model import DiagonalGaussianHMM

    data = np.load(data_path)
    np_dtype = np.dtype(dtype)
    results: dict[str, Any] = {"jax": jax.__version__}

    def initial(prefix: str, n_states: int) -> tuple[Any, Any, Any]:
        hmm = DiagonalGaussianHMM(n_states, data[f"{prefix}_means"].shape[1])
        params, props = hmm.initialize(
            method="prior",
            initial_probs=jnp.asarray(data[f"{prefix}_start_probs"], np_dtype),
            transition_matrix=jnp.asarray(data[f"{prefix}_transition_probs"], np_dtype),
            emission_means=jnp.asarray(data[f"{prefix}_means"], np_dtype),
            emission_scale_diags=jnp.asarray(np.sqrt(data[f"{prefix}_covariances"]), np_dtype),
        )
        return hmm, params, props

    if "em_sequences" in data:
        emissions = jnp.asarray(data["em_sequences"], np_dtype)
        n_iter = int(data["em_n_iter"])
        hmm, params, props = initial("em", data["em_means"].shape[0])

        def fit(iterations: int) -> Any:
            fitted, log_probs = hmm.fit_em(
                params, props, emissions, num_iters=iterations, verbose=False
            )
            log_probs.block_until_ready()
            return fitted

        # fit_em jits its EM step afresh on every call, so each call pays the compilation:
        # the time of n_iter + 1 iterations minus that of one is n_iter iterations, compiled.
        first_call, _ = timed(lambda: fit(1), repeats)
        seconds, fitted = timed(lambda: fit(n_iter + 1), repeats)
        per_iteration = (seconds - first_call) / n_iter
        score = jax.jit(jax.vmap(lambda x: hmm.marginal_log_prob(fitted, x)))
        results["em"] = {
            "seconds_per_iteration": per_iteration,
            "iterations_run": n_iter,
            "compile_seconds": max(0.0, first_call - per_iteration),
            "final_log_likelihood": float(np.asarray(score(emissions), np.float64).sum()),
            "dtype": str(emissions.dtype),
        }
    if "forward_sequences" in data:
        emissions = jnp.asarray(data["forward_sequences"], np_dtype)
        hmm, params, _ = initial("forward", data["forward_means"].shape[0])
        score = jax.jit(jax.vmap(lambda x: hmm.marginal_log_prob(params, x)))
        started = time.perf_counter()
        score(emissions).block_until_ready()
        first_call = time.perf_counter() - started
        seconds, value = timed(
            lambda: float(np.asarray(score(emissions), np.float64).sum()), repeats
        )
        results["forward"] = {
            "seconds": seconds,
            "compile_seconds": max(0.0, first_call - seconds),
            "log_likelihood": value,
            "dtype": str(emissions.dtype),
        }
    return results


def run_dynamax(cases: dict[str, dict[str, Any]], selected: str, dtype: str, repeats: int):
    arrays: dict[str, np.ndarray] = {}
    for key, prefix in (("a", "em"), ("c", "forward")):
        if key not in selected:
            continue
        arrays[f"{prefix}_sequences"] = cases[key]["sequences"].numpy()
        for name, value in cases[key]["start"].items():
            arrays[f"{prefix}_{name}"] = np.asarray(value)
        if key == "a":
            arrays["em_n_iter"] = np.asarray(cases[key]["n_iter"])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "data.npz")
        np.savez(path, **arrays)
        env = dict(os.environ, JAX_ENABLE_X64="1" if dtype == "float64" else "0")
        env.setdefault("JAX_PLATFORMS", "cpu")
        command = [sys.executable, __file__, "--dynamax-worker", path, dtype, str(repeats)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool, selected: str, mode: str, with_dynamax: bool) -> list[dict[str, Any]]:
    cases = cases_data(quick)
    repeats = 3
    rows: list[dict[str, Any]] = []
    with under(mode):
        dynamax = {
            dtype: run_dynamax(cases, selected, dtype, repeats) if with_dynamax else None
            for dtype in DTYPES
        }
        if "a" in selected:
            case = cases["a"]
            row: dict[str, Any] = {
                "case": "(a) gaussian diag EM, 8 states, 4 features",
                "load": mode,
                "n_sequences": int(case["sequences"].shape[0]),
                "length": 200,
                "em_iterations": case["n_iter"],
                "hmmlearn": hmmlearn_em(case),
            }
            for dtype in DTYPES:
                row[f"probgen_{dtype}"] = probgen_em(case, dtype)
                if dynamax[dtype] is not None:
                    row[f"dynamax_{dtype}"] = dynamax[dtype].get("em", dynamax[dtype])
            rows.append(_ratios(row, "seconds_per_iteration"))
        if "c" in selected:
            case = cases["c"]
            row = {
                "case": "(c) forward pass, 64 gaussian states, 4 features",
                "load": mode,
                "n_sequences": int(case["sequences"].shape[0]),
                "length": 200,
                "hmmlearn": hmmlearn_forward(case, repeats),
            }
            for dtype in DTYPES:
                row[f"probgen_{dtype}"] = probgen_forward(case, dtype, repeats)
                if dynamax[dtype] is not None:
                    row[f"dynamax_{dtype}"] = dynamax[dtype].get("forward", dynamax[dtype])
            rows.append(_ratios(row, "seconds"))
    return rows


def _ratios(row: dict[str, Any], key: str) -> dict[str, Any]:
    """Speed-ups of probgen (each dtype) over each reference: their time / probgen's time."""
    for dtype in DTYPES:
        ours = row[f"probgen_{dtype}"][key]
        row[f"speedup_probgen_{dtype}_over_hmmlearn"] = row["hmmlearn"][key] / ours
        for other in DTYPES:
            reference = row.get(f"dynamax_{other}")
            if reference and key in reference:
                row[f"speedup_probgen_{dtype}_over_dynamax_{other}"] = reference[key] / ours
    row["float32_over_float64_time"] = row["probgen_float32"][key] / row["probgen_float64"][key]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--load", choices=LOAD_CHOICES, default="both")
    parser.add_argument("--cases", nargs="+", choices=["a", "c"], default=["a", "c"])
    parser.add_argument("--no-dynamax", action="store_true", help="skip dynamax if installed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--dynamax-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dynamax_worker:
        path, dtype, repeats = args.dynamax_worker
        print(json.dumps(dynamax_worker(path, dtype, int(repeats))))
        return

    with_dynamax = dynamax_available() and not args.no_dynamax
    if not dynamax_available():
        print("dynamax/jax not installed (pip install dynamax jax): comparing hmmlearn only")
    rows = []
    for mode in load_modes(args.load):
        rows.extend(run(args.quick, "".join(args.cases), mode, with_dynamax))
    result = {
        "benchmark": "hmm_vs_dynamax",
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads_default": torch.get_num_threads(),
            "note": "probgen runs with its default settings (its own thread policy); dynamax on "
            "JAX's CPU backend with its default threads, after compilation; hmmlearn is "
            "single-threaded float64. The machine is shared: quote ratios.",
        },
        "versions": {
            "probgen": probgen.__version__,
            "torch": torch.__version__,
            "hmmlearn": importlib.import_module("hmmlearn").__version__,
            "dynamax": importlib.import_module("dynamax").__version__ if with_dynamax else None,
        },
        "cases": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _print(rows)
    print(f"(EM rows: seconds per iteration; written to {args.out})")


def _print(rows: list[dict[str, Any]]) -> None:
    columns = [
        "probgen_float32",
        "probgen_float64",
        "hmmlearn",
        "dynamax_float32",
        "dynamax_float64",
    ]
    print(f"{'case':<50}{'load':>7}" + "".join(f"{name:>17}" for name in columns))
    for row in rows:
        key = "seconds_per_iteration" if "em_iterations" in row else "seconds"
        cells = []
        for name in columns:
            value = (row.get(name) or {}).get(key)
            cells.append(f"{'-' if value is None else format(value, '.4f'):>17}")
        print(f"{row['case']:<50}{row['load']:>7}" + "".join(cells))
        ratios = {k: v for k, v in row.items() if k.startswith("speedup_") or k.endswith("_time")}
        print(
            "    " + ", ".join(f"{k.removeprefix('speedup_')} {v:.2f}" for k, v in ratios.items())
        )
        for name in ("dynamax_float32", "dynamax_float64"):
            if row.get(name) and "compile_seconds" in row[name]:
                print(f"    {name} compile {row[name]['compile_seconds']:.2f} s")


if __name__ == "__main__":
    main()
