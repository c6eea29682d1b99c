"""Input-output HMM against a plain probgen HMM and hmmlearn: held-out log-likelihood.

The data are the `io_hmm` recipe's (`probgen.recipes.io_hmm`): two Gaussian regimes whose
switching is driven by two covariates per step. Every model is fitted on the same training
sequences and scored on held-out sequences simulated from the same process with fresh inputs:

- probgen `HMM(2, "gaussian", transition_inputs=2)` (generalised EM, uses the inputs);
- probgen `HMM(2, "gaussian")` (Baum-Welch, ignores the inputs);
- hmmlearn `GaussianHMM(2, "diag")` (Baum-Welch; hmmlearn has no input-driven transitions);
- the generating model itself (the oracle: the best any fit can expect on average).

The headline figure is the held-out log-likelihood per step of each, and the input-output
HMM's gain over hmmlearn per step. The fit seconds are reported too, quiet and beside a
CPU-burning process (`--load`, default both); the machine is shared, so quote them loosely.
Also reported: the largest error of the fitted input weights against the generating ones,
after matching the states by their variances.

Usage:
    python benchmarks/io_hmm.py                 # 200 training sequences x 100 steps
    python benchmarks/io_hmm.py --quick --out /tmp/io_hmm.json   # a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _load import LOAD_CHOICES, load_modes, under
from hmmlearn import hmm as hmmlearn_hmm
from probgen.recipes import io_hmm

import probgen
from probgen.hmm.model import HMM

RESULTS = Path(__file__).resolve().parent / "results" / "io_hmm.json"


def run(quick: bool) -> dict[str, Any]:
    n_train, n_test, length = (20, 20, 50) if quick else (200, 200, 100)
    train, train_inputs = io_hmm.data("train", seed=0, n_sequences=n_train, length=length)
    test, test_inputs = io_hmm.data("test", seed=0, n_sequences=n_test, length=length)
    n_test_steps = n_test * length
    max_iter = 30 if quick else 200
    results: dict[str, Any] = {"n_train": n_train, "n_test": n_test, "length": length}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter warnings of the quick run
        # Warm-up: the first torch optimiser of a process imports torch._dynamo (seconds).
        io_hmm.build(max_iter=1, n_init=1).fit(train[:2], inputs=train_inputs[:2])
        began = time.perf_counter()
        driven = io_hmm.build(max_iter=max_iter).fit(train, inputs=train_inputs)
        results["io_hmm_fit_seconds"] = time.perf_counter() - began
        began = time.perf_counter()
        plain = HMM(2, "gaussian", n_init=2, max_iter=max_iter, tol=1e-6, seed=0).double()
        plain.fit(train)
        results["plain_hmm_fit_seconds"] = time.perf_counter() - began
        reference = hmmlearn_hmm.GaussianHMM(
            2, "diag", n_iter=max_iter, tol=1e-6 * n_train * length, random_state=0
        )
        began = time.perf_counter()
        reference.fit(train.reshape(-1, 1).numpy(), lengths=[length] * n_train)
        results["hmmlearn_fit_seconds"] = time.perf_counter() - began

    scores = {
        "io_hmm": driven.score(test, inputs=test_inputs),
        "plain_hmm": plain.score(test),
        "hmmlearn": float(reference.score(test.reshape(-1, 1).numpy(), lengths=[length] * n_test)),
        "generating_model": io_hmm.true_model().score(test, inputs=test_inputs),
    }
    results["held_out_log_likelihood_per_step"] = {
        name: value / n_test_steps for name, value in scores.items()
    }
    results["io_hmm_gain_over_hmmlearn_per_step"] = (
        scores["io_hmm"] - scores["hmmlearn"]
    ) / n_test_steps
    order = driven.covariances.reshape(2, -1)[:, 0].argsort()  # calm state first, as the truth
    fitted = driven.transition_input_weights[order][:, :, order]
    truth = torch.tensor(io_hmm.TRUE_PARAMETERS["transition_input_weights"], dtype=torch.float64)
    results["io_hmm_weights_max_abs_error"] = float((fitted - truth).abs().max())
    results["io_hmm_fitted_weights"] = fitted.tolist()
    results["io_hmm_iterations"] = driven.n_iter_
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument(
        "--load",
        choices=LOAD_CHOICES,
        default="both",
        help="quiet machine, beside a CPU-burning process, or both (default both)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = []
    for mode in load_modes(args.load):
        with under(mode):
            runs.append({**run(args.quick), "load": mode})
    result = {
        "benchmark": "io_hmm",
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_modes": load_modes(args.load),
            "note": "log-likelihoods are the same in every load mode (seeded); only the "
            "seconds differ. The machine is shared with other jobs.",
        },
        "versions": {
            "probgen": probgen.__version__,
            "torch": torch.__version__,
            "hmmlearn": __import__("hmmlearn").__version__,
            "numpy": np.__version__,
        },
        "dtype": "float64",
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for entry in runs:
        per_step = entry["held_out_log_likelihood_per_step"]
        print(
            f"[{entry['load']}] held-out log-likelihood per step: "
            + ", ".join(f"{name} {value:.4f}" for name, value in per_step.items())
        )
        print(
            f"[{entry['load']}] fit seconds: io_hmm {entry['io_hmm_fit_seconds']:.2f}, plain "
            f"{entry['plain_hmm_fit_seconds']:.2f}, hmmlearn {entry['hmmlearn_fit_seconds']:.2f}; "
            f"weights max abs error {entry['io_hmm_weights_max_abs_error']:.3f}"
        )


if __name__ == "__main__":
    main()
