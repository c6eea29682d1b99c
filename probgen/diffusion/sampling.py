"""Reverse-process samplers: ancestral DDPM and DDIM (Song, Meng & Ermon 2021).

Both run from x_T down to the latent x_1 and return the path; the caller decodes x_1 into data.
`params_fn(x_t, steps)` gives p(x_{t-1} | x_t)'s "mean", "log_var" and predicted "x0"
(`probgen.diffusion.bound.reverse_params`) at 0-based `steps`. DDIM visits a subsequence of
`steps` of the T steps (`ddim_timesteps`), always ending at t = 1, with
sigma_t^2 = eta^2 (1 - alpha_bar_prev) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_prev):
`eta=0` is deterministic given x_T, and `eta=1` over all T steps is the ancestral sampler with
the "fixed_small" variance, noise draw for noise draw.

Example:
    >>> from probgen.diffusion.sampling import ddim_timesteps
    >>> ddim_timesteps(10, 4).tolist()
    [0, 3, 6, 9]
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from probgen.core.data import check_positive_int
from probgen.core.errors import DataError
from probgen.diffusion.schedules import Schedule

__all__ = ["ddim_timesteps", "ddpm_path", "ddim_path"]

ParamsFn = Callable[[torch.Tensor, torch.Tensor], dict]


def ddim_timesteps(n_steps: int, steps: int) -> torch.Tensor:
    """`steps` 0-based step indices evenly spread over 0..n_steps-1, first 0 and last T-1."""
    steps = check_positive_int(steps, "steps")
    if steps > n_steps:
        raise DataError(f"steps={steps} exceeds the model's n_steps={n_steps}")
    if steps == 1:
        return torch.tensor([n_steps - 1])
    return torch.linspace(0, n_steps - 1, steps, dtype=torch.float64).round().long()


def _noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def ddpm_path(
    params_fn: ParamsFn,
    schedule: Schedule,
    x_start: torch.Tensor,
    generator: torch.Generator,
    keep_path: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Ancestral sampling from x_T = `x_start` down to x_1.

    Returns:
        x_1, and the path [x_T, ..., x_1] when `keep_path` (else an empty list).
    """
    x = x_start
    path = [x] if keep_path else []
    for index in range(schedule.n_steps - 1, 0, -1):
        steps = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
        params = params_fn(x, steps)
        x = params["mean"] + torch.exp(0.5 * params["log_var"]) * _noise(x, generator)
        if keep_path:
            path.append(x)
    return x, path


def ddim_path(
    params_fn: ParamsFn,
    schedule: Schedule,
    x_start: torch.Tensor,
    generator: torch.Generator,
    steps: int,
    eta: float,
    keep_path: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """DDIM from x_T = `x_start` over `steps` steps down to x_1.

    Returns:
        x_1, and the path [x_T, ..., x_1] over the visited steps when `keep_path`.
    """
    visited = ddim_timesteps(schedule.n_steps, steps).tolist()
    if visited[0] != 0:
        visited = [0, *visited]
    x = x_start
    path = [x] if keep_path else []
    alpha_bars = schedule.alpha_bars
    for position in range(len(visited) - 1, 0, -1):
        index, previous = visited[position], visited[position - 1]
        step_tensor = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
        params = params_fn(x, step_tensor)
        alpha_bar = alpha_bars[index]
        alpha_bar_prev = alpha_bars[previous]
        x0 = params["x0"]
        # The noise consistent with the (possibly clipped) x0 prediction.
        eps = (x - alpha_bar.sqrt().to(x.dtype) * x0) / (1 - alpha_bar).sqrt().to(x.dtype)
        variance = (
            eta**2 * (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        )
        direction = (1 - alpha_bar_prev - variance).clamp(min=0).sqrt()
        x = alpha_bar_prev.sqrt().to(x.dtype) * x0 + direction.to(x.dtype) * eps
        if eta > 0:
            x = x + variance.sqrt().to(x.dtype) * _noise(x, generator)
        if keep_path:
            path.append(x)
    return x, path
