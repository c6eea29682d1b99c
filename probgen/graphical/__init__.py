"""Deprecated: the families moved to `probgen.hmm`, `probgen.networks`, `probgen.boltzmann`
and `probgen.mixture`; the modules here are aliases that warn."""
