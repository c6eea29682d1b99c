"""Hidden Markov models: batched forward-backward, Viterbi and EM, with any emission family.

`probgen.hmm.inference` holds the pure tensor recursions, `probgen.hmm.emissions` the
emission families, `probgen.hmm.model` the `HMM` class.

Example:
    >>> from probgen.hmm import HMM
    >>> HMM(2, emission="categorical", n_symbols=3).n_states
    2
"""

from __future__ import annotations

from probgen.hmm.model import HMM

__all__ = ["HMM"]
