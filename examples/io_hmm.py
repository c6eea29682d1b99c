"""Fit an input-output HMM whose regime switches are driven by covariates, and compare it with
an HMM that ignores them.

The data are the `io_hmm` recipe's: a calm and a volatile Gaussian regime, with a stress index
that pushes the process into the volatile regime and a seasonal signal that keeps it calm. The
script fits `HMM(2, "gaussian", transition_inputs=2)`, prints the fitted input weights beside
the generating ones, scores held-out sequences against a plain HMM, decodes the regimes, and
draws new sequences under a stress scenario.

Run: python examples/io_hmm.py [--smoke]
"""

from __future__ import annotations

import argparse
import warnings

import torch
from probgen.recipes import io_hmm

import probgen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()
    n_sequences, length, max_iter = (8, 40, 10) if arguments.smoke else (100, 100, 200)

    observations, inputs = io_hmm.data("train", n_sequences=n_sequences, length=length)
    held_out, held_out_inputs = io_hmm.data("test", n_sequences=n_sequences, length=length)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the smoke run stops at max_iter
        model = io_hmm.build(max_iter=max_iter).fit(observations, inputs=inputs)
        plain = probgen.HMM(2, "gaussian", n_init=2, max_iter=max_iter, seed=0).double()
        plain.fit(observations)

    calm_first = model.covariances.reshape(2, -1)[:, 0].argsort()
    weights = model.transition_input_weights[calm_first][:, :, calm_first]
    print("fitted input weights [from, input, to] (calm state first):\n", weights.round(decimals=2))
    print("generating weights:\n", torch.tensor(io_hmm.TRUE_PARAMETERS["transition_input_weights"]))
    n_steps = held_out.shape[0] * held_out.shape[1]
    driven_score = model.score(held_out, inputs=held_out_inputs) / n_steps
    print(f"held-out log-likelihood per step: input-output HMM {driven_score:.4f}, ", end="")
    print(f"plain HMM {plain.score(held_out) / n_steps:.4f}")

    paths = model.predict(held_out, inputs=held_out_inputs)
    volatile = int(calm_first[1])
    stressed = held_out_inputs[..., 0] > 1.0
    share = (paths[stressed] == volatile).double().mean().item()
    print(f"share of high-stress steps decoded as volatile: {share:.1%}")

    # A scenario: stress ramps up half-way through; the draws follow it.
    scenario = torch.zeros(200, 60, 2, dtype=torch.float64)
    scenario[:, 30:, 0] = 2.0
    _, states = model.sample(200, length=60, inputs=scenario, seed=1, return_states=True)
    before = (states[:, 20:30] == volatile).double().mean().item()
    after = (states[:, 50:] == volatile).double().mean().item()
    print(f"volatile share in the scenario: {before:.1%} before the stress, {after:.1%} after")


if __name__ == "__main__":
    main()
