"""A hidden semi-Markov model: durations an HMM cannot express, fitted by EM.

Two regimes (`models/hsmm_regimes.py`): a calm one lasting about 9 steps and a volatile one
lasting about 3, with Poisson durations. EM recovers the durations and emissions; on held-out
sequences the HSMM scores higher than a 2-state HMM (whose durations are geometric) and its
Viterbi segmentation finds the true regimes.

Run: python examples/hsmm.py [--smoke]
"""

from __future__ import annotations

import argparse
import warnings

import torch
from probgen.recipes import hsmm_regimes

from probgen import HMM
from probgen.hmm.semi_markov import segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()
    n_sequences, max_iter = (8, 15) if arguments.smoke else (40, 100)

    truth = hsmm_regimes.true_model()
    train = hsmm_regimes.data(n_sequences=n_sequences)
    test, test_states = truth.sample(20, length=80, seed=10_000, return_states=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the smoke run stops EM early on purpose
        hsmm = hsmm_regimes.build(max_iter=max_iter).fit(train)
        hmm = HMM(2, "gaussian", n_init=2, max_iter=max_iter, seed=0).double().fit(train)

    # the states come out in either order: match them to the truth by their means
    order = torch.argsort(hsmm.means[:, 0])
    true_mean = 1.0 + truth.duration_parameters[:, 0]
    fitted_mean = 1.0 + hsmm.duration_parameters[order, 0]
    print(f"HSMM EM: {hsmm.n_iter_} iterations")
    print(f"  mean durations: fitted {[round(float(m), 2) for m in fitted_mean]}, "
          f"true {[round(float(m), 2) for m in true_mean]}")
    print(f"  emission means: fitted {[round(float(m), 2) for m in hsmm.means[order, 0]]}, "
          f"true {hsmm_regimes.TRUE_PARAMETERS['means']}")
    stay = hmm.transition_probs.diagonal()[torch.argsort(hmm.means[:, 0])]
    print(f"the HMM's implied mean durations (geometric): "
          f"{[round(float(1 / (1 - p)), 2) for p in stay]}")
    print(f"held-out log-likelihood per sequence: HSMM {float(hsmm.log_prob(test).mean()):.2f}, "
          f"HMM {float(hmm.log_prob(test).mean()):.2f}, "
          f"true HSMM {float(truth.log_prob(test).mean()):.2f}")

    paths, _ = hsmm.viterbi(test)
    relabel = torch.empty_like(order)
    relabel[order] = torch.arange(len(order))
    accuracy = (relabel[paths] == test_states).double().mean()
    print(f"Viterbi-over-segments state accuracy on held-out sequences: {float(accuracy):.3f}")
    hmm_paths = hmm.decode(test, "viterbi").paths
    hmm_order = torch.argsort(hmm.means[:, 0])
    hmm_relabel = torch.empty_like(hmm_order)
    hmm_relabel[hmm_order] = torch.arange(len(hmm_order))
    hmm_accuracy = (hmm_relabel[hmm_paths] == test_states).double().mean()
    print(f"  the HMM's Viterbi state accuracy: {float(hmm_accuracy):.3f}")
    first = segments(relabel[paths[0]])[:6]
    print(f"first segments (state, start, duration) of sequence 0: {first}")


if __name__ == "__main__":
    main()
