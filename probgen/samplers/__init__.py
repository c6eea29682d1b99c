"""MCMC samplers vectorised over chains, and their diagnostics.

- `sample_chains` (`chains`): one entry point for every method ("mh", "gibbs", "nuts", "hmc",
  "svi") over a probgen Density, a log-density function or a Pyro model; the loops of each
  method are in `runners`, `mh`, `gibbs`, `nuts` and `svi`, the flat target they share in
  `targets`, the draw storage in `recording`.
- `Samples` (`samples`): draws (chain, draw, ...) per parameter with ArviZ-named statistics,
  saved as safetensors; `diagnostics` holds R-hat and effective sample sizes.
- `split`: under `torch.distributed`, `sample_chains` splits the chains over the ranks and
  gathers them on rank 0, with the draws of the single-process run with the same seed.
- `PyroDensity` (`pyro_density`): a Pyro model as a probgen Density over its unconstrained
  latent vector, built on `pyro_potential.PyroPotential`; `as_pyro` (`pyro_distribution`):
  a probgen Density as a Pyro distribution; `site_sums` evaluates the Normal sites of a
  batched potential in a few passes over memory.

Names are imported lazily, so that importing one module of the package (as the mixture family
does with `gibbs`) does not load the others.

Example:
    >>> import torch
    >>> from probgen.samplers import sample_chains
    >>> log_density = lambda x: -0.5 * (x**2).sum(-1)
    >>> samples = sample_chains(log_density, "mh", num_chains=8, num_samples=20, warmup=20,
    ...                         initial=torch.zeros(2), progress=False)
    >>> samples["x"].shape
    (8, 20, 2)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "sample_chains": "probgen.samplers.chains",
    "Samples": "probgen.samplers.samples",
    "PyroDensity": "probgen.samplers.pyro_density",
    "as_pyro": "probgen.samplers.pyro_distribution",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'probgen.samplers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
