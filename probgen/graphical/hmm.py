"""Deprecated alias of `probgen.hmm.model`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__,
    "probgen.hmm.model",
    "probgen.hmm.fit",
    "probgen.hmm.parameters",
    "probgen.hmm.interop",
    "probgen.hmm.sequences",
    "probgen.core.errors",
)
