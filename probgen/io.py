"""Deprecated alias of `probgen.core.io`; import from there instead."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(__name__, 'probgen.core.io')
