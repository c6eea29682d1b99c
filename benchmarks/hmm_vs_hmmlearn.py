"""probgen's HMM against hmmlearn (implementation="scaling") on the same data, side by side.

Cases (issue 2):
    (a) Gaussian, diagonal covariances, 8 states, 4 features, 500 sequences x 200 steps, 20 EM
        iterations;
    (b) categorical, 16 states, 32 symbols, 1000 sequences x 100 steps, 20 EM iterations;
    (c) forward pass (log-likelihood of every sequence), 64 Gaussian states, 4 features,
        200 sequences x 200 steps: probgen's `log_prob` against hmmlearn's `score`, each from
        the raw observations (input checks, emission densities and the forward pass).
Both libraries start EM from the same parameters, so their final log-likelihoods must agree
(to 1e-6 relative, float64). By default torch's thread count is left alone, so the library's
own thread policy is measured as a user gets it; every case runs once per thread count given
with `--threads` (hmmlearn is single-threaded; it is timed again in each round, on the same
data), and once quiet and once beside a CPU-burning process (`--load`, default both; each
case carries "load").

pomegranate (1.x, `pomegranate.hmm.DenseHMM`) is run in the same cases on the same data from the
same starting parameters when it is installed (`pip install pomegranate==1.1.2`; it leaves torch
alone). Its model differs from hmmlearn's and probgen's in one way that no option turns off: it
has an explicit end state whose probabilities EM learns, and every transition row is normalised
together with its end probability. The benchmark starts it with all end probabilities 1 (so its
first E-step is the same model), so its final log-likelihood includes a learned log P(end) per
sequence and is not expected to equal probgen's. The JSON therefore also gives the standard
HMM log-likelihood of pomegranate's fitted parameters (end state dropped, transition rows
renormalised), scored by probgen. pomegranate has no covariance floor or pseudocounts by
default; hmmlearn's (and probgen's matching) defaults add a 1e-3 covariance floor.
pomegranate runs in float64 here (the model is cast with `.to(torch.float64)`; its own default
is float32, `--pomegranate-dtype float32`); in pomegranate 1.1.2 `Categorical` keeps its
sufficient-statistic buffers in float32 whatever the model dtype. In the forward-pass case its
end probabilities are 1, so its `log_probability` is the same quantity as probgen's.

Usage:
    python benchmarks/hmm_vs_hmmlearn.py                # full sizes, default threads, both loads
    python benchmarks/hmm_vs_hmmlearn.py --quick --out /tmp/hmm.json   # a few seconds
    python benchmarks/hmm_vs_hmmlearn.py --threads 1 2 --load quiet    # explicit thread counts
    python benchmarks/hmm_vs_hmmlearn.py --no-pomegranate   # skip pomegranate if installed
    python benchmarks/hmm_vs_hmmlearn.py --cases a --out /tmp/a.json   # case (a) only
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
from _load import LOAD_CHOICES, load_modes, under
from hmmlearn import hmm as hmmlearn_hmm

import probgen
from probgen.core.errors import DataError
from probgen.hmm.model import HMM

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


def pomegranate_available() -> bool:
    return importlib.util.find_spec("pomegranate") is not None


def pomegranate_model(family: str, parameters: dict, n_iter: int, dtype: torch.dtype) -> Any:
    """A pomegranate DenseHMM with the given starting parameters (end probabilities all 1).

    End probabilities of 1 make pomegranate's likelihood the standard HMM likelihood for the
    starting parameters; its EM then learns them (see the module docstring).
    """
    from pomegranate.distributions import Categorical, Normal
    from pomegranate.hmm import DenseHMM

    n_states = len(parameters["start_probs"])
    if family == "gaussian":
        states = [
            Normal(
                means=torch.as_tensor(means, dtype=dtype),
                covs=torch.as_tensor(variances, dtype=dtype),
                covariance_type="diag",
            )
            for means, variances in zip(parameters["means"], parameters["covariances"])
        ]
    else:
        # pomegranate's Categorical takes probabilities per feature: (1, n_symbols).
        states = [
            Categorical(probs=torch.as_tensor(probs, dtype=dtype)[None, :])
            for probs in parameters["emission_probs"]
        ]
    model = DenseHMM(
        states,
        edges=torch.as_tensor(parameters["transition_probs"], dtype=dtype),
        starts=torch.as_tensor(parameters["start_probs"], dtype=dtype),
        ends=torch.ones(n_states, dtype=dtype),
        max_iter=n_iter,
        tol=0.0,
        inertia=0.0,
        random_state=0,
    )
    # Run exactly max_iter iterations, like hmmlearn's tol=-inf. The constructor refuses a
    # negative tol, and tol=0 would stop after the first M-step: learning the end
    # probabilities (from 1 to about 1/length) lowers pomegranate's own log-likelihood.
    model.tol = float("-inf")
    # pomegranate takes its dtype from its first parameter, a float32 device marker: cast all.
    return model.to(dtype)


def as_pomegranate_data(family: str, sequences: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(n, length, dims) floats, or integer symbols as (n, length, 1), as pomegranate wants."""
    n_sequences, length = sequences.shape[:2]
    values = sequences.reshape(n_sequences, length, -1)
    return values.long() if family == "categorical" else values.to(dtype)


def pomegranate_standard_parameters(family: str, model: Any) -> dict[str, np.ndarray]:
    """pomegranate's fitted parameters as a standard HMM: end state dropped, rows renormalised."""
    transitions = torch.exp(model.edges.detach().double())
    parameters = {
        "start_probs": torch.exp(model.starts.detach().double()).numpy(),
        "transition_probs": (transitions / transitions.sum(-1, keepdim=True)).numpy(),
    }
    states = model.distributions
    if family == "gaussian":
        parameters["means"] = torch.stack([s.means.detach() for s in states]).double().numpy()
        parameters["covariances"] = torch.stack([s.covs.detach() for s in states]).double().numpy()
    else:
        probs = torch.stack([s.probs.detach()[0] for s in states]).double()
        parameters["emission_probs"] = (probs / probs.sum(-1, keepdim=True)).numpy()
    return parameters


def pomegranate_em(family, start, sequences, n_iter, dtype, ours_score) -> dict[str, Any]:
    data = as_pomegranate_data(family, sequences, dtype)
    model = pomegranate_model(family, start, n_iter, dtype)
    m_steps = []
    m_step = model.from_summaries

    def counted_m_step() -> None:
        m_steps.append(1)
        m_step()

    # An instance attribute shadows the method, so fit's self.from_summaries() is counted.
    model.from_summaries = counted_m_step
    started = time.perf_counter()
    try:
        model.fit(data)
    except ValueError as error:
        # pomegranate 1.1.2 has no covariance floor (Normal's min_cov is accepted but never
        # applied), so a starved state can end its fit with "Variances must be positive".
        return {
            "pomegranate_dtype": str(model.dtype).replace("torch.", ""),
            "pomegranate_iterations_run": len(m_steps),
            "pomegranate_error": f"fit failed after {len(m_steps)} M-steps "
            f"({time.perf_counter() - started:.2f} s): {type(error).__name__}: {error}",
        }
    seconds = time.perf_counter() - started
    own_score = float(model.log_probability(data).sum())
    n_states = len(start["start_probs"])
    try:
        standard = pomegranate_standard_parameters(family, model)
        as_standard = HMM(n_states, family, covariance="diag").double().set_parameters(**standard)
        standard_score = as_standard.score(sequences)
    except DataError as error:  # a degenerate pomegranate fit is a finding too
        standard_score, standard_error = None, f"{type(error).__name__}: {error}"
    else:
        standard_error = None
    return {
        "pomegranate_dtype": str(model.dtype).replace("torch.", ""),
        "pomegranate_iterations_run": len(m_steps),
        "pomegranate_seconds_per_iteration": seconds / n_iter,
        "pomegranate_final_log_likelihood": own_score,
        "pomegranate_final_log_likelihood_note": "pomegranate's own log_probability: includes "
        "the learned end-state term log P(end | last state) per sequence",
        "relative_log_likelihood_difference_pomegranate": abs(own_score - ours_score)
        / abs(ours_score),
        "pomegranate_fit_as_standard_hmm_log_likelihood": standard_score,
        "pomegranate_fit_as_standard_hmm_error": standard_error,
        "relative_log_likelihood_difference_pomegranate_standard": None
        if standard_score is None
        else abs(standard_score - ours_score) / abs(ours_score),
        "pomegranate_min_end_prob": float(torch.exp(model.ends.detach()).min()),
        "pomegranate_max_end_prob": float(torch.exp(model.ends.detach()).max()),
    }


def pomegranate_forward(parameters, sequences, dtype, repeats) -> dict[str, Any]:
    data = as_pomegranate_data("gaussian", sequences, dtype)
    model = pomegranate_model("gaussian", parameters, 1, dtype)
    seconds, value = timed(lambda: float(model.log_probability(data).sum()), repeats)
    return {
        "pomegranate_dtype": str(model.dtype).replace("torch.", ""),
        "pomegranate_seconds": seconds,
        "pomegranate_log_likelihood": value,
    }


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


def em_case(name, family, parameters, start, n_sequences, length, n_iter, seed, pomegranate):
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
    extra = {}
    if pomegranate is not None:
        extra = pomegranate_em(family, start, sequences, n_iter, pomegranate, ours_score)
        if "pomegranate_error" not in extra:
            extra["ratio_pomegranate_over_probgen"] = (
                extra["pomegranate_seconds_per_iteration"] * n_iter / ours_seconds
            )
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
        **extra,
    }


def forward_case(name, parameters, n_sequences, length, seed, repeats, pomegranate):
    sequences = simulate("gaussian", parameters, n_sequences, length, seed)
    flat, lengths = as_hmmlearn_data(sequences)
    reference = hmmlearn_model("gaussian", parameters, 1)
    ours = HMM.from_hmmlearn(reference)
    theirs_seconds, theirs = timed(lambda: float(reference.score(flat, lengths)), repeats)
    ours_seconds, ours_value = timed(lambda: float(ours.log_prob(sequences).sum()), repeats)
    extra = {}
    if pomegranate is not None:
        extra = pomegranate_forward(parameters, sequences, pomegranate, repeats)
        extra["ratio_pomegranate_over_probgen"] = extra["pomegranate_seconds"] / ours_seconds
        extra["relative_log_likelihood_difference_pomegranate"] = abs(
            extra["pomegranate_log_likelihood"] - ours_value
        ) / abs(ours_value)
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
        **extra,
    }


def run_cases(
    quick: bool, pomegranate: torch.dtype | None, selected: str = "abc"
) -> list[dict[str, Any]]:
    """The `selected` cases once, at the current torch thread count (pomegranate: its dtype)."""
    scale = 0.1 if quick else 1.0
    n_iter = 5 if quick else 20
    # Every case's parameters are drawn in order whichever are run, so a case's data and
    # starting point do not depend on the selection.
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    cases = []
    truth = gaussian_parameters(rng, 8, 4, spread=3.0)
    start = gaussian_parameters(rng, 8, 4, spread=3.0)
    if "a" in selected:
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
                pomegranate=pomegranate,
            )
        )
    truth = categorical_parameters(rng, 16, 32)
    start = categorical_parameters(rng, 16, 32)
    if "b" in selected:
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
                pomegranate=pomegranate,
            )
        )
    truth = gaussian_parameters(rng, 64, 4, spread=4.0)
    if "c" in selected:
        cases.append(
            forward_case(
                "(c) forward pass, 64 gaussian states, 4 features",
                truth,
                int(200 * scale),
                200,
                seed=3,
                repeats=3,
                pomegranate=pomegranate,
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
        default=None,
        help="torch intra-op thread counts to run every case with (default: torch's own, "
        "so probgen's thread policy is measured)",
    )
    parser.add_argument(
        "--load",
        choices=LOAD_CHOICES,
        default="both",
        help="quiet machine, beside a CPU-burning process, or both (default both)",
    )
    parser.add_argument(
        "--no-pomegranate", action="store_true", help="skip pomegranate even when installed"
    )
    parser.add_argument(
        "--pomegranate-dtype",
        choices=["float64", "float32"],
        default="float64",
        help="dtype pomegranate runs in (default float64, as probgen and hmmlearn here)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=["a", "b", "c"],
        default=["a", "b", "c"],
        help="which cases to run (default: all three; the same data whichever are chosen)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    pomegranate = None
    if pomegranate_available() and not args.no_pomegranate:
        pomegranate = getattr(torch, args.pomegranate_dtype)
    cases = []
    for mode in load_modes(args.load):
        for threads in args.threads or [None]:
            if threads is not None:
                torch.set_num_threads(threads)
            with under(mode):
                found = run_cases(args.quick, pomegranate, "".join(args.cases))
            cases.extend({**case, "load": mode} for case in found)

    result = {
        "benchmark": "hmm_vs_hmmlearn",
        "quick": args.quick,
        "cases_run": args.cases,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads or "torch default",
            "load_modes": load_modes(args.load),
            "note": "each case carries the torch intra-op thread count it ran with. probgen "
            "runs small problems (probgen.hmm.inference.THREADED_STEP_WORK), input checks "
            "included, on one intra-op thread whatever the setting; hmmlearn is "
            "single-threaded C++. The machine is shared with other jobs, so quote the ratios.",
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "versions": {
            "probgen": probgen.__version__,
            "torch": torch.__version__,
            "hmmlearn": importlib.import_module("hmmlearn").__version__,
            "pomegranate": _pomegranate_version(args.no_pomegranate),
        },
        "dtype": "float64",
        "pomegranate_dtype": None if pomegranate is None else args.pomegranate_dtype,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"cpus {os.cpu_count()}; pomegranate: {result['versions']['pomegranate']}")
    header = (
        f"{'case':<52}{'load':>7}{'threads':>8}{'probgen s':>11}{'hmmlearn s':>12}"
        f"{'speedup':>9}{'rel. dLL':>11}"
    )
    print(header)
    for case in cases:
        ours = case.get("probgen_seconds_per_iteration", case.get("probgen_seconds"))
        theirs = case.get("hmmlearn_seconds_per_iteration", case.get("hmmlearn_seconds"))
        print(
            f"{case['case']:<52}{case['load']:>7}{case['torch_threads']:>8}{ours:>11.4f}"
            f"{theirs:>12.4f}{case['speedup_hmmlearn_over_probgen']:>8.1f}x"
            f"{case['relative_log_likelihood_difference']:>11.1e}"
        )
    print(f"(EM rows: seconds per iteration; written to {args.out})")
    if pomegranate is not None:
        print_pomegranate_table(cases, args.pomegranate_dtype)


def print_pomegranate_table(cases: list[dict[str, Any]], dtype: str) -> None:
    print(f"\npomegranate ({dtype}) on the same data and starting parameters")
    print(
        f"{'case':<52}{'threads':>8}{'pomegr. s':>11}{'pg/probgen':>11}{'rel. dLL':>10}"
        f"{'std. dLL':>10}{'iters':>6}"
    )
    for case in cases:
        if "pomegranate_error" in case:
            print(f"{case['case']:<52}{case['torch_threads']:>8}  {case['pomegranate_error']}")
            continue
        seconds = case.get("pomegranate_seconds_per_iteration", case.get("pomegranate_seconds"))
        standard = case.get("relative_log_likelihood_difference_pomegranate_standard")
        print(
            f"{case['case']:<52}{case['torch_threads']:>8}{seconds:>11.4f}"
            f"{case['ratio_pomegranate_over_probgen']:>10.1f}x"
            f"{case['relative_log_likelihood_difference_pomegranate']:>10.1e}"
            f"{'-' if standard is None else format(standard, '.1e'):>10}"
            f"{case.get('pomegranate_iterations_run', '-'):>6}"
        )
    print(
        "(rel. dLL: pomegranate's own final log-likelihood vs probgen's, it includes a learned "
        "end-state term; std. dLL: pomegranate's fitted parameters scored as a standard HMM)"
    )


def _pomegranate_version(skipped: bool = False) -> str:
    if importlib.util.find_spec("pomegranate") is None:
        return "not installed (not compared)"
    if skipped:
        return importlib.import_module("pomegranate").__version__ + " (skipped: --no-pomegranate)"
    return importlib.import_module("pomegranate").__version__


if __name__ == "__main__":
    main()
