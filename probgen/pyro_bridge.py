"""Deprecated alias of the Pyro bridges, now `probgen.samplers.pyro_density` (`PyroDensity`),
`probgen.samplers.pyro_potential` (`PyroPotential`, `LatentSite`) and
`probgen.samplers.pyro_distribution` (`as_pyro`, `DensityDistribution`); import from there."""

from probgen.core.compat import moved

__getattr__, __dir__ = moved(
    __name__,
    "probgen.samplers.pyro_density",
    "probgen.samplers.pyro_potential",
    "probgen.samplers.pyro_distribution",
)
