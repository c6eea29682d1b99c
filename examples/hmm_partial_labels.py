"""Partially labelled sequences and risk-based decoders, on Durbin's dishonest casino.

A croupier's log records which die was in use at a fraction of the rolls. `HMM.fit(rolls,
states=labels)` (labels -1 where unknown) clamps those steps in the e-step: semi-supervised EM.
With a few percent of the rolls labelled it finds the dice more accurately than unsupervised EM
(scored on held-out rolls, unsupervised EM given the best relabelling of its states), and every
roll labelled gives the closed-form counting estimate. The data are small on purpose (about a
thousand rolls): with ten times more, unsupervised EM already reaches the ceiling, and with well
under 1% labelled EM from a random start can settle in the swapped optimum (see
`benchmarks/hmm_partial_labels.py`). Then the decoders of Lember & Koloydenko on held-out
rolls with the true parameters: each reports the expected number of errors of its paths, which
the actual errors against the true dice confirm; posterior decoding minimises it, Viterbi finds
the most probable path, the hybrid decoders lie between.

Run: python examples/hmm_partial_labels.py [--smoke]
"""

from __future__ import annotations

import argparse
import itertools

import torch
from probgen.recipes import hmm_casino


def simulate(n_sequences: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rolls and true dice, (n_sequences, length) each."""
    return hmm_casino.true_model().sample(n_sequences, length=length, seed=seed,
                                          return_states=True)


def hide(dice: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """The dice with all but a random `fraction` of the steps replaced by -1 (unknown)."""
    known = torch.rand(dice.shape, generator=torch.Generator().manual_seed(seed)) < fraction
    return torch.where(known, dice, torch.full_like(dice, -1))


def accuracy(paths: torch.Tensor, truth: torch.Tensor, relabel: bool) -> float:
    """Share of steps decoded right; with `relabel`, under the best permutation of states."""
    orders = itertools.permutations(range(2)) if relabel else [(0, 1)]
    return max(float((torch.tensor(order)[paths] == truth).double().mean()) for order in orders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    arguments = parser.parse_args()
    n_sequences, length, n_datasets = (6, 200, 1) if arguments.smoke else (5, 200, 5)
    fractions = (0.0, 0.02, 0.1, 1.0) if arguments.smoke else (0.0, 0.02, 0.05, 0.1, 0.2, 1.0)

    test_rolls, test_dice = simulate(20, 500, seed=2)
    truth = hmm_casino.true_model()
    oracle = accuracy(truth.decode(test_rolls, "posterior").paths, test_dice, relabel=False)
    print(f"{n_datasets} data set(s) of {n_sequences} sequences x {length} rolls; posterior "
          f"decoding with the true parameters: accuracy {oracle:.3f} on held-out rolls")
    print(f"{'labelled':>9} {'mean accuracy':>14} {'worst':>6} {'P(6 | loaded)':>14}")
    for fraction in fractions:
        scores, sixes = [], []
        for dataset in range(n_datasets):
            rolls, dice = simulate(n_sequences, length, seed=100 + dataset)
            model = hmm_casino.build(n_init=2, max_iter=300, tol=1e-6)
            if fraction == 0.0:
                model.fit(rolls)
            else:
                model.fit(rolls, states=hide(dice, fraction, seed=dataset))
            paths = model.decode(test_rolls, "posterior").paths
            scores.append(accuracy(paths, test_dice, relabel=fraction == 0.0))
            sixes.append(float(model.emission_probs[:, 5].max()))
        print(f"{fraction:9.1%} {sum(scores) / len(scores):14.3f} {min(scores):6.3f} "
              f"{sum(sixes) / len(sixes):14.3f}"
              + ("   (unsupervised, best relabelling)" if fraction == 0.0 else ""))

    print("decoders with the true parameters, on the held-out rolls (errors summed over "
          f"{test_rolls.shape[0]} x {test_rolls.shape[1]} rolls):")
    print(f"{'decoder':>22} {'expected errors':>16} {'actual errors':>14} {'log p(x, path)':>15}")
    for name, options in (("posterior", {}), ("hybrid C=0.1", {"hybrid_weight": 0.1}),
                          ("hybrid C=1", {"hybrid_weight": 1.0}),
                          ("posterior_viterbi", {}), ("viterbi", {})):
        method = name.split()[0]
        decoding = truth.decode(test_rolls, method, **options)
        actual = int((decoding.paths != test_dice).sum())
        print(f"{name:>22} {float(decoding.expected_errors.sum()):16.1f} {actual:14d} "
              f"{float(decoding.log_probs.sum()):15.1f}")


if __name__ == "__main__":
    main()
