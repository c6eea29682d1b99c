"""Deprecated alias of `probgen.networks.bayesnet`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__,
    "probgen.networks.bayesnet",
    "probgen.networks.queries",
    "probgen.networks.approximate",
    "probgen.networks.learning",
    "probgen.networks.interop",
    "probgen.networks.codec",
)
