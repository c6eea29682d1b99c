"""The terms of a DDPM's variational bound, as pure tensor functions.

For data x_0 the negative bound is L = L_T + sum_{t=2}^T L_{t-1} + L_0 with
L_T = KL(q(x_T | x_0) || N(0, I)) (`prior_kl`), L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ||
p(x_{t-1} | x_t)) between Gaussians (`gaussian_kl`) at x_t ~ q(x_t | x_0), and L_0 =
-log p(x_0 | x_1): a Gaussian density for real data, or for data on a grid of K levels in
[-1, 1] (binary K = 2, 8-bit K = 256) the Gaussian mass of each level's bin, the outer bins
reaching to infinity (`discretized_gaussian_log_likelihood`, Ho et al. 2020), so that the K
probabilities sum to one. `reverse_params` gives the mean and log-variance of p(x_{t-1} | x_t)
from the noise prediction. `counter_normal` draws the noise of step t for example i as a pure
function of (seed, i, t): the bound over all steps and its estimate over sampled steps then see
the same x_t, and a batch scores the same in any chunking and on any device.

Example:
    >>> import torch
    >>> from probgen.diffusion.bound import discretized_gaussian_log_likelihood
    >>> levels = torch.linspace(-1, 1, 4)
    >>> logp = discretized_gaussian_log_likelihood(levels, torch.tensor(0.2), torch.tensor(-1.0), 4)
    >>> round(float(logp.exp().sum()), 6)
    1.0
"""

from __future__ import annotations

import math

import torch

from probgen.diffusion.schedules import Schedule

__all__ = [
    "gaussian_kl",
    "gaussian_log_likelihood",
    "discretized_gaussian_log_likelihood",
    "prior_kl",
    "reverse_params",
    "q_posterior",
    "counter_normal",
    "counter_uniform",
    "step_term",
]

_LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(
    mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))), elementwise, in nats."""
    return 0.5 * (
        log_var2
        - log_var1
        + torch.exp(log_var1 - log_var2)
        + (mean1 - mean2).pow(2) * torch.exp(-log_var2)
        - 1.0
    )


def gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """log N(x; mean, exp(log_var)), elementwise."""
    return -0.5 * (_LOG_2PI + log_var + (x - mean).pow(2) * torch.exp(-log_var))


def _log_normal_mass(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """log(Phi(high) - Phi(low)) for low < high, accurate in both tails."""
    # In the upper tail Phi(high) - Phi(low) = Phi(-low) - Phi(-high): use whichever side keeps
    # both terms away from 1, where the difference would cancel.
    flip = low > 0
    a = torch.where(flip, -high, low)
    b = torch.where(flip, -low, high)
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    ratio = torch.exp((log_a - log_b).clamp(max=0.0))
    return log_b + torch.log1p(-ratio.clamp(max=1.0 - 1e-12))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, n_levels: int
) -> torch.Tensor:
    """log P(x) under N(mean, exp(log_scale)^2) discretised to `n_levels` bins on [-1, 1].

    The value x (one of the K levels -1, -1 + 2 / (K - 1), ..., 1) owns the bin of half-width
    1 / (K - 1) around it; the first bin reaches down to -inf and the last up to +inf.

    Args:
        x: values on the grid, any shape.
        mean: Gaussian means (broadcastable to x).
        log_scale: log standard deviations (broadcastable to x).
        n_levels: K >= 2.

    Returns:
        Elementwise log-probabilities (<= 0).
    """
    # Edges from the level's code, so that neighbouring bins share their edge bit for bit
    # and the K masses tile the line.
    code = torch.round((x + 1) * (n_levels - 1) / 2)
    inv = torch.exp(-log_scale)
    low = ((2 * code - 1) / (n_levels - 1) - 1 - mean) * inv
    high = ((2 * code + 1) / (n_levels - 1) - 1 - mean) * inv
    lowest = code <= 0
    highest = code >= n_levels - 1
    middle = _log_normal_mass(
        torch.where(lowest | highest, torch.zeros_like(low), low),
        torch.where(lowest | highest, torch.ones_like(high), high),
    )
    return torch.where(
        lowest,
        torch.special.log_ndtr(high),
        torch.where(highest, torch.special.log_ndtr(-low), middle),
    )


def prior_kl(x0: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """KL(q(x_T | x_0) || N(0, I)) per example (summed over the event), in nats."""
    alpha_bar = schedule.alpha_bars[-1].to(x0.dtype)
    mean = alpha_bar.sqrt() * x0
    log_var = torch.log1p(-alpha_bar).expand_as(x0)
    kl = gaussian_kl(mean, log_var, torch.zeros_like(x0), torch.zeros_like(x0))
    return kl.reshape(x0.shape[0], -1).sum(-1)


def _at(values: torch.Tensor, steps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[steps] shaped to broadcast over `like` (n, *event), in like's dtype."""
    picked = values.to(like.device)[steps].to(like.dtype)
    return picked.reshape(-1, *([1] * (like.dim() - 1)))


def q_posterior(
    schedule: Schedule, x0: torch.Tensor, xt: torch.Tensor, steps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (clipped) log-variance of q(x_{t-1} | x_t, x_0) at 0-based `steps`."""
    mean = _at(schedule.posterior_mean_x0, steps, x0) * x0 + _at(
        schedule.posterior_mean_xt, steps, x0
    ) * xt
    return mean, _at(schedule.posterior_log_variance, steps, x0).expand_as(x0)


def reverse_params(
    schedule: Schedule,
    xt: torch.Tensor,
    steps: torch.Tensor,
    eps: torch.Tensor,
    variance: str,
    frac: torch.Tensor | None = None,
    clip: bool = False,
) -> dict[str, torch.Tensor]:
    """Mean and log-variance of p(x_{t-1} | x_t) from the predicted noise `eps`.

    Args:
        schedule: the noise schedule.
        xt: noisy values (n, *event).
        steps: 0-based step of each row (n,).
        eps: predicted noise (n, *event).
        variance: "fixed_small", "fixed_large" or "learned".
        frac: for "learned", the network's variance output v in [-1, 1]; log sigma^2 =
            (v + 1) / 2 log beta_t + (1 - v) / 2 log beta_tilde_t (Nichol & Dhariwal).
        clip: clip the predicted x_0 to [-1, 1] (data on a grid there).

    Returns:
        dict with "mean", "log_var", "x0" (the predicted x_0) and "eps".
    """
    alpha_bar = _at(schedule.alpha_bars, steps, xt)
    x0 = (xt - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    mean, _ = q_posterior(schedule, x0, xt, steps)
    if variance == "learned":
        assert frac is not None
        small = _at(schedule.posterior_log_variance, steps, xt)
        large = _at(schedule.betas.log(), steps, xt)
        weight = (frac + 1) / 2
        log_var = weight * large + (1 - weight) * small
    else:
        log_var = _at(schedule.fixed_log_variance(variance), steps, xt).expand_as(xt)
    return {"mean": mean, "log_var": log_var, "x0": x0, "eps": eps}


def step_term(
    schedule: Schedule,
    x0: torch.Tensor,
    xt: torch.Tensor,
    steps: torch.Tensor,
    params: dict[str, torch.Tensor],
    n_levels: int | None,
) -> torch.Tensor:
    """The bound's term at each row's step, summed over the event: (n,) nats.

    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t >= 2 (0-based step >= 1) and
    L_0 = -log p(x_0 | x_1) at t = 1: the discretised Gaussian for `n_levels` levels, else the
    Gaussian density.
    """
    post_mean, post_log_var = q_posterior(schedule, x0, xt, steps)
    kl = gaussian_kl(post_mean, post_log_var, params["mean"], params["log_var"])
    if n_levels is None:
        decoder = -gaussian_log_likelihood(x0, params["mean"], params["log_var"])
    else:
        decoder = -discretized_gaussian_log_likelihood(
            x0, params["mean"], 0.5 * params["log_var"], n_levels
        )
    first = (steps == 0).reshape(-1, *([1] * (x0.dim() - 1)))
    return torch.where(first, decoder, kl).reshape(x0.shape[0], -1).sum(-1)


# ---- counter-based noise ------------------------------------------------------------------
def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's >> keeps the sign)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (products wrap modulo 2^64)."""
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def counter_uniform(
    seed: int, rows: torch.Tensor, steps: torch.Tensor, count: int
) -> torch.Tensor:
    """Uniform [0, 1) float64 values (len(rows), count), a pure function of (seed, row, step).

    Args:
        seed: an integer seed.
        rows: int64 example index of each row of draws (m,).
        steps: int64 step index of each row (m,); any integer (-1 is used for step draws).
        count: draws per row.
    """
    device = rows.device
    key = _mix(torch.full((), int(seed) % (1 << 63), dtype=torch.int64, device=device) + _GOLDEN)
    key = _mix(key + rows.to(torch.int64)[:, None] * _GOLDEN)
    key = _mix(key + (steps.to(torch.int64)[:, None] + 2) * _MIX1)
    counters = torch.arange(count, dtype=torch.int64, device=device)[None, :]
    bits = _shift_right(_mix(key + counters * _GOLDEN), 11)
    return bits.to(torch.float64) * 2.0**-53


def counter_normal(
    seed: int,
    rows: torch.Tensor,
    steps: torch.Tensor,
    event_shape: tuple[int, ...] | torch.Size,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise (len(rows), *event_shape), a pure function of (seed, row, step).

    Each draw comes from splitmix64 hashes of its counters through the Box-Muller transform,
    so it does not depend on the batch it is drawn in, nor on the device.

    Args:
        seed: an integer seed.
        rows: int64 example index of each draw (m,).
        steps: int64 step index of each draw (m,).
        event_shape: shape of one draw.
        dtype: floating dtype of the result.
    """
    size = math.prod(event_shape)
    pairs = (size + 1) // 2
    uniform = counter_uniform(seed, rows, steps, 2 * pairs)
    u1, u2 = 1.0 - uniform[:, :pairs], uniform[:, pairs:]
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = 2 * math.pi * u2
    normal = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], -1)[:, :size]
    return normal.to(dtype).reshape(-1, *event_shape)
