"""Deprecated alias of `probgen.networks.factors`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__,
    "probgen.networks.factors",
    "probgen.networks.factors.algebra",
    "probgen.networks.factors.orders",
    "probgen.networks.factors.elimination",
    "probgen.networks.factors.junction_tree",
    "probgen.networks.factors.calibration",
    "probgen.networks.factors.loopy",
)
