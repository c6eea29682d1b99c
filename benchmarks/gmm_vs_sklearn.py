"""probgen's GaussianMixture side by side with scikit-learn's, in one run on the same data.

1. EM: for each case (n points, D features, K components) and covariance type ("diag", "full",
   "spherical"), both libraries start from the same parameters (scikit-learn's `weights_init`,
   `means_init`, `precisions_init`; probgen's `set_parameters` + `fit(warm_start=True)`) and run
   exactly `iterations` EM iterations (tol=0: neither stops early). Seconds per EM iteration =
   (best time of an `iterations`-iteration fit - best time of a 1-iteration fit) /
   (iterations - 1), which removes each library's fixed costs (input checks, set-up, scikit-
   learn's final e-step); the whole-fit time ratio is reported too. The libraries alternate
   within each repeat. float64 is scikit-learn's dtype; a float32 row runs both libraries on
   float32 data (scikit-learn keeps float32 input in float32). Quality: the difference of the
   final average log-likelihoods (probgen minus scikit-learn; float32 rows against scikit-
   learn's float64 fit).
2. Gibbs for the Bayesian mixture (no scikit-learn equivalent): sweeps per second of
   `probgen.sample_chains(GaussianMixture(3, covariance="diag"), "gibbs", num_chains=8,
   evidence=data)` on 1,000 two-dimensional points, with and without the per-draw joint log
   density, and, for reference, Pyro's `MCMC(NUTS)` on the same model with the assignments
   enumerated out (one chain; draws per second; `--no-pyro` skips it).

Usage:
    python benchmarks/gmm_vs_sklearn.py [--quick] [--threads N] [--load both] [--repeats N]
        [--no-pyro] [--out PATH]

Part 1 (the headline ratios) runs quiet and beside a CPU-burning process (`--load`, default
both; each EM row carries "load"). Writes benchmarks/results/gmm_vs_sklearn.json (or `--out`)
and prints a table. Threads: by default neither torch nor the BLAS under numpy/scikit-learn is
limited (each library as a user gets it); `--threads N` limits both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _load import add_options, apply_threads, load_modes, under

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import probgen  # noqa: E402
from probgen.mixture.model import GaussianMixture  # noqa: E402

COVARIANCE_TYPES = ("diag", "full", "spherical")


def make_data(n_points: int, n_features: int, n_components: int, seed: int = 0) -> np.ndarray:
    """Overlapping Gaussian blobs with per-component, per-feature scales (float64)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (n_components, n_features))
    scales = rng.uniform(0.5, 1.5, (n_components, n_features))
    labels = rng.integers(n_components, size=n_points)
    return centres[labels] + rng.normal(0.0, 1.0, (n_points, n_features)) * scales[labels]


def starting_point(x: np.ndarray, n_components: int, covariance: str) -> dict[str, np.ndarray]:
    """Shared start: K random data points as means, the data's variance, equal weights."""
    rng = np.random.default_rng(1)
    variances = x.var(0)
    covariances = {
        "full": np.stack([np.diag(variances)] * n_components),
        "diag": np.tile(variances, (n_components, 1)),
        "spherical": np.full(n_components, variances.mean()),
    }[covariance]
    return {
        "weights": np.full(n_components, 1.0 / n_components),
        "means": x[rng.choice(len(x), n_components, replace=False)],
        "covariances": covariances,
    }


def fit_ours(x: torch.Tensor, start: dict[str, np.ndarray], covariance: str, iterations: int):
    model = GaussianMixture(
        len(start["weights"]), covariance=covariance, max_iter=iterations, tol=0.0
    ).to(x.dtype)
    model.set_parameters(**start)
    started = time.perf_counter()
    model.fit(x, warm_start=True)
    return time.perf_counter() - started, model


def fit_theirs(x: np.ndarray, start: dict[str, np.ndarray], covariance: str, iterations: int):
    from sklearn.mixture import GaussianMixture as SklearnMixture

    covariances = start["covariances"].astype(x.dtype)
    precisions = np.linalg.inv(covariances) if covariance == "full" else 1.0 / covariances
    model = SklearnMixture(
        len(start["weights"]),
        covariance_type=covariance,
        max_iter=iterations,
        tol=0.0,
        weights_init=start["weights"].astype(x.dtype),
        means_init=start["means"].astype(x.dtype),
        precisions_init=precisions,
        init_params="random_from_data",  # overridden by the *_init values; cheap to compute
    )
    started = time.perf_counter()
    model.fit(x)
    return time.perf_counter() - started, model


def em_case(
    n_points: int,
    n_features: int,
    n_components: int,
    covariance: str,
    dtype: str,
    iterations: int,
    repeats: int,
    reference_log_likelihood: float | None,
) -> dict[str, Any]:
    x64 = make_data(n_points, n_features, n_components)
    start = starting_point(x64, n_components, covariance)
    x_numpy = x64.astype(dtype)
    x_torch = torch.from_numpy(x_numpy)
    times: dict[str, dict[int, float]] = {"probgen": {}, "sklearn": {}}
    models: dict[str, Any] = {}
    for _ in range(repeats):
        for count in (1, iterations):
            seconds, ours = fit_ours(x_torch, start, covariance, count)
            best = times["probgen"].get(count, float("inf"))
            times["probgen"][count] = min(best, seconds)
            seconds, theirs = fit_theirs(x_numpy, start, covariance, count)
            best = times["sklearn"].get(count, float("inf"))
            times["sklearn"][count] = min(best, seconds)
            if count == iterations:
                models = {"probgen": ours, "sklearn": theirs}
    ours, theirs = models["probgen"], models["sklearn"]
    per_iteration = {
        name: (values[iterations] - values[1]) / (iterations - 1) for name, values in times.items()
    }
    ours_ll = float(ours.history_[-1]["mean_log_likelihood"])
    theirs_ll = float(theirs.lower_bound_)
    row: dict[str, Any] = {
        "n_points": n_points,
        "n_features": n_features,
        "n_components": n_components,
        "covariance": covariance,
        "dtype": dtype,
        "iterations": iterations,
        "iterations_run": {"probgen": ours.n_iter_, "sklearn": int(theirs.n_iter_)},
        "repeats": repeats,
        "seconds_per_iteration": per_iteration,
        "ratio_seconds_per_iteration_ours_over_theirs": (
            per_iteration["probgen"] / per_iteration["sklearn"]
        ),
        "fit_seconds": {name: values[iterations] for name, values in times.items()},
        "ratio_fit_seconds_ours_over_theirs": (
            times["probgen"][iterations] / times["sklearn"][iterations]
        ),
        "final_average_log_likelihood": {"probgen": ours_ll, "sklearn": theirs_ll},
        "log_likelihood_difference_ours_minus_theirs": ours_ll - theirs_ll,
    }
    if reference_log_likelihood is not None:
        row["log_likelihood_difference_ours_minus_sklearn_float64"] = (
            ours_ll - reference_log_likelihood
        )
    return row


def em_comparison(cases, iterations, repeats, dtypes) -> list[dict[str, Any]]:
    rows = []
    for n_points, n_features, n_components in cases:
        for covariance in COVARIANCE_TYPES:
            reference = None
            for dtype in dtypes:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # both stop at max_iter by design
                    row = em_case(
                        n_points,
                        n_features,
                        n_components,
                        covariance,
                        dtype,
                        iterations[(n_points, n_features, n_components)],
                        repeats,
                        reference,
                    )
                if dtype == "float64":
                    reference = row["final_average_log_likelihood"]["sklearn"]
                rows.append(row)
                _print_em_row(row)
    return rows


# ---------------------------------------------------------------------------------------------
# 2. Gibbs throughput (and Pyro NUTS with enumeration for reference)
# ---------------------------------------------------------------------------------------------
def gibbs_data(n_points: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(0)
    sizes = (n_points * 4 // 10, n_points * 3 // 10, n_points - n_points * 7 // 10)
    return np.concatenate(
        [
            rng.normal([-4.0, 0.0], [1.0, 0.7], (sizes[0], 2)),
            rng.normal([0.0, 2.0], [0.8, 1.0], (sizes[1], 2)),
            rng.normal([4.0, -1.0], [1.2, 0.6], (sizes[2], 2)),
        ]
    )


def gibbs_throughput(num_samples: int, repeats: int) -> dict[str, Any]:
    x = torch.from_numpy(gibbs_data())
    model = GaussianMixture(3, covariance="diag")
    result: dict[str, Any] = {
        "n_points": int(x.shape[0]),
        "n_features": int(x.shape[1]),
        "n_components": 3,
        "num_chains": 8,
        "sweeps": num_samples,
        "repeats": repeats,
    }
    for label, compute_lp in (("with_lp", True), ("without_lp", False)):
        best = float("inf")
        for repeat in range(repeats):
            started = time.perf_counter()
            samples = probgen.sample_chains(
                model,
                "gibbs",
                num_chains=8,
                num_samples=num_samples,
                warmup=0,
                seed=repeat,
                evidence=x,
                progress=False,
                compute_lp=compute_lp,
            )
            best = min(best, time.perf_counter() - started)
        result[f"sweeps_per_second_{label}"] = num_samples / best
        result[f"chain_draws_per_second_{label}"] = 8 * num_samples / best
        if compute_lp:
            summary = samples.summary()
            result["max_r_hat_means"] = float(summary.filter(like="means", axis=0)["r_hat"].max())
    return result


def pyro_nuts_reference(num_samples: int, warmup: int) -> dict[str, Any]:
    """Pyro NUTS on the same Bayesian mixture, assignments enumerated out; one chain."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS, config_enumerate

    x = torch.from_numpy(gibbs_data())
    prior = GaussianMixture(3, covariance="diag").resolve_prior(x)
    n_components, n_features = 3, x.shape[1]

    @config_enumerate
    def mixture(data: torch.Tensor) -> None:
        weights = pyro.sample(
            "weights", dist.Dirichlet(prior.weight_concentration.expand(n_components))
        )
        with pyro.plate("components", n_components):
            variances = pyro.sample(
                "variances",
                dist.InverseGamma(prior.variance_shape, prior.variance_scale)
                .expand([n_components, n_features])
                .to_event(1),
            )
            means = pyro.sample(
                "means",
                dist.Normal(prior.mean_prior, (variances / prior.mean_precision).sqrt()).to_event(
                    1
                ),
            )
        with pyro.plate("data", data.shape[0]):
            assignment = pyro.sample("assignment", dist.Categorical(weights))
            pyro.sample(
                "obs",
                dist.Normal(means[assignment], variances[assignment].sqrt()).to_event(1),
                obs=data,
            )

    pyro.set_rng_seed(0)  # benchmark script, not library code
    kernel = NUTS(mixture, max_plate_nesting=1)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, disable_progbar=True)
    started = time.perf_counter()
    mcmc.run(x)
    seconds = time.perf_counter() - started
    return {
        "chains": 1,
        "warmup": warmup,
        "num_samples": num_samples,
        "seconds": seconds,
        "draws_per_second_including_warmup": (warmup + num_samples) / seconds,
        "pyro": pyro.__version__,
    }


# ---------------------------------------------------------------------------------------------
def machine(threads: int) -> dict[str, Any]:
    import sklearn

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "blas_threads_limit": threads,
        "versions": {
            "probgen": probgen.__version__,
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
        },
    }


def _print_em_row(row: dict[str, Any]) -> None:
    seconds = row["seconds_per_iteration"]
    case = f"{row['n_points']}x{row['n_features']} K={row['n_components']}"
    print(
        f"{case:>17} {row['covariance']:>9} {row['dtype']:>7} "
        f"{seconds['probgen'] * 1e3:>11.3f} {seconds['sklearn'] * 1e3:>10.3f} "
        f"{row['ratio_seconds_per_iteration_ours_over_theirs']:>7.3f} "
        f"{row['ratio_fit_seconds_ours_over_theirs']:>8.3f} "
        f"{row['log_likelihood_difference_ours_minus_theirs']:>10.1e}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    add_options(parser)
    parser.add_argument("--out", type=Path, default=None, help="results file")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-pyro", action="store_true", help="skip the Pyro NUTS reference")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    apply_threads(args.threads)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    if quick:
        cases = [(5000, 5, 5), (20000, 10, 10)]
        iterations = dict.fromkeys(cases, 20)
    else:
        cases = [(20000, 5, 5), (100000, 10, 10)]
        iterations = {cases[0]: 100, cases[1]: 50}
    report: dict[str, Any] = {"benchmark": "gmm_vs_sklearn", "quick": quick}
    with threadpool_limits(limits=args.threads):
        report["machine"] = machine(args.threads)
        print(f"threads: {torch.get_num_threads()} (torch and BLAS)")
        print(
            f"{'case':>17} {'cov':>9} {'dtype':>7} {'ms/it ours':>11} {'ms/it sk':>10} "
            f"{'ratio':>7} {'fit rat':>8} {'dLL':>10}"
        )
        report["machine"]["load_modes"] = load_modes(args.load)
        report["em"] = []
        for mode in load_modes(args.load):
            print(f"[{mode}]")
            with under(mode):
                rows = em_comparison(cases, iterations, repeats, ("float64", "float32"))
            report["em"] += [{**row, "load": mode} for row in rows]
        report["gibbs"] = gibbs_throughput(num_samples=100 if quick else 500, repeats=repeats)
        gibbs = report["gibbs"]
        print(
            f"\nGibbs, 8 chains, {gibbs['n_points']} points, 3 components: "
            f"{gibbs['sweeps_per_second_with_lp']:.0f} sweeps/s with lp, "
            f"{gibbs['sweeps_per_second_without_lp']:.0f} without "
            f"(max R-hat of the means {gibbs['max_r_hat_means']:.3f})"
        )
        if not args.no_pyro:
            nuts = pyro_nuts_reference(
                num_samples=20 if quick else 100, warmup=20 if quick else 100
            )
            report["pyro_nuts_enumerated"] = nuts
            print(
                f"Pyro NUTS (enumerated assignments), 1 chain: "
                f"{nuts['draws_per_second_including_warmup']:.2f} draws/s "
                f"({nuts['warmup']} warmup + {nuts['num_samples']} draws in "
                f"{nuts['seconds']:.1f} s)"
            )
    out = args.out or ROOT / "benchmarks" / "results" / "gmm_vs_sklearn.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
