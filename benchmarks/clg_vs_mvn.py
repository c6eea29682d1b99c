"""CLG inference: probgen's HybridBayesianNetwork against a direct multivariate-normal computation
and pgmpy's LinearGaussianBayesianNetwork.

Given one configuration of its discrete variables a conditional linear Gaussian network is a
multivariate normal, so every query has a closed form per configuration. The oracle here builds
each configuration's mean and covariance by propagating the linear Gaussians one variable at a
time (numpy, its own code: probgen inverts I - B instead), then scores rows with
`scipy.stats.multivariate_normal` and conditions with the textbook Gaussian formulas, mixing
the configurations by their posterior weights. Two networks:

- ``incinerator``: `models/clg_incinerator.py` (3 discrete, 6 continuous variables, 8
  configurations). Queries: log_prob of complete rows, log_prob of rows whose discrete
  variables and three measurements are hidden, and the posterior mean and covariance of the
  hidden measurements.
- ``linear_gaussian_<N>``: a random linear Gaussian DAG of N continuous variables (no discrete
  ones), where pgmpy's `LinearGaussianBayesianNetwork` also answers: `log_likelihood` of
  complete rows and `predict_probability` (conditional mean and covariance) with half the
  variables hidden.

Usage: python benchmarks/clg_vs_mvn.py [--quick] [--load both] [--threads N]

Writes benchmarks/results/clg_vs_mvn.json and prints a table: for each query the seconds of
each side (best of `--repeats` after a warm-up run; probgen's cache of per-configuration
Gaussians is cleared before every run, as the oracle builds its own), the time ratio
reference / probgen, and the largest absolute difference from probgen. HybridBayesianNetwork
does not apply probgen's small-op thread policy, so `--threads 1` changes its times a lot on
a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _load import add_options, apply_threads, load_modes, under
from scipy import stats
from scipy.special import logsumexp

from probgen.networks.hybrid import HybridBayesianNetwork

RESULTS = Path(__file__).resolve().parent / "results" / "clg_vs_mvn.json"


# ---- the oracle -------------------------------------------------------------------------------
def configuration_gaussians(net: HybridBayesianNetwork) -> tuple[np.ndarray, list, list]:
    """log P(k) (K,), and per discrete configuration k the continuous variables' mean and
    covariance, propagated one variable at a time in topological order."""
    cards = [len(states) for states in net.discrete.values()]
    log_weights, means, covariances = [], [], []
    for config in itertools.product(*[range(c) for c in cards]):
        state = dict(zip(net.discrete, config))
        log_weight = 0.0
        for v in net.discrete:
            table = net.table(v).numpy()
            log_weight += math.log(table[tuple(state[p] for p in net.discrete_parents[v])
                                         + (state[v],)])
        width = len(net.continuous)
        mean, cov = np.zeros(width), np.zeros((width, width))
        order = [v for v in net._order if v in net.continuous]
        for v in order:
            j = net.continuous.index(v)
            coefficients, variance = (t.numpy() for t in net.linear_gaussian(v))
            where = tuple(state[p] for p in net.discrete_parents[v])
            row, noise = coefficients[where], float(variance[where])
            parents = [net.continuous.index(p) for p in net.continuous_parents[v]]
            weights = row[1:]
            mean[j] = row[0] + weights @ mean[parents]
            cov[j, :] = weights @ cov[parents, :]
            cov[:, j] = cov[j, :]
            cov[j, j] = weights @ cov[np.ix_(parents, parents)] @ weights + noise
        log_weights.append(log_weight)
        means.append(mean)
        covariances.append(cov)
    return np.array(log_weights), means, covariances


def oracle_log_prob(net: HybridBayesianNetwork, codes: np.ndarray, values: np.ndarray,
                    hidden: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log p(evidence) per row and the posterior mean (n, u) and covariance (n, u, u) of the
    continuous columns `hidden`; every row shares the same hidden columns; discrete codes are
    -1 where hidden."""
    log_weights, means, covariances = configuration_gaussians(net)
    seen = [j for j in range(values.shape[1]) if j not in hidden]
    cards = [len(states) for states in net.discrete.values()]
    per_config, conditional = [], []
    for k, config in enumerate(itertools.product(*[range(c) for c in cards])):
        mu, sigma = means[k], covariances[k]
        s_oo = sigma[np.ix_(seen, seen)]
        log_density = stats.multivariate_normal(mu[seen], s_oo).logpdf(values[:, seen])
        consistent = np.all((codes < 0) | (codes == np.array(config)), axis=1)
        per_config.append(np.where(consistent, log_weights[k] + log_density, -np.inf))
        if hidden:
            gain = sigma[np.ix_(hidden, seen)] @ np.linalg.inv(s_oo)
            cond_mean = mu[hidden] + (values[:, seen] - mu[seen]) @ gain.T
            cond_cov = sigma[np.ix_(hidden, hidden)] - gain @ sigma[np.ix_(seen, hidden)]
            conditional.append((cond_mean, cond_cov))
    joint = np.stack(per_config, axis=1)  # (n, K)
    log_evidence = logsumexp(joint, axis=1)
    if not hidden:
        return log_evidence, np.zeros((len(values), 0)), np.zeros((len(values), 0, 0))
    weights = np.exp(joint - log_evidence[:, None])
    mean = sum(weights[:, [k]] * m for k, (m, _) in enumerate(conditional))
    second = sum(weights[:, k, None, None] * (c[None] + m[:, :, None] * m[:, None, :])
                 for k, (m, c) in enumerate(conditional))
    return log_evidence, mean, second - mean[:, :, None] * mean[:, None, :]


# ---- the networks -----------------------------------------------------------------------------
def random_linear_gaussian(n_variables: int, seed: int = 0) -> HybridBayesianNetwork:
    """A random DAG on n_variables continuous nodes, each with up to 3 earlier parents."""
    rng = np.random.default_rng(seed)
    names = [f"x{i}" for i in range(n_variables)]
    edges, parameters = [], {}
    for i, v in enumerate(names):
        parents = sorted(rng.choice(i, size=min(i, rng.integers(0, 4)), replace=False)) if i else []
        edges += [(names[p], v) for p in parents]
        weights = rng.uniform(0.3, 1.0, len(parents)) * rng.choice([-1, 1], len(parents))
        parameters[v] = ([rng.normal()] + list(weights), float(rng.uniform(0.2, 1.5)))
    return HybridBayesianNetwork(None, names, edges, linear_gaussians=parameters)


def to_pgmpy(net: HybridBayesianNetwork):
    from pgmpy.factors.continuous import LinearGaussianCPD
    from pgmpy.models import LinearGaussianBayesianNetwork

    reference = LinearGaussianBayesianNetwork(net.edges)
    reference.add_nodes_from(net.continuous)
    cpds = []
    for v in net.continuous:
        coefficients, variance = net.linear_gaussian(v)
        cpds.append(LinearGaussianCPD(v, coefficients.tolist(), math.sqrt(float(variance)),
                                      net.continuous_parents[v]))
    reference.add_cpds(*cpds)
    return reference


# ---- timing -----------------------------------------------------------------------------------
def best_of(repeats: int, function, before=None):
    """(best time of `repeats` runs after one untimed warm-up run, the result)."""
    if before is not None:
        before()
    function()  # warm-up: lazy initialisation of torch / scipy kernels is not the query
    times, result = [], None
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def row(network, query, n_rows, ours_time, reference, reference_time, difference):
    return {"network": network, "query": query, "n_rows": n_rows, "probgen_seconds": ours_time,
            "reference": reference, "reference_seconds": reference_time,
            "ratio_reference_over_probgen": reference_time / ours_time,
            "max_abs_difference": float(difference)}


def bench_network(name: str, net: HybridBayesianNetwork, hidden: list[int], n_rows: int,
                  repeats: int, with_pgmpy: bool) -> list[dict]:
    rows = net.sample(n_rows, seed=0)
    n_discrete = len(net.discrete)
    codes = rows[:, :n_discrete].long().numpy()
    values = rows[:, n_discrete:].numpy()
    clear = net._cache.clear
    results = []

    ours_time, ours = best_of(repeats, lambda: net.log_prob(rows), clear)
    ref_time, (ref, _, _) = best_of(repeats, lambda: oracle_log_prob(net, codes, values, []))
    results.append(row(name, "log_prob complete rows", n_rows, ours_time, "scipy MVN per config",
                       ref_time, np.abs(ours.numpy() - ref).max()))

    partial = rows.clone()
    partial[:, :n_discrete] = float("nan")
    partial[:, [n_discrete + j for j in hidden]] = float("nan")
    hidden_codes = np.full_like(codes, -1)

    def ours_posterior():
        log_evidence = net.log_prob(partial)
        mean, covariance = net.continuous_posterior(partial)
        return log_evidence, mean, covariance

    ours_time, (log_evidence, mean, covariance) = best_of(repeats, ours_posterior, clear)
    ref_time, (ref_evidence, ref_mean, ref_cov) = best_of(
        repeats, lambda: oracle_log_prob(net, hidden_codes, values, hidden))
    difference = max(
        np.abs(log_evidence.numpy() - ref_evidence).max(),
        np.abs(mean[:, hidden].numpy() - ref_mean).max(),
        np.abs(covariance[:, hidden][:, :, hidden].numpy() - ref_cov).max(),
    )
    query = f"log_prob + posterior moments, {len(hidden)} continuous hidden"
    results.append(row(name, query, n_rows, ours_time, "scipy MVN per config", ref_time,
                       difference))
    if not with_pgmpy:
        return results

    reference = to_pgmpy(net)
    frame = pd.DataFrame(values, columns=net.continuous)
    ours_time, ours = best_of(repeats, lambda: net.log_prob(rows).sum(), clear)
    ref_time, ref = best_of(repeats, lambda: reference.log_likelihood(frame))
    results.append(row(name, "total log_prob complete rows", n_rows, ours_time,
                       "pgmpy log_likelihood", ref_time, abs(float(ours) - float(ref))))
    observed = frame.drop(columns=[net.continuous[j] for j in hidden])
    ours_time, (mean, covariance) = best_of(
        repeats, lambda: net.continuous_posterior(partial), clear)
    ref_time, (names, ref_mean, ref_cov) = best_of(
        repeats, lambda: reference.predict_probability(observed))
    order = [net.continuous.index(v) for v in names]
    difference = max(np.abs(mean[:, order].numpy() - ref_mean).max(),
                     np.abs(covariance[0][order][:, order].numpy() - ref_cov).max())
    results.append(row(name, f"posterior moments, {len(hidden)} hidden", n_rows, ours_time,
                       "pgmpy predict_probability", ref_time, difference))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred rows, seconds")
    parser.add_argument("--variables", type=int, default=30, help="linear Gaussian network size")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    add_options(parser)
    args = parser.parse_args()
    apply_threads(args.threads)
    n_rows = 300 if args.quick else 20_000
    repeats = 1 if args.quick else args.repeats

    import pgmpy
    import scipy
    from probgen.recipes import clg_incinerator

    import probgen

    results: dict = {
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "probgen": probgen.__version__, "torch": torch.__version__,
            "scipy": scipy.__version__, "pgmpy": pgmpy.__version__, "quick": args.quick,
            "repeats_best_of": repeats, "threads_option": args.threads,
            "load_modes": load_modes(args.load),
        },
        "queries": [],
    }
    incinerator = clg_incinerator.true_model()
    hidden_measurements = [incinerator.continuous.index(v) for v in
                           ("filter_efficiency", "light_penetrability", "metal_in_waste")]
    linear = random_linear_gaussian(args.variables)
    networks = [("incinerator", incinerator, hidden_measurements, False),
                (f"linear_gaussian_{args.variables}", linear,
                 list(range(0, args.variables, 2)), True)]
    print(f"{'network':20} {'load':6} {'query':48} {'reference':26} {'probgen s':>9} "
          f"{'ref s':>9} {'ratio':>7} {'max diff':>9}")
    for mode in load_modes(args.load):
        for name, net, hidden, with_pgmpy in networks:
            with under(mode):
                rows = bench_network(name, net, hidden, n_rows, repeats, with_pgmpy)
            for entry in rows:
                entry["load"] = mode
                results["queries"].append(entry)
                print(f"{name:20} {mode:6} {entry['query']:48} {entry['reference']:26} "
                      f"{entry['probgen_seconds']:9.4f} {entry['reference_seconds']:9.4f} "
                      f"{entry['ratio_reference_over_probgen']:7.1f} "
                      f"{entry['max_abs_difference']:9.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
