"""probgen's HMM against hmmlearn (implementation="scaling") on the same data, side by side.

Cases (issue 2):
    (a) Gaussian, diagonal covariances, 8 states, 4 features, 500 sequences x 200 steps, 20 EM
        iterations;
    (b) categorical, 16 states, 32 symbols, 1000 sequences x 100 steps, 20 EM iterations;
    (c) forward pass (log-likelihood of every sequence), 64 Gaussian states, 4 features,
        200 sequences x 200 steps: probgen's `log_prob` against hmmlearn's `score`, each from
        the raw observations (input checks, emission densities and the forward pass).
Both libraries start EM from the same parameters, so their final log-likelihoods must agree
(to 1e-6 relative, float64). pomegranate is compared when it is installed. Every case runs once
per torch intra-op thread count given with `--threads` (hmmlearn is single-threaded; it is
timed again in each round, on the same data).

Usage:
    python benchmarks/hmm_vs_hmmlearn.py                # full sizes, 1 and 2 torch threads
    python benchmarks/hmm_vs_hmmlearn.py --quick        # a few seconds
    python benchmarks/hmm_vs_hmmlearn.py --threads 2    # one thread count only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hmmlearn import hmm as hmmlearn_hmm

import probgen
from probgen.graphical.hmm import HMM

RESULTS = Path(__file__).resolve().parent / "results" / "hmm_vs_hmmlearn.json"


def random_probs(rng: np.random.Generator, *shape: int) -> np.ndarray:
    values = rng.uniform(0.2, 1.0, size=shape)
    return values / values.sum(-1, keepdims=True)


def sticky(rng: np.random.Generator, n_states: int) -> np.ndarray:
    return 0.7 * np.eye(n_states) + 0.3 * random_probs(rng, n_states, n_states)


def gaussian_parameters(rng, n_states, n_features, spread):
    return dict(
        start_probs=random_probs(rng, n_states),
        transition_probs=sticky(rng, n_states),
        means=rng.normal(scale=spread, size=(n_states, n_features)),
        covariances=rng.uniform(0.5, 1.5, size=(n_states, n_features)),
    )


def categorical_parameters(rng, n_states, n_symbols):
    peaked = random_probs(rng, n_states, n_symbols) ** 2
    return dict(
        start_probs=random_probs(rng, n_states),
        transition_probs=sticky(rng, n_states),
        emission_probs=peaked / peaked.sum(-1, keepdims=True),
    )


def simulate(family: str, parameters: dict, n_sequences: int, length: int, seed: int):
    n_states = len(parameters["start_probs"])
    model = HMM(n_states, family, covariance="diag").double().set_parameters(**parameters)
    return model.sample(n_sequences, length=length, seed=seed)


def hmmlearn_model(family: str, parameters: dict, n_iter: int) -> Any:
    n_states = len(parameters["start_probs"])
    common = dict(
        n_components=n_states,
        n_iter=n_iter,
        tol=-np.inf,
        init_params="",
        implementation="scaling",
    )
    if family == "gaussian":
        model = hmmlearn_hmm.GaussianHMM(covariance_type="diag", **common)
        model.n_features = parameters["means"].shape[1]
        model.means_ = parameters["means"].copy()
        model.covars_ = parameters["covariances"].copy()
    else:
        model = hmmlearn_hmm.CategoricalHMM(
            n_features=parameters["emission_probs"].shape[1], **common
        )
        model.emissionprob_ = parameters["emission_probs"].copy()
    model.startprob_ = parameters["start_probs"].copy()
    model.transmat_ = parameters["transition_probs"].copy()
    return model


def as_hmmlearn_data(sequences: torch.Tensor) -> tuple[np.ndarray, list[int]]:
    n_sequences, length = sequences.shape[:2]
    flat = sequences.reshape(n_sequences * length, -1).numpy()
    return flat, [length] * n_sequences


def timed(function, repeats: int = 1) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def em_case(name, family, parameters, start, n_sequences, length, n_iter, seed):
    sequences = simulate(family, parameters, n_sequences, length, seed)
    flat, lengths = as_hmmlearn_data(sequences)
    reference = hmmlearn_model(family, start, n_iter)
    theirs_seconds, _ = timed(lambda: reference.fit(flat, lengths))
    ours = HMM.from_hmmlearn(hmmlearn_model(family, start, n_iter), max_iter=n_iter, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", probgen.ConvergenceWarning)
        ours_seconds, _ = timed(lambda: ours.fit(sequences, warm_start=True))
    ours_score = ours.score(sequences)
    theirs_score = float(reference.score(flat, lengths))
    return {
        "case": name,
        "n_sequences": n_sequences,
        "length": length,
        "n_states": len(start["start_probs"]),
        "em_iterations": n_iter,
        "probgen_iterations_run": ours.n_iter_,
        "hmmlearn_iterations_run": int(reference.monitor_.iter),
        "probgen_seconds_per_iteration": ours_seconds / n_iter,
        "hmmlearn_seconds_per_iteration": theirs_seconds / n_iter,
        "speedup_hmmlearn_over_probgen": theirs_seconds / ours_seconds,
        "ratio_ours_over_theirs": ours_seconds / theirs_seconds,
        "probgen_final_log_likelihood": ours_score,
        "hmmlearn_final_log_likelihood": theirs_score,
        "relative_log_likelihood_difference": abs(ours_score - theirs_score) / abs(theirs_score),
    }


def forward_case(name, parameters, n_sequences, length, seed, repeats):
    sequences = simulate("gaussian", parameters, n_sequences, length, seed)
    flat, lengths = as_hmmlearn_data(sequences)
    reference = hmmlearn_model("gaussian", parameters, 1)
    ours = HMM.from_hmmlearn(reference)
    theirs_seconds, theirs = timed(lambda: float(reference.score(flat, lengths)), repeats)
    ours_seconds, ours_value = timed(lambda: float(ours.log_prob(sequences).sum()), repeats)
    return {
        "case": name,
        "n_sequences": n_sequences,
        "length": length,
        "n_states": len(parameters["start_probs"]),
        "probgen_seconds": ours_seconds,
        "hmmlearn_seconds": theirs_seconds,
        "speedup_hmmlearn_over_probgen": theirs_seconds / ours_seconds,
        "ratio_ours_over_theirs": ours_seconds / theirs_seconds,
        "probgen_log_likelihood": ours_value,
        "hmmlearn_log_likelihood": theirs,
        "relative_log_likelihood_difference": abs(ours_value - theirs) / abs(theirs),
    }


def run_cases(quick: bool) -> list[dict[str, Any]]:
    """Every case once, at the current torch thread count."""
    scale = 0.1 if quick else 1.0
    n_iter = 5 if quick else 20
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    cases = []
    truth = gaussian_parameters(rng, 8, 4, spread=3.0)
    start = gaussian_parameters(rng, 8, 4, spread=3.0)
    cases.append(
        em_case(
            "(a) gaussian diag EM, 8 states, 4 features",
            "gaussian",
            truth,
            start,
            int(500 * scale),
            200,
            n_iter,
            seed=1,
        )
    )
    truth = categorical_parameters(rng, 16, 32)
    start = categorical_parameters(rng, 16, 32)
    cases.append(
        em_case(
            "(b) categorical EM, 16 states, 32 symbols",
            "categorical",
            truth,
            start,
            int(1000 * scale),
            100,
            n_iter,
            seed=2,
        )
    )
    truth = gaussian_parameters(rng, 64, 4, spread=4.0)
    cases.append(
        forward_case(
            "(c) forward pass, 64 gaussian states, 4 features",
            truth,
            int(200 * scale),
            200,
            seed=3,
            repeats=3,
        )
    )
    return [{"torch_threads": threads, **case} for case in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="torch intra-op thread counts to run every case with (default: 1 2)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cases = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        cases.extend(run_cases(args.quick))

    result = {
        "benchmark": "hmm_vs_hmmlearn",
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "note": "each case carries the torch intra-op thread count it ran with. probgen "
            "runs small problems (probgen.inference.hmm.THREADED_STEP_WORK), input checks "
            "included, on one intra-op thread whatever the setting; hmmlearn is "
            "single-threaded C++. The machine is shared with other jobs, so quote the ratios.",
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "versions": {
            "probgen": probgen.__version__,
            "torch": torch.__version__,
            "hmmlearn": importlib.import_module("hmmlearn").__version__,
            "pomegranate": _pomegranate_version(),
        },
        "dtype": "float64",
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"cpus {os.cpu_count()}; pomegranate: {result['versions']['pomegranate']}")
    header = (
        f"{'case':<52}{'threads':>8}{'probgen s':>11}{'hmmlearn s':>12}{'speedup':>9}"
        f"{'rel. dLL':>11}"
    )
    print(header)
    for case in cases:
        ours = case.get("probgen_seconds_per_iteration", case.get("probgen_seconds"))
        theirs = case.get("hmmlearn_seconds_per_iteration", case.get("hmmlearn_seconds"))
        print(
            f"{case['case']:<52}{case['torch_threads']:>8}{ours:>11.4f}{theirs:>12.4f}"
            f"{case['speedup_hmmlearn_over_probgen']:>8.1f}x"
            f"{case['relative_log_likelihood_difference']:>11.1e}"
        )
    print(f"(EM rows: seconds per iteration; written to {args.out})")


def _pomegranate_version() -> str:
    if importlib.util.find_spec("pomegranate") is None:
        return "not installed (not compared)"
    return importlib.import_module("pomegranate").__version__


if __name__ == "__main__":
    main()
