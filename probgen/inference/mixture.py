"""Deprecated alias of `probgen.mixture.inference`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__, 'probgen.mixture.inference', 'probgen.mixture.conjugate'
)
