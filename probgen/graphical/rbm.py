"""Deprecated alias of `probgen.boltzmann.rbm`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__,
    'probgen.boltzmann.rbm',
    'probgen.boltzmann.rbm_fit',
    'probgen.boltzmann.rbm_sampling',
    'probgen.boltzmann.rbm_training',
)
