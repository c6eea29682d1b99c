"""ChEES-HMC: Hamiltonian Monte Carlo run on every chain at once, tuned across chains.

ChEES-HMC (Hoffman, Radul & Sountsov, AISTATS 2021) moves all chains with the same step size
and the same number of leapfrog steps, so that one batched call of the log density and one
`torch.autograd.grad` of its sum over chains give every chain's gradient: the cost of a step
barely grows with the number of chains. Warm-up adapts, jointly over the chains:

- the step size, by Nesterov dual averaging of the harmonic mean of the chains' acceptance
  probabilities toward ``target_accept`` (0.651, as in the paper);
- the trajectory length T, by Adam on log T following the analytic gradient of the ChEES
  *rate* (``criterion="chees_rate"``, TFP's default: the paper's ChEES, the expected change in
  squared distance from the centre of the chains in the mass-preconditioned coordinates,
  divided by T, so per gradient rather than per transition; ``criterion="chees"`` maximises
  ChEES itself, which prefers longer trajectories), with no differentiation through the
  trajectory; each iteration runs a trajectory of length h T, h the next point of the base-2
  Halton sequence (deterministic jitter that breaks periodicities). The gradient is pooled
  over at least 32 chain trajectories (consecutive iterations when there are fewer chains) so
  that 4 chains adapt as stably as 64; each move of log T is clipped to +-0.35. T starts at
  ten steps, waits for the first mass-matrix estimate, is rescaled by the ratio of the
  heuristic step sizes when the metric changes, stays within [one step, max_leapfrog_steps]
  of the averaged step size, and ends at its averaged warm-up value;
- a diagonal inverse mass matrix, started from 1 / |gradient| (as nutpie does) and then the
  variances of the chains' pooled states over Stan's doubling windows
  (`probgen.samplers.mh.covariance_window_ends`), shrunk as Stan does.

A trajectory whose energy error exceeds ``divergence_threshold`` (1000) or turns non-finite is
divergent: that chain stops where it started (its acceptance probability is zero) and the
iteration is reported in the ``diverging`` statistic. `sample_chains(target, "chees")` runs it
through `run_chees`; the settings are in `CHEES_OPTIONS`.

Example:
    >>> import torch
    >>> from probgen.samplers.chains import sample_chains
    >>> log_density = lambda x: -0.5 * (x**2).sum(-1)
    >>> samples = sample_chains(log_density, "chees", num_chains=16, num_samples=100,
    ...                         warmup=100, initial=torch.zeros(3), progress=False)
    >>> samples["x"].shape, samples.stats["diverging"].shape
    ((16, 100, 3), (16, 100))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import torch

from probgen.core.errors import DataError
from probgen.samplers.chees_adaptation import CheesAdaptation, DualAveraging, pooled_sum
from probgen.samplers.targets import FlatTarget

__all__ = [
    "CHEES_OPTIONS",
    "CheesAdaptation",
    "DualAveraging",
    "halton",
    "leapfrog",
    "run_chees",
    "value_and_grad",
]

CHEES_OPTIONS = {
    "step_size",
    "target_accept",
    "trajectory_length",
    "adapt_step_size",
    "adapt_trajectory_length",
    "adapt_mass_matrix",
    "learning_rate",
    "max_leapfrog_steps",
    "jitter",
    "divergence_threshold",
    "restart_stragglers",
    "criterion",
}
CRITERIA = ("chees", "chees_rate")


def halton(index: int, base: int = 2) -> float:
    """Element `index` (from 1) of the van der Corput / Halton sequence in `base`, in (0, 1).

    Example:
        >>> [halton(i) for i in range(1, 5)]
        [0.5, 0.25, 0.75, 0.125]
    """
    result, fraction = 0.0, 1.0
    while index > 0:
        fraction /= base
        result += fraction * (index % base)
        index //= base
    return result


def value_and_grad(target: FlatTarget, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log densities (C,) and their gradients (C, dim) of every chain in one batched call."""
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)
        lp = target.log_density(leaf)
        # Chains at -inf would put inf/NaN into the shared backward pass; they are divergent
        # anyway, so their gradient is left out (torch.where passes zero to them).
        total = torch.where(torch.isfinite(lp), lp, torch.zeros_like(lp)).sum()
        (grad,) = torch.autograd.grad(total, leaf)
    return lp.detach(), grad


def leapfrog(
    gradient_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    z: torch.Tensor,
    momentum: torch.Tensor,
    lp: torch.Tensor,
    grad: torch.Tensor,
    step_size: float,
    num_steps: int,
    inverse_mass: torch.Tensor,
    threshold: float = 1000.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`num_steps` leapfrog steps of every chain at once.

    A chain whose energy error exceeds `threshold` or turns non-finite at any step diverges: it
    is put back at its start with zero momentum for the rest of the trajectory (so it never
    feeds non-finite values to the target again).

    Returns:
        (z, momentum, lp, grad, energy error, diverged) at the end of the trajectory.

    Example:
        >>> import torch
        >>> fn = lambda z: (-0.5 * (z**2).sum(-1), -z)
        >>> z0, p0 = torch.ones(2, 1), torch.zeros(2, 1)
        >>> lp, grad = fn(z0)
        >>> out = leapfrog(fn, z0, p0, lp, grad, 0.1, 31, torch.ones(1))
        >>> round(float(out[0][0, 0]), 2)  # half a period of a unit oscillator: z -> -z
        -1.0
    """
    start_z, start_lp, start_grad = z, lp, grad
    energy0 = -lp + 0.5 * (inverse_mass * momentum.square()).sum(-1)
    diverged = torch.zeros_like(lp, dtype=torch.bool)
    error = torch.zeros_like(lp)
    zero = torch.zeros_like(momentum)
    momentum = momentum.add(grad, alpha=0.5 * step_size)
    for step in range(num_steps):
        z = torch.addcmul(z, inverse_mass, momentum, value=step_size)
        lp, grad = gradient_fn(z)
        half = 0.5 if step == num_steps - 1 else 1.0
        momentum = momentum.add(grad, alpha=half * step_size)
        error = 0.5 * (inverse_mass * momentum.square()).sum(-1) - lp - energy0
        # NaN (a non-finite density or gradient) fails the comparison too.
        diverged = diverged | ~(error <= threshold)
        # No host sync: frozen chains are masked with elementwise selects at every step.
        keep = diverged[:, None]
        z = torch.where(keep, start_z, z)
        momentum = torch.where(keep, zero, momentum)
    lp = torch.where(diverged, start_lp, lp)
    grad = torch.where(diverged[:, None], start_grad, grad)
    error = torch.where(diverged, torch.full_like(error, math.inf), error)
    return z, momentum, lp, grad, error, diverged


# ---------------------------------------------------------------------------------------------
# The sampler loop
# ---------------------------------------------------------------------------------------------
def _positive(options: dict[str, Any], name: str, default: Any) -> Any:
    value = options.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"{name} must be a positive number, got {value!r}")
    if not (math.isfinite(float(value)) and value > 0):
        raise DataError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _flag(options: dict[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if not isinstance(value, (bool, np.bool_)):
        raise DataError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def chees_settings(options: dict[str, Any]) -> dict[str, Any]:
    """Checked settings of a ChEES run (see `CHEES_OPTIONS`), defaults filled in.

    Raises:
        DataError: naming the option that is out of range or of the wrong type.

    Example:
        >>> chees_settings({})["target_accept"]
        0.651
    """
    unknown = set(options) - CHEES_OPTIONS
    if unknown:
        raise DataError(
            f"unknown chees option(s) {sorted(unknown)}; known: {sorted(CHEES_OPTIONS)}"
        )
    target_accept = _positive(options, "target_accept", 0.651)
    if not target_accept < 1:
        raise DataError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    criterion = options.get("criterion", "chees_rate")
    if criterion not in CRITERIA:
        raise DataError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    steps = options.get("max_leapfrog_steps", 1000)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise DataError(f"max_leapfrog_steps must be a positive integer, got {steps!r}")
    return {
        "step_size": _positive(options, "step_size", None),
        "trajectory_length": _positive(options, "trajectory_length", None),
        "target_accept": target_accept,
        "learning_rate": _positive(options, "learning_rate", 0.025),
        "max_leapfrog_steps": int(steps),
        "divergence_threshold": _positive(options, "divergence_threshold", 1000.0),
        "jitter": _flag(options, "jitter", True),
        "adapt_step_size": _flag(options, "adapt_step_size", True),
        "adapt_trajectory_length": _flag(options, "adapt_trajectory_length", True),
        "adapt_mass_matrix": _flag(options, "adapt_mass_matrix", True),
        "restart_stragglers": _flag(options, "restart_stragglers", True),
        "criterion": criterion,
    }


def _momentum(
    z: torch.Tensor, inverse_mass: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    return noise / inverse_mass.sqrt()


def initial_step_size(
    gradient_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    z: torch.Tensor,
    lp: torch.Tensor,
    grad: torch.Tensor,
    inverse_mass: torch.Tensor,
    step_size: float,
    generator: torch.Generator,
    threshold: float = 1000.0,
) -> float:
    """Stan's heuristic on all chains: double or halve the step until one leapfrog step's
    mean acceptance probability crosses 1/2."""
    momentum = _momentum(z, inverse_mass, generator)

    def mean_accept(step: float) -> float:
        *_, error, _ = leapfrog(
            gradient_fn, z, momentum, lp, grad, step, 1, inverse_mass, threshold
        )
        accept = torch.exp(torch.clamp(-error, max=0.0)).nan_to_num(0.0)
        total, count = pooled_sum(torch.stack([accept, torch.ones_like(accept)], 1)).tolist()
        return total / count

    accept = mean_accept(step_size)
    direction = 1.0 if accept > 0.5 else -1.0
    for _ in range(60):
        candidate = step_size * 2.0**direction
        accept = mean_accept(candidate)
        if (direction > 0 and accept < 0.5) or (direction < 0 and accept > 0.5):
            return candidate if direction < 0 else step_size
        step_size = candidate
        if not 1e-12 < step_size < 1e6:
            break
    return step_size


def run_chees(run: Any, restart: Callable[..., Any] | None = None, **options: Any) -> None:
    """Fill `run.recorder` with ChEES-HMC draws (`run` is a `probgen.samplers.runners.SamplerRun`).

    Args:
        run: the flat target, recorder, starting points and generator of the run.
        restart: `restart_stragglers(z, lp, generator)`, applied at 10% of warm-up and at the
            mass-matrix window ends when the ``restart_stragglers`` option is on.
        **options: see `CHEES_OPTIONS` and `chees_settings`.
    """
    settings = chees_settings(options)
    # Early trajectories with a poor step size can overflow a transform (exp of a large
    # unconstrained value); the chain must simply diverge then, not fail Pyro's argument checks.
    with pyro.validation_enabled(False):
        _run(run, settings, restart)


def _run(run: Any, settings: dict[str, Any], restart: Callable[..., Any] | None) -> None:
    target, generator, warmup = run.target, run.generator, run.warmup
    z, lp = run.z.to(target.device), run.lp.to(target.device)

    def gradient_fn(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return value_and_grad(target, points)

    threshold = settings["divergence_threshold"]
    lp, grad = gradient_fn(z)
    adaptation = CheesAdaptation(
        target.dim,
        warmup,
        step_size=settings["step_size"] or 1.0,
        trajectory_length=settings["trajectory_length"],
        target_accept=settings["target_accept"],
        learning_rate=settings["learning_rate"],
        max_leapfrog_steps=settings["max_leapfrog_steps"],
        adapt_step_size=settings["adapt_step_size"] and warmup > 0,
        adapt_trajectory_length=settings["adapt_trajectory_length"] and warmup > 0,
        adapt_mass_matrix=settings["adapt_mass_matrix"] and warmup > 0,
        like=z,
        criterion=settings["criterion"],
    )
    if adaptation.adapt_mass_matrix:
        # nutpie's start: scales from the gradient (1 / |d log p / dz|, averaged over chains),
        # so that the first window already sees a roughly standardised target.
        pooled = pooled_sum(torch.cat([grad.abs(), torch.ones_like(grad[:, :1])], 1))
        size = pooled[:-1] / pooled[-1]
        usable = torch.isfinite(size) & (size > 0)
        start = torch.where(usable, 1.0 / size.clamp_min(1e-300), torch.ones_like(size))
        adaptation.inverse_mass = start.clamp(1e-8, 1e8)
    if settings["step_size"] is None:
        found = initial_step_size(
            gradient_fn, z, lp, grad, adaptation.inverse_mass, 1.0, generator, threshold
        )
        adaptation.restart_averaging(found)
        if settings["trajectory_length"] is None:
            adaptation.log_length = math.log(10 * found)
    restart_points = set()
    if restart is not None and settings["restart_stragglers"] and z.shape[0] >= 4:
        restart_points = {int(0.1 * warmup)} | adaptation.window_ends
    attrs = run.recorder.attrs
    warmup_divergences = 0
    gradients = 0
    started = time.perf_counter()
    draws_started = started if warmup == 0 else None
    for iteration, draw in run.sweeps():
        if iteration == warmup:
            adaptation.finish()
            draws_started = time.perf_counter()
        jitter = halton(iteration + 1) if settings["jitter"] else 1.0
        num_steps = adaptation.num_steps(jitter)
        step_size = adaptation.step_size
        momentum = _momentum(z, adaptation.inverse_mass, generator)
        new_z, new_momentum, new_lp, new_grad, error, diverged = leapfrog(
            gradient_fn,
            z,
            momentum,
            lp,
            grad,
            step_size,
            num_steps,
            adaptation.inverse_mass,
            threshold,
        )
        gradients += num_steps
        accept_prob = torch.exp(torch.clamp(-error, max=0.0)).nan_to_num(0.0)
        uniform = torch.rand(accept_prob.shape, generator=generator, dtype=z.dtype, device=z.device)
        accepted = uniform < accept_prob
        if iteration < warmup:
            adaptation.update(
                iteration, z, new_z, new_momentum, accept_prob, diverged, jitter, num_steps
            )
        z = torch.where(accepted[:, None], new_z, z)
        lp = torch.where(accepted, new_lp, lp)
        grad = torch.where(accepted[:, None], new_grad, grad)
        if iteration < warmup:
            warmup_divergences += int(diverged.sum())
            window_end = iteration + 1 in adaptation.window_ends
            if window_end and adaptation.end_window(z) and adaptation.adapt_step_size:
                found = initial_step_size(
                    gradient_fn,
                    z,
                    lp,
                    grad,
                    adaptation.inverse_mass,
                    adaptation.step_size,
                    generator,
                    threshold,
                )
                adaptation.restart_averaging(found)
            if iteration + 1 in restart_points:
                z, lp, moved = restart(z, lp, generator)
                if moved:
                    lp, grad = gradient_fn(z)
                    attrs["warmup_restarts"] = attrs.get("warmup_restarts", 0) + moved
        if draw is not None:
            run.recorder.record(
                draw,
                z,
                lp=lp,
                acceptance_rate=accept_prob,
                step_size=np.full(z.shape[0], step_size),
                diverging=diverged,
                n_steps=np.full(z.shape[0], num_steps),
            )
    ended = time.perf_counter()
    draws_started = ended if draws_started is None else draws_started
    attrs["chees"] = {
        "step_size": adaptation.step_size,
        "trajectory_length": adaptation.trajectory_length,
        "inverse_mass": adaptation.inverse_mass.detach().cpu().tolist(),
        "warmup_divergences": warmup_divergences,
        "gradient_evaluations": gradients,
        "warmup_time": draws_started - started,
        "draws_time": ended - draws_started,
    }
