"""A Pyro model as a batched log density over the flat vector of its latent sites.

`PyroPotential(model, model_args, model_kwargs)` turns a Pyro model into a log density over
the flat vector of its latent sites in unconstrained space (each continuous site mapped through
`biject_to(support)`, with the log-Jacobian added; discrete sites with a finite range kept as
their integer values). The samplers (`probgen.samplers.targets`) work on it; the probgen
Density over it is `probgen.samplers.pyro_density.PyroDensity`.

Evaluation is vectorised over a batch of parameter vectors (chains) by running the model once
inside an outer `pyro.plate` (as Pyro's vectorised ELBO particles do); models that index their
latent values from the left (`beta[0]` instead of `beta[..., 0]`) cannot be vectorised that
way, which is detected when the potential is built, and it then evaluates one vector at a time.

Example:
    >>> import torch, pyro, pyro.distributions as dist
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(mu, sigma), obs=y)
    >>> potential = PyroPotential(model, model_args=(torch.tensor([0.5, 1.5, 1.0]),))
    >>> potential.dim, potential.site_names
    (2, ['mu', 'sigma'])
    >>> potential.unnormalized_log_prob(torch.zeros(4, 2)).shape
    torch.Size([4])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.util import scale_and_mask
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to
from torch.distributions.transforms import Transform

from probgen.core.errors import DataError
from probgen.samplers.site_sums import site_chain_sum

CHAIN_PLATE = "_probgen_chains"


@dataclass
class LatentSite:
    """One latent site of a Pyro model and its place in the flat unconstrained vector."""

    name: str
    shape: torch.Size  # constrained value shape (batch + event) without the chain dim
    batch_dims: int  # how many leading dims of `shape` are batch (plate) dims
    unconstrained_shape: torch.Size
    offset: int
    size: int
    transform: Transform | None  # None for discrete sites
    discrete: bool = False
    low: int = 0
    cardinality: int = 0  # number of values for discrete sites


def _discrete_range(name: str, support: Any) -> tuple[int, int]:
    """(low, number of values) of a discrete support, or a DataError naming the site."""
    base = support
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if base is constraints.boolean:
        return 0, 2
    if isinstance(base, constraints.integer_interval):
        low, high = base.lower_bound, base.upper_bound
        if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):
            low_t, high_t = torch.as_tensor(low), torch.as_tensor(high)
            if low_t.numel() > 1 and (low_t != low_t.flatten()[0]).any():
                raise DataError(
                    f"site {name!r}: integer ranges that differ per element are unsupported"
                )
            low, high = low_t.flatten()[0], high_t.max()
        return int(low), int(high) - int(low) + 1
    raise DataError(
        f"site {name!r} has discrete support {support} without a finite range; the samplers "
        "support boolean and integer_interval (Bernoulli, Categorical, Binomial) sites only"
    )


class PyroPotential:
    """A Pyro model as an unnormalised log density over its unconstrained latent vector.

    Args:
        model: a Pyro model (a callable that calls `pyro.sample`).
        model_args: positional arguments of `model`.
        model_kwargs: keyword arguments of `model`.
        vectorize: evaluate many parameter vectors in one model run (True), one at a time
            (False), or detect which works (None, the default).
        jit: compile the vectorised log density with `torch.jit.trace` (one trace per batch
            size, checked against the plain evaluation when made); about 4x faster for small
            models, for models without data-dependent Python control flow.
        prototype_seed: seed for the one prior draw used to discover the sites.

    Attributes:
        sites: the latent sites (`LatentSite`) in order; `site_names` their names.
        deterministic_names: names of `pyro.deterministic` sites, recorded with the draws.
        event_shape: (dim,), the length of the unconstrained vector.

    The log density includes every `pyro.sample` and `pyro.factor` term with its scale and mask,
    plus the log-Jacobian of the maps from unconstrained space; the constant is unknown.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        >>> potential = PyroPotential(model)
        >>> values = potential.constrain(torch.zeros(1, 1))
        >>> float(values["scale"][0])
        1.0
    """

    def __init__(
        self,
        model: Callable[..., Any],
        model_args: tuple = (),
        model_kwargs: dict[str, Any] | None = None,
        *,
        vectorize: bool | None = None,
        jit: bool = False,
        prototype_seed: int = 0,
    ) -> None:
        # Cooperative: in `PyroDensity(PyroPotential, Model)` this runs `Model.__init__`, which
        # must come before any attribute is set on the nn.Module.
        super().__init__()
        if not callable(model):
            raise DataError(f"model must be a callable Pyro program, got {type(model).__name__}")
        self.model = model
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs or {})
        self._discover_sites(prototype_seed)
        self.event_shape = torch.Size([self.dim])
        self.vectorize = self._check_vectorization() if vectorize is None else bool(vectorize)
        self.jit = bool(jit) and self.vectorize
        self._jit_cache: dict[tuple[int, torch.dtype, bool], Callable[..., Any]] = {}

    # ---- site discovery ----------------------------------------------------------------------
    def _prototype_trace(self, seed: int) -> poutine.Trace:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                # Latent values come from init_to_uniform (Uniform(-2, 2) in unconstrained
                # space), which also serves sites with improper priors that cannot be sampled.
                initialised = InitMessenger(_init_uniform)(self.model)
                return poutine.trace(initialised).get_trace(*self.model_args, **self.model_kwargs)
            except DataError:
                raise
            except Exception as error:
                raise DataError(f"the Pyro model failed when run once: {error}") from error

    def _discover_sites(self, seed: int) -> None:
        trace = self._prototype_trace(seed)
        self.sites: list[LatentSite] = []
        self.deterministic_names: list[str] = []
        self._deterministic_shapes: dict[str, torch.Size] = {}
        nesting = 0
        offset = 0
        dtype = None
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
            if frames:
                nesting = max(nesting, -min(f.dim for f in frames))
            fn = site["fn"]
            nesting = max(nesting, len(getattr(fn, "batch_shape", ())))
            if site["infer"].get("_deterministic"):
                self.deterministic_names.append(name)
                self._deterministic_shapes[name] = site["value"].shape
                continue
            if site["is_observed"] or site["infer"].get("is_auxiliary"):
                continue
            if site["infer"].get("enumerate"):
                raise DataError(
                    f"site {name!r} is marked for enumeration; the samplers draw discrete sites "
                    "instead (remove infer={'enumerate': ...})"
                )
            value = site["value"]
            shape = value.shape
            batch_dims = len(shape) - fn.event_dim
            support = fn.support
            if support.is_discrete:
                low, cardinality = _discrete_range(name, support)
                size = max(1, math.prod(shape))
                self.sites.append(
                    LatentSite(
                        name, shape, batch_dims, shape, offset, size, None, True, low, cardinality
                    )
                )
            else:
                try:
                    transform = biject_to(support)
                except NotImplementedError as error:
                    raise DataError(
                        f"site {name!r} has support {support}, which has no map to unconstrained "
                        "space; the samplers cannot handle it"
                    ) from error
                unconstrained_shape = transform.inverse_shape(shape)
                size = max(1, math.prod(unconstrained_shape))
                self.sites.append(
                    LatentSite(
                        name, shape, batch_dims, unconstrained_shape, offset, size, transform
                    )
                )
                if value.is_floating_point():
                    dtype = value.dtype
            offset += size
        if not self.sites:
            raise DataError("the Pyro model has no latent sample sites to sample")
        self.max_plate_nesting = nesting
        self.dim = offset
        self._value_dtype = dtype or torch.get_default_dtype()
        self.site_names = [site.name for site in self.sites]

    @property
    def dtype(self) -> torch.dtype:
        return self._value_dtype

    @property
    def discrete_mask(self) -> torch.Tensor:
        """Bool (dim,): which coordinates hold discrete values."""
        return self._per_discrete_coordinate("discrete", torch.bool)

    @property
    def cardinality(self) -> torch.Tensor:
        """Long (dim,): number of values of each discrete coordinate, 0 for continuous ones."""
        return self._per_discrete_coordinate("cardinality", torch.long)

    @property
    def low(self) -> torch.Tensor:
        """Long (dim,): smallest value of each discrete coordinate."""
        return self._per_discrete_coordinate("low", torch.long)

    def _per_discrete_coordinate(self, attribute: str, dtype: torch.dtype) -> torch.Tensor:
        """(dim,): each discrete site's `attribute` on its coordinates, zero elsewhere."""
        values = torch.zeros(self.dim, dtype=dtype)
        for site in self.sites:
            if site.discrete:
                values[site.offset : site.offset + site.size] = getattr(site, attribute)
        return values

    # ---- transforms ------------------------------------------------------------------------
    def constrain(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map flat unconstrained vectors (*batch, dim) to constrained site values.

        Returns:
            Dict from site name to tensor (*batch, *site_shape).
        """
        batch = z.shape[:-1]
        values = {}
        for site in self.sites:
            piece = z[..., site.offset : site.offset + site.size]
            if site.discrete:
                values[site.name] = piece.reshape(batch + site.shape)
            else:
                unconstrained = piece.reshape(batch + site.unconstrained_shape)
                values[site.name] = site.transform(unconstrained)
        return values

    def unconstrain(self, values: dict[str, Any]) -> torch.Tensor:
        """Map constrained site values (*batch, *site_shape) to flat vectors (*batch, dim)."""
        pieces = []
        batch = None
        for site in self.sites:
            if site.name not in values:
                raise DataError(f"initial values lack site {site.name!r}")
            value = torch.as_tensor(values[site.name], dtype=self._value_dtype)
            site_batch = value.shape[: value.dim() - len(site.shape)]
            if tuple(value.shape[len(site_batch) :]) != tuple(site.shape):
                raise DataError(
                    f"value of site {site.name!r} has shape {tuple(value.shape)}; expected "
                    f"(..., {', '.join(map(str, site.shape))})"
                )
            batch = site_batch if batch is None else batch
            if site.discrete:
                pieces.append(value.reshape(site_batch + (-1,)))
            else:
                pieces.append(site.transform.inv(value).reshape(site_batch + (-1,)))
        pieces = [torch.broadcast_to(p, tuple(batch) + p.shape[-1:]) for p in pieces]
        return torch.cat(pieces, dim=-1)

    # ---- log density -------------------------------------------------------------------------
    def _batched_model(self, num_chains: int) -> Callable[..., Any]:
        def batched(*args: Any, **kwargs: Any) -> Any:
            with pyro.plate(CHAIN_PLATE, num_chains, dim=-(self.max_plate_nesting + 1)):
                return self.model(*args, **kwargs)

        return batched

    def _run_batched(self, z: torch.Tensor) -> tuple[torch.Tensor, poutine.Trace]:
        """Log density (C,) and the trace for flat vectors z (C, dim), one model run."""
        num_chains = z.shape[0]
        data = {}
        log_jacobian = torch.zeros(num_chains, dtype=z.dtype, device=z.device)
        for site in self.sites:
            piece = z[:, site.offset : site.offset + site.size]
            if site.discrete:
                value = piece.reshape((num_chains,) + site.shape)
            else:
                unconstrained = piece.reshape((num_chains,) + site.unconstrained_shape)
                value = site.transform(unconstrained)
                jacobian = site.transform.log_abs_det_jacobian(unconstrained, value)
                log_jacobian = log_jacobian + jacobian.reshape(num_chains, -1).sum(1)
            padding = (1,) * (self.max_plate_nesting - site.batch_dims)
            data[site.name] = value.reshape((num_chains,) + padding + site.shape)
        conditioned = poutine.condition(self._batched_model(num_chains), data=data)
        trace = poutine.trace(conditioned).get_trace(*self.model_args, **self.model_kwargs)
        total = log_jacobian
        for name, site in trace.nodes.items():
            if skip_site(site):
                continue
            # Normal sites (the large likelihood blocks) in a few passes over memory
            site_sum = site_chain_sum(site, num_chains, self.max_plate_nesting)
            if site_sum is None:
                log_prob = site["fn"].log_prob(site["value"])
                log_prob = scale_and_mask(log_prob, site["scale"], site["mask"])
                site_sum = _per_chain_sum(log_prob, num_chains, self.max_plate_nesting, name)
            total = total + site_sum
        return total, trace

    def _run_single(self, z: torch.Tensor) -> tuple[torch.Tensor, poutine.Trace]:
        """Log density of one flat vector z (dim,) without the chain plate."""
        data = {}
        log_jacobian = z.new_zeros(())
        for site in self.sites:
            piece = z[site.offset : site.offset + site.size]
            if site.discrete:
                data[site.name] = piece.reshape(site.shape)
            else:
                unconstrained = piece.reshape(site.unconstrained_shape)
                value = site.transform(unconstrained)
                log_jacobian = (
                    log_jacobian + site.transform.log_abs_det_jacobian(unconstrained, value).sum()
                )
                data[site.name] = value
        conditioned = poutine.condition(self.model, data=data)
        trace = poutine.trace(conditioned).get_trace(*self.model_args, **self.model_kwargs)
        total = log_jacobian
        for site in trace.nodes.values():
            if skip_site(site):
                continue
            log_prob = site["fn"].log_prob(site["value"])
            total = total + scale_and_mask(log_prob, site["scale"], site["mask"]).sum()
        return total, trace

    def _check_vectorization(self) -> bool:
        generator = torch.Generator().manual_seed(0)
        z = self.initial_points(3, generator=generator)
        try:
            batched, _ = self._run_batched(z)
        except Exception:
            return False
        single = torch.stack([self._run_single(row)[0] for row in z])
        both_finite = torch.isfinite(batched) & torch.isfinite(single)
        same_inf = (batched == single) | both_finite
        close = torch.allclose(batched[both_finite], single[both_finite], rtol=1e-4, atol=1e-4)
        return bool(same_inf.all() and close)

    def unnormalized_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log density (up to a constant) of flat unconstrained vectors (*batch, dim)."""
        z = torch.as_tensor(z, dtype=self._value_dtype)
        if z.shape[-1:] != (self.dim,):
            raise DataError(f"z has shape {tuple(z.shape)}; its last dimension must be {self.dim}")
        batch = z.shape[:-1]
        flat = z.reshape(-1, self.dim)
        if self.jit:
            values = self._jitted(flat)
        elif self.vectorize:
            values, _ = self._run_batched(flat)
        else:
            values = torch.stack([self._run_single(row)[0] for row in flat])
        return values.reshape(batch)

    def _jitted(self, z: torch.Tensor) -> torch.Tensor:
        key = (z.shape[0], z.dtype, torch.is_grad_enabled())
        function = self._jit_cache.get(key)
        if function is None:

            def plain(points: torch.Tensor) -> torch.Tensor:
                return self._run_batched(points)[0]

            with pyro.validation_enabled(False), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                function = torch.jit.trace(plain, (z.detach(),), check_trace=False)
            expected = plain(z.detach())
            got = function(z.detach())
            if not torch.allclose(got, expected, rtol=1e-6, atol=1e-8, equal_nan=True):
                warnings.warn(
                    "the jit-compiled log density disagrees with the plain one; jit is off",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.jit = False
                return plain(z)
            if len(self._jit_cache) > 16:
                self._jit_cache.clear()
            self._jit_cache[key] = function
        return function(z)

    def potential_fn(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pyro-style potential energy: minus the log density of `params["z"]` (dim,)."""
        return -self.unnormalized_log_prob(params["z"].unsqueeze(0))[0]

    def deterministic(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Values of the `pyro.deterministic` sites at flat vectors z (N, dim)."""
        if not self.deterministic_names:
            return {}
        with torch.no_grad():
            if self.vectorize:
                _, trace = self._run_batched(z)
                traces = [(trace, z.shape[0])]
            else:
                traces = [(self._run_single(row)[1], 1) for row in z]
        result: dict[str, list[torch.Tensor]] = {name: [] for name in self.deterministic_names}
        for trace, count in traces:
            for name in self.deterministic_names:
                shape = self._deterministic_shapes[name]
                value = trace.nodes[name]["value"]
                if value.numel() == math.prod(shape):
                    value = value.reshape(shape).expand((count,) + shape)
                result[name].append(value.reshape((count,) + shape))
        return {name: torch.cat(parts) for name, parts in result.items()}

    def initial_points(
        self, num_chains: int, *, generator: torch.Generator | None = None, radius: float = 2.0
    ) -> torch.Tensor:
        """Random starting vectors (num_chains, dim): Uniform(-radius, radius) for continuous
        coordinates (Stan's default), uniform over the range for discrete ones."""
        uniform = torch.rand(num_chains, self.dim, generator=generator, dtype=self._value_dtype)
        points = (2 * uniform - 1) * radius
        mask = self.discrete_mask
        if mask.any():
            cardinality = self.cardinality.to(points.dtype)
            discrete = self.low.to(points.dtype) + torch.floor(uniform * cardinality)
            points = torch.where(mask, discrete, points)
        return points


def _init_uniform(site: dict[str, Any]) -> torch.Tensor:
    """A value for a latent site: Uniform(-2, 2) in unconstrained space (works for improper
    priors, which cannot be sampled); a prior draw for discrete sites."""
    fn = site["fn"]
    if fn.support.is_discrete:
        return fn.sample().detach()
    transform = biject_to(fn.support)
    shape = transform.inverse_shape(fn.batch_shape + fn.event_shape)
    # Improper priors hold no tensor to take a dtype from; float64 is the safe choice.
    dtype = torch.float64
    for value in fn.__dict__.values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            dtype = value.dtype
            break
    return transform(4 * torch.rand(shape, dtype=dtype) - 2).detach()


def skip_site(site: dict[str, Any]) -> bool:
    """Whether a trace node adds nothing to the log density (params, plates, deterministics)."""
    return (
        site["type"] != "sample"
        or site_is_subsample(site)
        or bool(site["infer"].get("_deterministic"))
    )


def _per_chain_sum(
    log_prob: torch.Tensor, num_chains: int, nesting: int, name: str
) -> torch.Tensor:
    """Sum a site's log-prob over every dimension but the chain plate's."""
    if log_prob.dim() < nesting + 1:
        return log_prob.sum().expand(num_chains)
    axis = log_prob.dim() - (nesting + 1)
    moved = log_prob.movedim(axis, 0)
    if moved.shape[0] == num_chains:
        return moved.reshape(num_chains, -1).sum(1)
    if moved.shape[0] == 1:
        return moved.sum().expand(num_chains)
    raise DataError(
        f"site {name!r} has log-prob shape {tuple(log_prob.shape)} that does not "
        "broadcast with the chains"
    )
