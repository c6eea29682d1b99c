"""Train an RBM on binarised digits; compare its exact log-likelihood with the AIS estimate.

Run: python examples/rbm_digits.py [--smoke]
"""

from __future__ import annotations

import argparse

from probgen.recipes import rbm_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()

    options = rbm_digits.SMOKE if arguments.smoke else {}
    rbm = rbm_digits.build(**options.get("build", {}))
    train = rbm_digits.data("train", **options.get("data", {}))
    test = rbm_digits.data("test", **options.get("data", {}))
    rbm.fit(train, **options.get("fit", {}))
    exact = rbm.log_partition("exact")
    estimate = rbm.log_partition("ais", n_runs=50, seed=0)
    print(f"log Z exact {exact.estimate:.3f}, AIS {estimate.estimate:.3f} +- {estimate.stderr:.3f}")
    print(f"test log-likelihood: {rbm.log_prob(test).mean().item():.3f} ({rbm.log_prob_kind})")
    print(f"test pseudo-log-likelihood: {rbm.pseudo_log_likelihood(test).mean().item():.3f}")


if __name__ == "__main__":
    main()
