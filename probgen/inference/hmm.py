"""Deprecated alias of `probgen.hmm.inference`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__, "probgen.hmm.inference", "probgen.hmm.layout", "probgen.hmm.scan"
)
