"""Fit Durbin's dishonest-casino HMM to simulated rolls, decode the dice, sample new rolls.

Run: python examples/casino_hmm.py [--smoke]
"""

from __future__ import annotations

import argparse

from probgen.recipes import hmm_casino

import probgen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()
    n_rolls = 300 if arguments.smoke else 5000

    rolls, true_states = hmm_casino.simulate(n_rolls, seed=0)
    hmm = probgen.HMM(2, emission="categorical", n_symbols=6, n_init=3, max_iter=500, seed=0)
    hmm.fit([rolls])
    print("transition probabilities:\n", hmm.transition_probs)
    print("emission probabilities:\n", hmm.emission_probs)
    paths, _ = hmm.viterbi([rolls])
    loaded = int(hmm.emission_probs[:, 5].argmax())  # the state that favours sixes
    accuracy = ((paths[0] == loaded) == (true_states == 1)).double().mean().item()
    print(f"Viterbi accuracy: {accuracy:.1%}")
    print(f"log-likelihood: {hmm.log_prob([rolls]).item():.2f} ({hmm.log_prob_kind})")
    print(f"BIC: {hmm.bic([rolls]):.1f}")
    print("five sampled rolls of length 20:\n", hmm.sample(5, length=20, seed=1) + 1)


if __name__ == "__main__":
    main()
