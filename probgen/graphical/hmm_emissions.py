"""Deprecated alias of `probgen.hmm.emissions`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__,
    "probgen.hmm.emissions",
    "probgen.hmm.emissions.base",
    "probgen.hmm.emissions.categorical",
    "probgen.hmm.emissions.components",
    "probgen.hmm.emissions.gaussian",
    "probgen.hmm.emissions.gmm",
    "probgen.hmm.emissions.poisson",
    "probgen.hmm.emissions.torch_distribution",
    "probgen.hmm.emissions.build",
)
