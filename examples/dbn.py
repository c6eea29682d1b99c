"""A dynamic Bayesian network: filter, learn tables with missing values by EM, learn structure.

The umbrella world (rain -> umbrella, rain -> wet grass, each persisting from day to day):
filtering reproduces the textbook P(rain on day 2 | umbrella on days 1 and 2) = 0.883, EM
recovers the transition tables from sequences with a fifth of the values hidden, and hill
climbing finds the inter-slice edges back from complete sequences.

Run: python examples/dbn.py [--smoke]
"""

from __future__ import annotations

import argparse

import torch
from probgen.recipes import dbn_umbrella

from probgen.networks import learn_dbn_structure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()
    n_sequences = 60 if arguments.smoke else 500

    truth = dbn_umbrella.true_model()
    umbrella_twice = torch.tensor([[[-1, 1, -1], [-1, 1, -1]]])
    rain = truth.filter(umbrella_twice)["rain"][0, 1, 1]
    print(f"P(rain on day 2 | umbrella on days 1, 2) = {float(rain):.3f} (textbook 0.883)")

    sequences = dbn_umbrella.data(n_sequences=n_sequences, length=20, missing=0.2)
    model = dbn_umbrella.build(max_iter=200, tol=1e-7, seed=0).fit(sequences)
    print(f"EM: {model.n_iter_} iterations, converged={model.converged_}")
    for variable in ("rain", "wet_grass"):
        error = (model.table(variable) - truth.table(variable)).abs().max()
        print(f"  largest error in the transition table of {variable}: {float(error):.3f}")
    held_out = dbn_umbrella.data("test", n_sequences=50, length=20, missing=0.2)
    print(
        f"held-out log-likelihood per sequence: fitted {float(model.log_prob(held_out).mean()):.3f}"
        f", true {float(truth.log_prob(held_out).mean()):.3f}"
    )

    complete = dbn_umbrella.data(n_sequences=n_sequences, length=20)
    learned = learn_dbn_structure(complete, states=dbn_umbrella.STATES)
    print("learned inter-slice edges:", sorted(learned.inter_edges),
          "true:", sorted(dbn_umbrella.INTER_EDGES))
    print("learned intra-slice edges:", sorted(learned.intra_edges))


if __name__ == "__main__":
    main()
