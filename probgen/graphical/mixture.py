"""Deprecated alias of `probgen.mixture.model`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__, 'probgen.mixture.model', 'probgen.mixture.gibbs', 'probgen.mixture.priors',
    'probgen.mixture.conjugate', 'probgen.mixture.inference'
)
