"""`as_pyro`: a probgen Density seen as a Pyro distribution.

`as_pyro(density)` wraps any probgen Density as a `pyro.distributions.TorchDistribution`
(`DensityDistribution`), so a fitted model can serve as a prior or likelihood inside a Pyro
program. (The other direction, a Pyro model as a Density, is
`probgen.samplers.pyro_density.PyroDensity`.)

Example:
    >>> import torch, pyro
    >>> class Uniform01:
    ...     event_shape = torch.Size([])
    ...     def log_prob(self, x):
    ...         return torch.zeros(x.shape)
    >>> as_pyro(Uniform01()).log_prob(torch.tensor([0.2, 0.7]))
    tensor([0., 0.])
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from probgen.core.errors import DataError

__all__ = ["DensityDistribution", "as_pyro"]


class DensityDistribution(dist.TorchDistribution):
    """A probgen Density seen as a Pyro distribution (built by `as_pyro`).

    `log_prob` calls the density's `log_prob` (of whatever kind it reports); `sample` calls the
    density's `sample` with a seed drawn from torch's global generator, so `pyro.set_rng_seed`
    makes Pyro programs that use it reproducible.

    `validate_args` works as in torch: True checks every value given to `log_prob` against the
    batch and event shapes and the density's `support` (raising `DataError`), False skips the
    checks, None follows `torch.distributions.Distribution.set_default_validate_args`.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(
        self, density: Any, batch_shape: torch.Size = torch.Size(), validate_args: Any = None
    ):
        self.density = density
        event_shape = torch.Size(getattr(density, "event_shape", torch.Size()))
        super().__init__(torch.Size(batch_shape), event_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        support = getattr(self.density, "support", None)
        if support is None:
            return constraints.independent(constraints.real, len(self.event_shape))
        return support

    def expand(self, batch_shape: Any, _instance: Any = None) -> DensityDistribution:
        return DensityDistribution(
            self.density, torch.Size(batch_shape), validate_args=self._validate_args
        )

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        count = max(1, math.prod(shape))
        seed = int(torch.randint(0, 2**62, ()).item())
        draws = self.density.sample(count, seed=seed)
        if not isinstance(draws, torch.Tensor):
            raise DataError(
                f"as_pyro: {type(self.density).__name__}.sample returned "
                f"{type(draws).__name__}; only tensor-valued densities can be sampled in Pyro"
            )
        return draws.reshape(shape + draws.shape[1:])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            try:
                self._validate_sample(value)
            except ValueError as error:
                raise DataError(f"as_pyro: {error}") from error
        event_dims = len(self.event_shape)
        batch = value.shape[: value.dim() - event_dims]
        flat = value.reshape((-1,) + tuple(self.event_shape))
        return self.density.log_prob(flat).reshape(batch)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        if not hasattr(self.density, "enumerate_support"):
            raise NotImplementedError(f"{type(self.density).__name__} has no enumerate_support")
        values = self.density.enumerate_support()
        shape = values.shape[:1] + (1,) * len(self.batch_shape) + values.shape[1:]
        values = values.reshape(shape)
        if expand:
            values = values.expand(values.shape[:1] + self.batch_shape + self.event_shape)
        return values


def as_pyro(density: Any) -> DensityDistribution:
    """Wrap a probgen Density as a Pyro distribution for use inside Pyro programs.

    Args:
        density: anything with `event_shape`, `log_prob(x)` and (for sampling) `sample(n,
            seed=)`.

    Example:
        >>> import torch, pyro
        >>> from probgen.samplers.pyro_distribution import as_pyro
        >>> class StandardNormal:
        ...     event_shape = torch.Size([2])
        ...     def log_prob(self, x):
        ...         return torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
        ...     def sample(self, n, *, seed=None):
        ...         return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
        >>> def model():
        ...     return pyro.sample("x", as_pyro(StandardNormal()))
        >>> model().shape
        torch.Size([2])
    """
    for attribute in ("event_shape", "log_prob"):
        if not hasattr(density, attribute):
            raise DataError(f"as_pyro: density has no {attribute!r}; expected a probgen Density")
    return DensityDistribution(density)

