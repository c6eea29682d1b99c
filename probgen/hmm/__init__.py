"""Hidden Markov models: batched forward-backward, Viterbi and EM, with any emission family.

`probgen.hmm.inference` holds the pure tensor recursions, `probgen.hmm.emissions` the
emission families, `probgen.hmm.model` the `HMM` class; `probgen.hmm.labels` (partially
labelled sequences), `probgen.hmm.decoding` (risk-based decoders) and the hidden semi-Markov
model `HSMM` (`probgen.hmm.semi_markov`, `hsmm_inference`, `durations`) extend it.

Example:
    >>> from probgen.hmm import HMM
    >>> HMM(2, emission="categorical", n_symbols=3).n_states
    2
"""

from __future__ import annotations

from probgen.hmm.decoding import Decoding
from probgen.hmm.model import HMM
from probgen.hmm.semi_markov import HSMM

__all__ = ["HMM", "HSMM", "Decoding"]
