"""Fit a neural spline flow to a ring of 8 Gaussians and compare with the true density.

Run: python examples/flow_ring.py [--smoke]
"""

from __future__ import annotations

import argparse

from probgen.recipes import flow_gaussians

from probgen.metrics import mode_coverage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()

    options = flow_gaussians.SMOKE if arguments.smoke else {}
    flow = flow_gaussians.build(**options.get("build", {}))
    train = flow_gaussians.data("train", seed=0, **options.get("data", {}))
    test = flow_gaussians.data("test", seed=1, **options.get("data", {}))
    flow.fit(train, **options.get("fit", {}))
    held_out = flow.log_prob(test).mean().item()
    truth = flow_gaussians.true_log_prob(test).mean().item()
    print(f"held-out log-likelihood: {held_out:.3f} nats (true density: {truth:.3f})")
    samples = flow.sample(2000, seed=0)
    coverage = mode_coverage(samples, flow_gaussians.CENTRES, std=flow_gaussians.STD)
    print("mode coverage:", coverage)


if __name__ == "__main__":
    main()
