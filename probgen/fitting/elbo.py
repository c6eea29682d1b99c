"""Pyro ELBOs as losses for the gradient loop (`pyro_elbo_loss`).

`pyro_elbo_loss` turns a Pyro ELBO (`Trace_ELBO`, `TraceMeanField_ELBO`, `RenyiELBO`) into a
`loss(model, batch)` for a model that has Pyro `model` and `guide` methods. Parameters stay in
the model's state dict; nothing goes through Pyro's global parameter store.

Example:
    >>> import pyro
    >>> from probgen.fitting.elbo import pyro_elbo_loss
    >>> callable(pyro_elbo_loss(pyro.infer.Trace_ELBO()))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from probgen.core.errors import DataError
from probgen.fitting.batching import _batch_size_of
from probgen.fitting.optimizers import LossFn

__all__ = ["pyro_elbo_loss"]


def pyro_elbo_loss(elbo: Any) -> LossFn:
    """Turn a Pyro ELBO into a `loss(model, batch)` for `fit_model`: negative ELBO per example.

    The model must have Pyro programs `model(*batch)` and `guide(*batch)` whose data sites sit
    in a `pyro.plate` over the batch. `Trace_ELBO` gives the same values and gradients as its
    `differentiable_loss` with less work per step (see `_TraceElboLoss`) when Pyro's
    validation is off (`pyro.validation_enabled(False)`); other ELBOs (`TraceMeanField_ELBO`,
    ...) go through `elbo.differentiable_loss`; `RenyiELBO` (alpha=0 is the IWAE bound) is
    evaluated from its vectorised traces with reparameterised gradients. Use
    `vectorize_particles=True` with several particles so that they cost one pass. Parameters
    are the model's own (its state dict); Pyro's global parameter store is not used.

    Args:
        elbo: a `pyro.infer` ELBO instance.

    Returns:
        `loss(model, batch) -> scalar tensor`.

    Example:
        >>> import pyro
        >>> loss = pyro_elbo_loss(pyro.infer.Trace_ELBO())
        >>> callable(loss)
        True
    """
    import pyro.infer

    if isinstance(elbo, pyro.infer.RenyiELBO):
        return _RenyiLoss(elbo)
    if not hasattr(elbo, "differentiable_loss"):
        raise DataError(
            f"elbo must be a Pyro ELBO with differentiable_loss (Trace_ELBO, "
            f"TraceMeanField_ELBO) or a RenyiELBO; got {type(elbo).__name__}"
        )
    # Subclasses (JitTrace_ELBO, TraceMeanField_ELBO, ...) change the estimator: exact type only.
    if type(elbo) is pyro.infer.Trace_ELBO:
        return _TraceElboLoss(elbo)

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        args = batch if isinstance(batch, tuple) else (batch,)
        return elbo.differentiable_loss(model.model, model.guide, *args) / _batch_size_of(batch)

    loss.draws_latents_by_row = True  # type: ignore[attr-defined]
    return loss


class _TraceElboLoss:
    """`Trace_ELBO`'s estimator per example, with the same values and gradients and less work.

    Pyro's `Trace_ELBO.differentiable_loss` records full traces of the guide and of the model
    (through three effect handlers), copies both to drop subsample sites, scores every guide
    site twice (`log_prob_sum` for the reported value, `score_parts` for the surrogate), reads
    each site's sum back to Python (`.item()`, a device sync) and hooks a NaN check into the
    graph. For a fully reparameterised guide the surrogate is just the sum of the scaled,
    masked log-densities of the model's sites minus the guide's, which is also the ELBO's
    value. So this loss runs the guide, then the model with the guide's values replayed, each
    under one small recording handler, and sums those terms in Pyro's order (Pyro's own
    expressions, so the gradients match bit for bit). Particles are drawn in sequence or,
    with `vectorize_particles`, in one outer plate as Pyro does.

    Pyro's own `differentiable_loss` is used instead while Pyro's validation is on (it then
    checks shapes and model/guide agreement), while `max_plate_nesting` is still unknown for
    vectorised particles (Pyro guesses it on that call), and from the first guide site with a
    score-function term on (a site without a reparameterised sampler: that step's draws are
    discarded and redone by Pyro).
    """

    # data-parallel fits draw its Pyro latents by global row (probgen.fitting.row_noise)
    draws_latents_by_row = True

    def __init__(self, elbo: Any) -> None:
        self.elbo = elbo
        self.use_pyro = False

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        from pyro.infer.util import is_validation_enabled

        args = batch if isinstance(batch, tuple) else (batch,)
        elbo = self.elbo
        vectorized = elbo.vectorize_particles and elbo.num_particles > 1
        if (
            self.use_pyro
            or is_validation_enabled()
            or (vectorized and elbo.max_plate_nesting == math.inf)
        ):
            return self._pyro_loss(model, args, batch)
        total: torch.Tensor | None = None
        for _ in range(1 if elbo.vectorize_particles else elbo.num_particles):
            try:
                surrogate_elbo = self._particle(model, args, vectorized)
            except _ScoreFunctionSite:
                self.use_pyro = True
                return self._pyro_loss(model, args, batch)
            # Pyro's arithmetic (negate, divide by the number of particles, add up), without
            # its exact no-ops (adding to zero, dividing by one) that only lengthen the graph.
            term = -surrogate_elbo
            if elbo.num_particles != 1:
                term = term / elbo.num_particles
            total = term if total is None else total + term
        assert total is not None
        return total / _batch_size_of(batch)

    def _pyro_loss(self, model: nn.Module, args: tuple, batch: Any) -> torch.Tensor:
        return self.elbo.differentiable_loss(model.model, model.guide, *args) / _batch_size_of(
            batch
        )

    def _run(self, program: Callable, args: tuple, vectorized: bool, replay: Any) -> Any:
        import pyro

        recorder = _site_recorder()(replay)
        with recorder:
            if vectorized:
                particles = pyro.plate(
                    "num_particles_vectorized",
                    self.elbo.num_particles,
                    dim=-self.elbo.max_plate_nesting,
                )
                with particles:
                    program(*args)
            else:
                program(*args)
        return recorder

    def _particle(self, model: nn.Module, args: tuple, vectorized: bool) -> torch.Tensor:
        """The surrogate ELBO of one (possibly vectorised) particle.

        Raises:
            _ScoreFunctionSite: a guide site needs a score-function term.
        """
        from pyro.distributions.util import is_identically_zero, scale_and_mask

        guide = self._run(model.guide, args, vectorized, None)
        if not guide.reparameterized:
            raise _ScoreFunctionSite
        generative = self._run(model.model, args, vectorized, guide.values)
        surrogate: torch.Tensor | None = None
        for site in generative.scored:
            log_prob = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            site_sum = scale_and_mask(log_prob, site["scale"], site["mask"]).sum()
            surrogate = site_sum if surrogate is None else surrogate + site_sum
        for site in guide.scored:
            parts = site["fn"].score_parts(site["value"], *site["args"], **site["kwargs"])
            parts = parts.scale_and_mask(site["scale"], site["mask"])
            if not is_identically_zero(parts.score_function):
                raise _ScoreFunctionSite
            if not is_identically_zero(parts.entropy_term):
                entropy_sum = parts.entropy_term.sum()
                surrogate = -entropy_sum if surrogate is None else surrogate - entropy_sum
        if surrogate is None:
            raise DataError("the model and guide have no sample sites to score")
        return surrogate


class _ScoreFunctionSite(Exception):
    """A guide site without a reparameterised sampler: `Trace_ELBO` needs Pyro's own path."""


_RECORDER: type | None = None


def _site_recorder() -> type:
    """The effect handler of `_TraceElboLoss` (defined on first use: Pyro loads lazily).

    At each sample site it replays the guide's value when given one (as `poutine.replay`)
    and keeps what `poutine.trace` would keep for scoring: the site's distribution after the
    plates have broadcast it, its value, scale and mask. Subsample sites are replayed but not
    scored, as `Trace_ELBO` drops them.
    """
    global _RECORDER
    if _RECORDER is not None:
        return _RECORDER
    from pyro.poutine.messenger import Messenger
    from pyro.poutine.util import site_is_subsample

    class SiteRecorder(Messenger):
        def __init__(self, replay: dict[str, torch.Tensor] | None) -> None:
            super().__init__()
            self.replay = replay
            self.values: dict[str, torch.Tensor] = {}
            self.scored: list[dict[str, Any]] = []
            self.reparameterized = True

        def _pyro_sample(self, msg: Any) -> None:
            if self.replay is None or msg["is_observed"]:
                return
            value = self.replay.get(msg["name"])
            if value is not None:
                msg["value"] = value
                msg["done"] = True

        def _pyro_post_sample(self, msg: Any) -> None:
            if msg["infer"].get("_do_not_trace"):
                return
            name = msg["name"]
            if name in self.values:
                raise RuntimeError(f"Multiple sample sites named '{name}'")
            self.values[name] = msg["value"]
            if site_is_subsample(msg):
                return
            self.scored.append(msg)
            if not msg["is_observed"] and not msg["fn"].has_rsample:
                self.reparameterized = False

    _RECORDER = SiteRecorder
    return SiteRecorder


class _RenyiLoss:
    """Negative Rényi bound per example with reparameterised gradients (IWAE at alpha=0)."""

    draws_latents_by_row = True  # see _TraceElboLoss

    def __init__(self, elbo: Any) -> None:
        self.elbo = elbo

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        from pyro.infer.util import get_dependent_plate_dims, torch_sum

        args = batch if isinstance(batch, tuple) else (batch,)
        particles = []
        for model_trace, guide_trace in self.elbo._get_traces(model.model, model.guide, args, {}):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            value = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    value = value + torch_sum(site["log_prob"], sum_dims)
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    if not site["fn"].has_rsample:
                        raise DataError(
                            f"RenyiELBO loss needs reparameterised guide sites; "
                            f"site {site['name']!r} is not"
                        )
                    value = value - torch_sum(site["log_prob"], sum_dims)
            particles.append(value)
        vectorized = self.elbo.vectorize_particles and self.elbo.num_particles > 1
        stacked = particles[0] if vectorized else torch.stack(particles)
        alpha = self.elbo.alpha
        log_weights = (1.0 - alpha) * stacked
        bound = (torch.logsumexp(log_weights, dim=0) - math.log(self.elbo.num_particles)) / (
            1.0 - alpha
        )
        return -bound.sum() / _batch_size_of(batch)
