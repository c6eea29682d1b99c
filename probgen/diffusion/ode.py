"""Log-likelihood through the probability-flow ODE (Song et al. 2021), by fixed-step RK4.

The discrete chain is read as a variance-preserving process in continuous time s in [0, 1] with
log alpha_bar(s) linear between the grid points t / T (`Schedule.log_alpha_bar`) and
beta(s) = -d log alpha_bar / ds. Its probability-flow ODE
dx/ds = -beta(s) / 2 (x - eps(x, s) / sqrt(1 - alpha_bar(s))) carries the data at s = 1 / T
(step t = 1) to the prior N(0, I) at s = 1, and
log p(x) = log N(x(1); 0, I) + int div f(x(s), s) ds. The divergence is Hutchinson's
estimate v^T (df/dx) v with one Rademacher v per example held fixed along the path (or the exact
trace, one gradient per dimension): the result is an estimate (`LogProbKind.ESTIMATE`).

Example:
    >>> import torch
    >>> from probgen.diffusion.ode import ode_log_likelihood
    >>> from probgen.diffusion.schedules import Schedule
    >>> schedule = Schedule.make("linear", 100)
    >>> # The exact noise predictor of N(0, I) data: eps = sqrt(1 - alpha_bar) x.
    >>> def eps(x, t):
    ...     s = (t + 1) / 100
    ...     return (1 - schedule.log_alpha_bar(s).exp()).sqrt().to(x.dtype)[:, None] * x
    >>> x = torch.zeros(1, 2, dtype=torch.float64)
    >>> round(float(ode_log_likelihood(eps, schedule, x, n_steps=50, trace="exact")), 3)
    -1.838
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from probgen.diffusion.schedules import Schedule

__all__ = ["ode_log_likelihood"]

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _grid(n_steps: int, n_intervals: int) -> list[float]:
    """Times from 1/T to 1; aligned with the schedule's grid when there are enough steps,
    so that beta(s) is constant within each RK4 step."""
    start = 1.0 / (n_intervals + 1) if n_intervals else 0.0
    if n_intervals and n_intervals <= n_steps:
        per = math.ceil(n_steps / n_intervals)
        total = n_intervals + 1
        return [(k / per + 1) / total for k in range(per * n_intervals + 1)]
    return [start + (1 - start) * k / n_steps for k in range(n_steps + 1)]


def ode_log_likelihood(
    eps_fn: EpsFn,
    schedule: Schedule,
    x: torch.Tensor,
    *,
    n_steps: int = 100,
    trace: str = "hutchinson",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log p(x) per example (n,) through the probability-flow ODE.

    Args:
        eps_fn: the noise predictor eps(x, t) with t the real 0-based step index (n,).
        schedule: the noise schedule.
        x: data in the model's space (n, *event).
        n_steps: RK4 steps (rounded up to a multiple of the schedule's T - 1 intervals when
            that is fewer).
        trace: "hutchinson" (one Rademacher probe per example) or "exact".
        generator: draws the Rademacher probes.
    """
    schedule = schedule.to(x.device)
    T = schedule.n_steps
    times = _grid(n_steps, T - 1)
    n = x.shape[0]
    if trace == "hutchinson":
        probe = torch.randint(
            0, 2, x.shape, generator=generator, device=x.device, dtype=torch.int64
        ).to(x.dtype) * 2 - 1
    else:
        probe = None

    def drift(y: torch.Tensor, s: float) -> torch.Tensor:
        s_tensor = torch.full((n,), s, dtype=torch.float64, device=x.device)
        log_alpha_bar = schedule.log_alpha_bar(s_tensor)
        beta = schedule.beta_continuous(torch.full((n,), min(s, 1 - 1e-12), dtype=torch.float64,
                                                   device=x.device))
        shape = (-1, *([1] * (y.dim() - 1)))
        sigma = (-torch.expm1(log_alpha_bar)).sqrt().to(y.dtype).reshape(shape)
        t_index = (s_tensor * T - 1).to(y.dtype)
        eps = eps_fn(y, t_index)
        return -0.5 * beta.to(y.dtype).reshape(shape) * (y - eps / sigma)

    def augmented(y: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            f = drift(y, s)
            if probe is not None:
                (grad,) = torch.autograd.grad((f * probe).sum(), y)
                divergence = (grad * probe).reshape(n, -1).sum(-1)
            else:
                flat = f.reshape(n, -1)
                parts = []
                for d in range(flat.shape[1]):
                    (grad,) = torch.autograd.grad(flat[:, d].sum(), y, retain_graph=True)
                    parts.append(grad.reshape(n, -1)[:, d])
                divergence = torch.stack(parts, -1).sum(-1)
        return f.detach(), divergence.detach()

    y = x
    integral = torch.zeros(n, dtype=x.dtype, device=x.device)
    for start, stop in zip(times[:-1], times[1:]):
        h = stop - start
        # Evaluate just inside the interval so that beta(s) is the interval's constant value.
        eps_in = 1e-9
        k1, d1 = augmented(y, start + eps_in)
        k2, d2 = augmented(y + 0.5 * h * k1, start + 0.5 * h)
        k3, d3 = augmented(y + 0.5 * h * k2, start + 0.5 * h)
        k4, d4 = augmented(y + h * k3, stop - eps_in)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        integral = integral + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    size = y[0].numel()
    prior = -0.5 * (y.reshape(n, -1).pow(2).sum(-1) + size * math.log(2 * math.pi))
    return prior + integral
