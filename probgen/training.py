"""Deprecated alias of the gradient loop's modules in `probgen.fitting`; import from there."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__,
    "probgen.fitting.loop",
    "probgen.fitting.batching",
    "probgen.fitting.optimizers",
    "probgen.fitting.checkpoint",
    "probgen.fitting.elbo",
    "probgen.fitting.settings",
)
