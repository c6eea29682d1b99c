"""Noise schedules of a DDPM and the tensors derived from them.

A schedule is a sequence of variances beta_1..beta_T of the forward process
q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I). `linear_betas` is Ho et al. (2020)'s
schedule (rescaled by 1000 / T as in Nichol & Dhariwal 2021, so a short chain still ends near
pure noise), `cosine_betas` is Nichol & Dhariwal's alpha_bar(t) = cos^2(((t / T + s) / (1 + s))
pi / 2) / cos^2(s / (1 + s) pi / 2). `Schedule` holds everything the bound and the samplers need
in float64 (index i stands for step t = i + 1).

Example:
    >>> from probgen.diffusion.schedules import Schedule
    >>> schedule = Schedule.make("cosine", 4)
    >>> schedule.n_steps, round(float(schedule.alpha_bars[-1]), 6)
    (4, 0.000144)
    >>> bool((schedule.posterior_variance[1:] < schedule.betas[1:]).all())
    True
"""

from __future__ import annotations

import math

import torch

from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError

__all__ = ["Schedule", "linear_betas", "cosine_betas", "SCHEDULES"]

SCHEDULES = ("linear", "cosine")


def linear_betas(
    n_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Evenly spaced betas from `beta_start` to `beta_end`, both scaled by 1000 / n_steps.

    Ho et al. chose 1e-4..0.02 for T = 1000; the rescaling keeps the total noise
    (about the sum of the betas) the same for other T. float64 (n_steps,).
    """
    n_steps = check_positive_int(n_steps, "n_steps")
    scale = 1000.0 / n_steps
    low, high = scale * beta_start, min(scale * beta_end, 0.999)
    if n_steps == 1:
        return torch.tensor([high], dtype=torch.float64)
    return torch.linspace(low, high, n_steps, dtype=torch.float64)


def cosine_betas(n_steps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: betas from alpha_bar's ratios, clipped at max_beta."""
    n_steps = check_positive_int(n_steps, "n_steps")
    steps = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    alpha_bar = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


class Schedule:
    """The tensors of one noise schedule (float64, on `device`); index i is step t = i + 1.

    Attributes:
        betas: beta_t.
        alphas: 1 - beta_t.
        alpha_bars: prod_{s <= t} alpha_s, the signal fraction of q(x_t | x_0).
        alpha_bars_prev: alpha_bar_{t-1} (1 for t = 1).
        posterior_variance: beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), the
            variance of q(x_{t-1} | x_t, x_0) (0 at t = 1).
        posterior_log_variance: log beta_tilde_t with the t = 1 entry replaced by t = 2's (the
            "clipped" log-variance of Nichol & Dhariwal, finite everywhere).
        posterior_mean_x0, posterior_mean_xt: coefficients of x_0 and x_t in the mean of
            q(x_{t-1} | x_t, x_0).
    """

    def __init__(self, betas: torch.Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or betas.numel() == 0:
            raise DataError("betas must be a non-empty vector")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise DataError("every beta must lie in (0, 1)")
        self.betas = betas
        self.n_steps = int(betas.numel())
        self.alphas = 1 - betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        self.alpha_bars_prev = torch.cat([betas.new_ones(1), self.alpha_bars[:-1]])
        self.posterior_variance = betas * (1 - self.alpha_bars_prev) / (1 - self.alpha_bars)
        clipped = self.posterior_variance.clone()
        if self.n_steps > 1:
            clipped[0] = self.posterior_variance[1]
        else:
            clipped[0] = betas[0]
        self.posterior_log_variance = clipped.log()
        self.posterior_mean_x0 = betas * self.alpha_bars_prev.sqrt() / (1 - self.alpha_bars)
        self.posterior_mean_xt = (
            (1 - self.alpha_bars_prev) * self.alphas.sqrt() / (1 - self.alpha_bars)
        )

    @classmethod
    def make(cls, kind: str, n_steps: int) -> Schedule:
        """The "linear" or "cosine" schedule with `n_steps` steps."""
        kind = check_choice(kind, "schedule", SCHEDULES)
        n_steps = check_positive_int(n_steps, "n_steps")
        return cls(linear_betas(n_steps) if kind == "linear" else cosine_betas(n_steps))

    def to(self, device: torch.device | str) -> Schedule:
        """A copy with every tensor on `device` (still float64)."""
        moved = object.__new__(Schedule)
        for name, value in vars(self).items():
            setattr(moved, name, value.to(device) if torch.is_tensor(value) else value)
        return moved

    def fixed_log_variance(self, kind: str) -> torch.Tensor:
        """log sigma_t^2 of the reverse steps for a fixed variance: "fixed_small" is
        beta_tilde_t (clipped at t = 1), "fixed_large" is beta_t with beta_tilde_2 at t = 1."""
        if kind == "fixed_small":
            return self.posterior_log_variance
        large = self.betas.clone()
        large[0] = self.posterior_log_variance[0].exp()
        return large.log()

    def log_alpha_bar(self, s: torch.Tensor) -> torch.Tensor:
        """log alpha_bar at continuous time s in [0, 1], linear between the grid points t / T.

        The probability-flow ODE of `probgen.diffusion.ode` runs on this interpolation (with
        log alpha_bar(0) = 0), so its marginals agree with the discrete chain at every t / T.
        """
        grid = torch.cat([self.betas.new_zeros(1), self.alpha_bars.log()])
        position = (s * self.n_steps).clamp(0, self.n_steps)
        low = position.floor().clamp(max=self.n_steps - 1).long()
        weight = position - low
        return grid[low] * (1 - weight) + grid[low + 1] * weight

    def beta_continuous(self, s: torch.Tensor) -> torch.Tensor:
        """beta(s) = -d log alpha_bar / ds of the interpolation (constant on each interval)."""
        grid = torch.cat([self.betas.new_zeros(1), self.alpha_bars.log()])
        position = (s * self.n_steps).clamp(0, self.n_steps)
        low = position.floor().clamp(max=self.n_steps - 1).long()
        return -(grid[low + 1] - grid[low]) * self.n_steps
