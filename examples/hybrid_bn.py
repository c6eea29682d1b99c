"""A hybrid (conditional linear Gaussian) Bayesian network: diagnose, predict, learn.

The waste incinerator (`models/clg_incinerator.py`: burning regime, filter state and waste type
drive six continuous measurements). Exact inference: the probability of a defect filter from a
dust and metal reading, the conditional mean and standard deviation of the unmeasured
quantities, and the rows filled in by `predict` (a direct multivariate-normal computation per
discrete configuration is what `benchmarks/clg_vs_mvn.py` checks); then closed-form learning from
simulated rows recovers the parameters (sparse discrete configurations need many rows).

Run: python examples/hybrid_bn.py [--smoke]
"""

from __future__ import annotations

import argparse
import math

import pandas as pd
from probgen.recipes import clg_incinerator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()
    n_rows = 400 if arguments.smoke else 20_000

    truth = clg_incinerator.true_model()
    readings = pd.DataFrame({"dust_emission": [3.4, 2.7], "metal_emission": [3.0, 2.2]})
    defect = truth.discrete_posterior(readings)["filter_state"][:, 1]
    prior = clg_incinerator.TABLES["filter_state"][1]
    print(f"P(filter defect) = {prior:.3f} a priori; given dust 3.4 and metal 3.0: "
          f"{float(defect[0]):.3f}; given dust 2.7 and metal 2.2: {float(defect[1]):.3f}")

    mean, covariance = truth.continuous_posterior(readings)
    for name in ("filter_efficiency", "light_penetrability", "metal_in_waste"):
        j = truth.continuous.index(name)
        print(f"  E[{name} | readings] = {float(mean[0, j]):+.3f} "
              f"(sd {math.sqrt(float(covariance[0, j, j])):.3f})")
    filled = truth.predict(readings)
    print("  predict fills the row: filter state "
          f"{truth.discrete['filter_state'][int(filled[1, 1])]!r} for the second reading, "
          f"filter efficiency {float(filled[1, 3]):+.3f}")

    train = clg_incinerator.data(n=n_rows)
    model = clg_incinerator.build().fit(train)
    print(f"fitted on {n_rows} simulated rows (closed form):")
    for name in ("burning_regime", "filter_state", "waste_type"):
        error = (model.table(name) - truth.table(name)).abs().max()
        print(f"  largest error in the table of {name}: {float(error):.3f}")
    for name in ("dust_emission", "metal_emission"):
        fitted, _ = model.linear_gaussian(name)
        true, _ = truth.linear_gaussian(name)
        print(f"  largest error in the coefficients of {name}: "
              f"{float((fitted - true).abs().max()):.3f}")
    test = clg_incinerator.data("test", n=1000)
    print(f"held-out log-likelihood per row: fitted {float(model.log_prob(test).mean()):.3f}, "
          f"true {float(truth.log_prob(test).mean()):.3f}")


if __name__ == "__main__":
    main()
