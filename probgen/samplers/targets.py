"""Turn what the user gives `sample_chains` into one flat target the samplers understand.

A `FlatTarget` is a log density over flat vectors z of shape (num_chains, dim), in
unconstrained space for continuous coordinates (with the log-Jacobian included) and holding
integer values for discrete ones. It knows how to map z back to named constrained values.

Accepted inputs:
- a probgen Density (`unnormalized_log_prob` when it has one, else `log_prob`), with `support`
  (a torch constraint) or `cardinalities` (values per coordinate) taken from the options or
  from the density's attributes; real support by default;
- a plain function `log_density(x)` of a tensor (num_chains, *event_shape) -> (num_chains,),
  with `initial=` (a tensor giving the event shape) or `support=` and `event_shape=`;
- a Pyro model callable with `model_args` / `model_kwargs` (wrapped as a `PyroPotential`).

Example:
    >>> import torch
    >>> target = make_target(lambda x: -0.5 * (x**2).sum(-1), initial=torch.zeros(3))
    >>> target.dim, target.log_density(torch.zeros(2, 3)).tolist()
    (3, [0.0, 0.0])
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.distributions import constraints
from torch.distributions import biject_to

from probgen.core.errors import DataError
from probgen.samplers.pyro_potential import PyroPotential, _discrete_range


@dataclass
class FlatTarget:
    """A log density over flat vectors (see the module docstring).

    Attributes:
        dim: length of the flat vector.
        log_density_fn: (C, dim) -> (C,).
        constrain_fn: (N, dim) -> dict of named constrained values (N, *shape).
        initial_fn: (num_chains, generator) -> (num_chains, dim) random starting points.
        discrete_mask / cardinality / low: per-coordinate discrete description.
        blocks: index tensors of the Gibbs blocks (one per Pyro site, or all coordinates).
        source: the Density or model the target came from (for `gibbs_step`).
        pyro_density: the `PyroPotential` (or `PyroDensity`) when the target is a Pyro model.
    """

    dim: int
    log_density_fn: Callable[[torch.Tensor], torch.Tensor]
    constrain_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    initial_fn: Callable[[int, torch.Generator], torch.Tensor]
    discrete_mask: torch.Tensor
    cardinality: torch.Tensor
    low: torch.Tensor
    dtype: torch.dtype = torch.float64
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    blocks: list[torch.Tensor] = field(default_factory=list)
    source: Any = None
    pyro_density: PyroPotential | None = None
    unconstrain_fn: Callable[[Any], torch.Tensor] | None = None
    name: str = "x"

    @property
    def continuous_index(self) -> torch.Tensor:
        return torch.nonzero(~self.discrete_mask).flatten()

    @property
    def discrete_index(self) -> torch.Tensor:
        return torch.nonzero(self.discrete_mask).flatten()

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """Checked log density: (C, dim) -> (C,); +inf raises, NaN becomes -inf."""
        values = self.log_density_fn(z)
        if not isinstance(values, torch.Tensor) or values.shape != z.shape[:1]:
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values)
            raise DataError(
                f"the target's log density returned {shape} for {z.shape[0]} points; it must "
                f"return one value per point, shape ({z.shape[0]},)"
            )
        if torch.isposinf(values).any():
            raise DataError(
                "the target's log density returned +inf; a log density must be finite or -inf"
            )
        return torch.nan_to_num(values, nan=-math.inf)

    def check_initial(self, z: torch.Tensor) -> torch.Tensor:
        """Log density at starting points, raising on NaN or +inf."""
        values = self.log_density_fn(z)
        if isinstance(values, torch.Tensor) and values.shape == z.shape[:1]:
            if torch.isnan(values).any():
                chain = int(torch.isnan(values).nonzero()[0])
                raise DataError(
                    f"the target's log density is NaN at the starting point of chain {chain}; "
                    "check the target (NaN means a bug, not a zero density)"
                )
        return self.log_density(z)


def _flat_support(
    support: Any, event_shape: torch.Size, name: str
) -> tuple[Any, torch.Size, bool, int, int]:
    """(transform, unconstrained shape, discrete, low, cardinality) for a support."""
    if support is None:
        support = constraints.real
    if not isinstance(support, constraints.Constraint):
        raise DataError(f"support must be a torch constraint, got {support!r}")
    if support.is_discrete:
        low, cardinality = _discrete_range(name, support)
        return None, event_shape, True, low, cardinality
    try:
        transform = biject_to(support)
    except NotImplementedError as error:
        raise DataError(f"support {support} has no map to unconstrained space") from error
    return transform, transform.inverse_shape(event_shape), False, 0, 0


def _density_log_fn(target: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    if hasattr(target, "unnormalized_log_prob"):
        return target.unnormalized_log_prob
    return target.log_prob


def make_target(
    target: Any,
    *,
    initial: Any = None,
    support: Any = None,
    event_shape: Any = None,
    cardinalities: Any = None,
    model_args: tuple = (),
    model_kwargs: dict[str, Any] | None = None,
    name: str | None = None,
) -> FlatTarget:
    """Build a `FlatTarget` from a Density, a log-density function or a Pyro model."""
    if isinstance(target, PyroPotential):
        return _pyro_target(target, initial)
    is_density = hasattr(target, "log_prob") and hasattr(target, "event_shape")
    if is_density:
        kind = str(getattr(target, "log_prob_kind", "exact"))
        if kind == "none" and not hasattr(target, "unnormalized_log_prob"):
            raise DataError(
                f"target {type(target).__name__} has no density (log_prob_kind 'none'); "
                "it cannot be sampled by MCMC"
            )
        log_fn = _density_log_fn(target)
        event = torch.Size(target.event_shape)
        support = support if support is not None else getattr(target, "support", None)
        if cardinalities is None:
            cardinalities = getattr(target, "cardinalities", None)
        dtype = getattr(target, "dtype", torch.get_default_dtype())
        device = getattr(target, "device", torch.device("cpu"))
        return _function_target(
            log_fn,
            event,
            support,
            cardinalities,
            initial,
            dtype,
            device,
            target,
            name or "x",
        )
    if callable(target):
        if model_args or model_kwargs or _looks_like_pyro_model(target):
            return _pyro_target(PyroPotential(target, model_args, model_kwargs), initial)
        if initial is None and event_shape is None and support is None and cardinalities is None:
            raise DataError(
                "a log-density function needs initial= (a starting tensor) or support= / "
                "event_shape= to know the shape of its argument"
            )
        if initial is not None:
            try:
                initial_tensor = torch.as_tensor(initial)
            except (TypeError, ValueError, RuntimeError) as error:
                raise DataError(f"initial must be a tensor of numbers, got {initial!r}") from error
            event = torch.Size(event_shape) if event_shape is not None else initial_tensor.shape
            dtype = initial_tensor.dtype if initial_tensor.is_floating_point() else torch.float64
            device = initial_tensor.device  # the chains run where the starting point lives
        else:
            if event_shape is None and cardinalities is not None:
                event_shape = (len(torch.as_tensor(cardinalities).reshape(-1)),)
            event = torch.Size(event_shape or ())
            dtype = torch.float64
            device = torch.device("cpu")
        return _function_target(
            target,
            event,
            support,
            cardinalities,
            initial,
            dtype,
            device,
            target,
            name or "x",
        )
    raise DataError(
        f"target must be a probgen Density, a log-density function or a Pyro model; got "
        f"{type(target).__name__}"
    )


def _looks_like_pyro_model(function: Callable[..., Any]) -> bool:
    """A callable that takes no required argument is a Pyro model, not a log density."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return not required


def _pyro_target(density: PyroPotential, initial: Any) -> FlatTarget:
    def constrain(z: torch.Tensor) -> dict[str, torch.Tensor]:
        values = density.constrain(z)
        values.update(density.deterministic(z))
        return values

    def initial_fn(num_chains: int, generator: torch.Generator) -> torch.Tensor:
        if initial is None:
            return density.initial_points(num_chains, generator=generator)
        if not isinstance(initial, dict):
            raise DataError("initial for a Pyro model must be a dict from site name to value")
        z = density.unconstrain(initial)
        return _broadcast_initial(z, num_chains, density.dim)

    blocks = [torch.arange(site.offset, site.offset + site.size) for site in density.sites]
    return FlatTarget(
        dim=density.dim,
        log_density_fn=density.unnormalized_log_prob,
        constrain_fn=constrain,
        initial_fn=initial_fn,
        discrete_mask=density.discrete_mask,
        cardinality=density.cardinality,
        low=density.low,
        dtype=density.dtype,
        blocks=blocks,
        source=density,
        pyro_density=density,
        unconstrain_fn=density.unconstrain,
    )


def _broadcast_initial(z: torch.Tensor, num_chains: int, dim: int) -> torch.Tensor:
    if z.dim() == 1:
        return z.expand(num_chains, dim).clone()
    if z.shape[0] != num_chains:
        raise DataError(
            f"initial has {z.shape[0]} rows for {num_chains} chains; give one value or one "
            "per chain"
        )
    return z.clone()


def _function_target(
    log_fn: Callable[[torch.Tensor], torch.Tensor],
    event: torch.Size,
    support: Any,
    cardinalities: Any,
    initial: Any,
    dtype: torch.dtype,
    device: torch.device,
    source: Any,
    name: str,
) -> FlatTarget:
    event_size = max(1, math.prod(event))
    if cardinalities is not None:
        cardinality = torch.as_tensor(cardinalities, dtype=torch.long).reshape(-1)
        if cardinality.numel() == 1 and event_size > 1:
            cardinality = cardinality.expand(event_size).clone()
        if cardinality.numel() != event_size or (cardinality < 2).any():
            raise DataError(
                f"cardinalities must give a count >= 2 for each of the {event_size} coordinates"
            )
        transform, unconstrained, discrete, low = None, event, True, 0
        low_tensor = torch.zeros(event_size, dtype=torch.long)
    else:
        transform, unconstrained, discrete, low, count = _flat_support(support, event, name)
        cardinality = torch.full((event_size,), count, dtype=torch.long)
        low_tensor = torch.full((event_size,), low, dtype=torch.long)
    dim = max(1, math.prod(unconstrained)) if not discrete else event_size
    if not dtype.is_floating_point:
        dtype = torch.float64

    def to_event(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = z.shape[:-1]
        if discrete:
            return z.reshape(batch + event), z.new_zeros(batch)
        unconstrained_value = z.reshape(batch + unconstrained)
        value = transform(unconstrained_value)
        jacobian = transform.log_abs_det_jacobian(unconstrained_value, value)
        return value, jacobian.reshape(batch + (-1,)).sum(-1)

    def log_density(z: torch.Tensor) -> torch.Tensor:
        value, jacobian = to_event(z)
        if discrete:
            value = value.round()
        raw = torch.as_tensor(log_fn(value))
        if raw.numel() != math.prod(z.shape[:-1]):
            raise DataError(
                f"the target's log density returned shape {tuple(raw.shape)} for "
                f"{math.prod(z.shape[:-1])} points; it must return one value per point, shape "
                f"({math.prod(z.shape[:-1])},)"
            )
        if z.requires_grad and not raw.requires_grad and not discrete:
            # Otherwise autograd fails deep inside the gradient-based kernel.
            raise DataError(
                "the target's log density does not depend on its argument through torch "
                "operations, so it has no gradient; use method='mh' for such a function"
            )
        return raw.reshape(z.shape[:-1]).to(z.dtype) + jacobian

    def constrain(z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: to_event(z)[0]}

    def unconstrain(values: Any) -> torch.Tensor:
        value = torch.as_tensor(values, dtype=dtype, device=device)
        if tuple(value.shape[value.dim() - len(event) :]) != tuple(event):
            raise DataError(
                f"initial has shape {tuple(value.shape)}; the event shape is {tuple(event)}"
            )
        batch = value.shape[: value.dim() - len(event)]
        if discrete:
            return value.reshape(batch + (dim,))
        inside = support is None or bool(torch.all(support.check(value)))
        if not inside:
            raise DataError(f"initial lies outside the support {support}")
        return transform.inv(value).reshape(batch + (dim,))

    def initial_fn(num_chains: int, generator: torch.Generator) -> torch.Tensor:
        if initial is not None:
            return _broadcast_initial(unconstrain(initial), num_chains, dim)
        uniform = torch.rand(
            num_chains, dim, generator=generator, dtype=dtype, device=generator.device
        )
        if discrete:
            return low_tensor.to(dtype) + torch.floor(uniform * cardinality.to(dtype))
        return (2 * uniform - 1) * 2.0

    return FlatTarget(
        dim=dim,
        log_density_fn=log_density,
        constrain_fn=constrain,
        initial_fn=initial_fn,
        discrete_mask=torch.full((dim,), discrete, dtype=torch.bool),
        cardinality=cardinality if discrete else torch.zeros(dim, dtype=torch.long),
        low=low_tensor if discrete else torch.zeros(dim, dtype=torch.long),
        dtype=dtype,
        device=device,
        blocks=[torch.arange(dim)],
        source=source,
        unconstrain_fn=unconstrain,
        name=name,
    )
