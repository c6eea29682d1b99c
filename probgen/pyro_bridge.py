"""Deprecated alias of `probgen.samplers.pyro_bridge`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(__name__, 'probgen.samplers.pyro_bridge')
