"""HSMM against the same model written as an HMM with expanded states (probgen.HMM, hmmlearn).

An HSMM with K states and durations on 1..D is an HMM on K*D states (j, r), r the number of
steps state j still lasts: it starts in (j, d) with probability pi_j p_j(d), counts down
(j, r) -> (j, r - 1) with probability one, and from (j, 1) moves to (k, d) with probability
A_jk p_k(d); each (j, r) emits as j. Its likelihood is the HSMM's, the last segment
right-censored in both (the expanded chain may stop anywhere in its count-down). The benchmark
builds that HMM with `probgen.HMM.set_parameters` (and, the same matrices, hmmlearn's
`GaussianHMM`), checks the log-likelihoods agree and times

- ``log_prob``: the log-likelihood of every sequence (HSMM segment recursion, O(T K D) per
  sequence with K x K transitions, against the expanded HMM's forward pass on K*D states);
- ``em_iteration``: one EM iteration (seconds per iteration over `--iterations` iterations;
  the HSMM from its own random start; the expanded HMMs from the expanded truth, keeping their
  structural zeros. Different parameterisations, so only the time is compared: the expanded
  HMM's EM unties the emissions and durations that the HSMM shares).

Models: `models/hsmm_regimes.py` (2 states, D = 25: 50 expanded states) and a random 4-state
Gaussian HSMM with Poisson durations and D = 60 (240 expanded states).

Usage: python benchmarks/hsmm_vs_expanded_hmm.py [--quick] [--load both] [--threads N]

Writes benchmarks/results/hsmm_vs_expanded_hmm.json and prints a table; times are the best of
`--repeats` runs after a warm-up run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _load import add_options, apply_threads, load_modes, under

from probgen.hmm.model import HMM
from probgen.hmm.semi_markov import HSMM

RESULTS = Path(__file__).resolve().parent / "results" / "hsmm_vs_expanded_hmm.json"


def expanded_parameters(hsmm: HSMM) -> dict[str, np.ndarray]:
    """start (K*D,), transitions (K*D, K*D), means and diagonal covariances (K*D, F) of the
    expanded-state HMM; state (j, r) has index j * D + r - 1."""
    start = hsmm.start_probs.double().numpy()
    moves = hsmm.transition_probs.double().numpy()
    durations = hsmm.duration_probs.double().numpy()  # (K, D), column d - 1 for duration d
    k, d = durations.shape
    transitions = np.zeros((k * d, k * d))
    for j in range(k):
        for r in range(2, d + 1):
            transitions[j * d + r - 1, j * d + r - 2] = 1.0
        transitions[j * d, :] = (moves[j][:, None] * durations).reshape(-1)
    means = hsmm.means.double().numpy()
    covariances = hsmm.covariances.double().numpy()
    return {
        "start": (start[:, None] * durations).reshape(-1),
        "transitions": transitions,
        "means": np.repeat(means, d, axis=0),
        "covariances": np.repeat(covariances.reshape(k, -1), d, axis=0),
    }


def expanded_probgen(hsmm: HSMM, iterations: int) -> HMM:
    p = expanded_parameters(hsmm)
    hmm = HMM(len(p["start"]), "gaussian", max_iter=iterations, tol=0.0, init_params=(),
              covariance_prior=0.0)
    return hmm.double().set_parameters(start_probs=p["start"], transition_probs=p["transitions"],
                                       means=p["means"], covariances=p["covariances"])


def expanded_hmmlearn(hsmm: HSMM, iterations: int):
    from hmmlearn.hmm import GaussianHMM

    p = expanded_parameters(hsmm)
    model = GaussianHMM(len(p["start"]), covariance_type="diag", n_iter=iterations, tol=0.0,
                        init_params="", implementation="scaling")
    model.startprob_, model.transmat_ = p["start"], p["transitions"]
    model.means_, model.covars_ = p["means"], p["covariances"]
    return model


def random_hsmm(n_states: int, max_duration: int, seed: int = 0) -> HSMM:
    generator = torch.Generator().manual_seed(seed)
    moves = torch.rand(n_states, n_states, generator=generator, dtype=torch.float64) + 0.2
    moves.fill_diagonal_(0.0)
    model = HSMM(n_states, "gaussian", n_features=1, duration="poisson",
                 max_duration=max_duration).double()
    return model.set_parameters(
        start_probs=torch.full((n_states,), 1.0 / n_states),
        transition_probs=moves / moves.sum(1, keepdim=True),
        duration_parameters=[[4.0 + 6.0 * j, 0.0] for j in range(n_states)],
        means=[[2.0 * j] for j in range(n_states)],
        covariances=[[1.0] for _ in range(n_states)],
    )


def best_of(repeats: int, function):
    """(best time of `repeats` runs after one untimed warm-up run, the last result)."""
    function()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def bench(name: str, truth: HSMM, n_sequences: int, length: int, iterations: int,
          repeats: int) -> dict:
    sequences = truth.sample(n_sequences, length=length, seed=0)
    flat = sequences.reshape(-1, sequences.shape[-1]).numpy()
    lengths = [length] * n_sequences
    expanded = expanded_probgen(truth, iterations)
    learner = expanded_hmmlearn(truth, iterations)

    hsmm_time, hsmm_lp = best_of(repeats, lambda: truth.log_prob(sequences))
    hmm_time, hmm_lp = best_of(repeats, lambda: expanded.log_prob(sequences))
    learn_time, learn_total = best_of(repeats, lambda: learner.score(flat, lengths))
    row = {
        "model": name, "n_states": truth.n_states, "max_duration": truth.max_duration,
        "expanded_states": expanded.n_states, "n_sequences": n_sequences, "length": length,
        "log_prob": {
            "hsmm_seconds": hsmm_time, "expanded_probgen_seconds": hmm_time,
            "expanded_hmmlearn_seconds": learn_time,
            "max_abs_difference_probgen": float((hsmm_lp - hmm_lp).abs().max()),
            "abs_difference_total_hmmlearn": abs(float(hsmm_lp.sum()) - float(learn_total)),
        },
    }

    def hsmm_em() -> float:
        model = HSMM(truth.n_states, "gaussian", duration=truth.duration,
                     max_duration=truth.max_duration, max_iter=iterations, tol=0.0, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stopping at max_iter is the point here
            model.double().fit(sequences)
        return model.n_iter_

    def hmm_em() -> int:
        model = expanded_probgen(truth, iterations)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(sequences)
        return model.n_iter_

    def hmmlearn_em() -> int:
        model = expanded_hmmlearn(truth, iterations)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(flat, lengths)
        return model.monitor_.iter

    em = {}
    for label, function in (("hsmm", hsmm_em), ("expanded_probgen", hmm_em),
                            ("expanded_hmmlearn", hmmlearn_em)):
        seconds, n_iter = best_of(repeats, function)
        em[f"{label}_seconds_per_iteration"] = seconds / max(int(n_iter), 1)
        em[f"{label}_iterations"] = int(n_iter)
    row["em_iteration"] = em
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, a seconds run")
    parser.add_argument("--iterations", type=int, default=5, help="EM iterations timed")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    add_options(parser)
    args = parser.parse_args()
    apply_threads(args.threads)
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # its degenerate-fit notices
    n_sequences, length = (4, 60) if args.quick else (50, 300)
    iterations = 2 if args.quick else args.iterations
    repeats = 1 if args.quick else args.repeats

    import hmmlearn
    from probgen.recipes import hsmm_regimes

    import probgen

    results: dict = {
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "probgen": probgen.__version__, "torch": torch.__version__,
            "hmmlearn": hmmlearn.__version__, "quick": args.quick,
            "repeats_best_of": repeats, "threads_option": args.threads,
            "load_modes": load_modes(args.load),
        },
        "models": [],
    }
    models = [("hsmm_regimes", hsmm_regimes.true_model()),
              ("random_4_states_d60", random_hsmm(4, 60))]
    print(f"{'model':20} {'load':6} {'KD':>4} | log_prob s: {'hsmm':>8} {'hmm':>8} "
          f"{'hmmlearn':>8} {'max diff':>9} | EM s/iter: {'hsmm':>8} {'hmm':>8} {'hmmlearn':>8}")
    for mode in load_modes(args.load):
        for name, truth in models:
            with under(mode):
                row = bench(name, truth, n_sequences, length, iterations, repeats)
            row["load"] = mode
            results["models"].append(row)
            lp, em = row["log_prob"], row["em_iteration"]
            print(f"{name:20} {mode:6} {row['expanded_states']:4d} |             "
                  f"{lp['hsmm_seconds']:8.4f} {lp['expanded_probgen_seconds']:8.4f} "
                  f"{lp['expanded_hmmlearn_seconds']:8.4f} "
                  f"{lp['max_abs_difference_probgen']:9.2e} |            "
                  f"{em['hsmm_seconds_per_iteration']:8.4f} "
                  f"{em['expanded_probgen_seconds_per_iteration']:8.4f} "
                  f"{em['expanded_hmmlearn_seconds_per_iteration']:8.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
