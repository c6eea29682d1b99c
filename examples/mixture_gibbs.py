"""A Gaussian mixture two ways: an EM fit, then its Bayesian posterior by blocked Gibbs.

Fits `probgen.GaussianMixture` by EM to three 2-D blobs (the `gmm_blobs` recipe), compares the
fitted weights with the generating ones, then samples the Bayesian mixture (Dirichlet weights,
Normal-Inverse-Gamma means and variances) with `probgen.sample_chains(..., "gibbs",
evidence=data)` and prints its posterior summary, R-hat and ESS included.

Run: python examples/mixture_gibbs.py [--smoke]
"""

from __future__ import annotations

import argparse

from probgen.recipes import gmm_blobs

import probgen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()

    points = gmm_blobs.data(n_samples=300 if arguments.smoke else 2000)
    mixture = gmm_blobs.build().fit(points)
    print("EM weights (sorted):", sorted(round(w, 3) for w in mixture.weights.tolist()))
    print("true weights (sorted):", sorted(gmm_blobs.TRUE_PARAMETERS["weights"]))
    print("mean log-likelihood:", round(mixture.log_prob(points).mean().item(), 4))

    posterior = probgen.sample_chains(
        probgen.GaussianMixture(3, covariance="diag"),
        "gibbs",
        num_chains=4,
        num_samples=200 if arguments.smoke else 2000,
        warmup=50 if arguments.smoke else 500,
        seed=0,
        evidence=points,
        progress=False,
    )
    summary = posterior.summary()[["mean", "sd", "ess_bulk", "r_hat"]]
    print(summary.loc[[name for name in summary.index if not name.startswith("assignments")]])


if __name__ == "__main__":
    main()
