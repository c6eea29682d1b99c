"""Exact and batched inference on the Asia network, then learn its structure back from samples.

Run: python examples/asia_queries.py [--smoke]
"""

from __future__ import annotations

import argparse

import pandas as pd

import probgen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()

    asia = probgen.BayesianNetwork.from_example("asia")
    print("P(lung | smoke=yes) =", asia.query("lung", {"smoke": "yes"}).values.tolist())
    evidence = pd.DataFrame({"smoke": ["yes", "no", "yes"], "xray": ["yes", "yes", "no"]})
    marginals = asia.marginals(evidence)  # one batched pass for all three evidence rows
    print("P(lung=yes) per evidence row:", marginals["lung"][:, 0].tolist())
    print("most probable explanation of dysp=yes:", asia.map_query(evidence={"dysp": "yes"}))

    n_rows = 2000 if arguments.smoke else 20000
    rows = asia.sample(n_rows, seed=0, as_frame=True)
    learned = probgen.learn_structure(rows, method="hill_climb", score="bic")
    true_edges = set(asia.graph.edges)
    learned_edges = set(learned.graph.edges)
    print(
        f"learned {len(learned_edges)} edges, {len(true_edges & learned_edges)} of the "
        f"{len(true_edges)} true ones with the right direction"
    )
    print("mean log-likelihood of the samples:", asia.log_prob(rows).mean().item())


if __name__ == "__main__":
    main()
