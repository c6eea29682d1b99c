"""Annealed importance sampling (AIS) for log-partition functions, as pure tensor code.

AIS (Neal 2001; Salakhutdinov and Murray 2008 for RBMs) moves a batch of independent runs
from a tractable initial distribution p_0 to the target p_K through intermediate
distributions p_k(x) proportional to p*_k(x), one transition (a Markov kernel leaving p_k
invariant) per step, and accumulates the log importance weights
``sum_k log p*_k(x_k) - log p*_{k-1}(x_k)``. The mean of the weights estimates Z_K / Z_0.

The functions here know nothing about models: the caller passes the unnormalised
intermediate log-density and the transition as callables of ``(state, beta)``, so the same
loop serves RBMs, fully connected Boltzmann machines and anything else with a geometric path.

Example:
    >>> import math, torch
    >>> from probgen.boltzmann.ais import annealed_importance_sampling, log_mean_exp_with_stderr
    >>> # Path from a standard normal (Z_0 = sqrt(2 pi)) to exp(-x^2 / (2 * 0.25)).
    >>> def log_p(x, beta):
    ...     return -0.5 * x**2 * ((1 - beta) + beta / 0.25)
    >>> def move(x, beta, generator):
    ...     std = ((1 - beta) + beta / 0.25) ** -0.5
    ...     return torch.randn(x.shape, generator=generator, dtype=x.dtype) * std
    >>> g = torch.Generator().manual_seed(0)
    >>> x0 = torch.randn(500, generator=g, dtype=torch.float64)
    >>> log_w = annealed_importance_sampling(x0, log_p, move, torch.linspace(0, 1, 50), g)
    >>> estimate, stderr = log_mean_exp_with_stderr(log_w)
    >>> abs(estimate - math.log(0.5)) < 0.05  # Z_1 / Z_0 = 1/2
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from probgen.core.errors import DataError
from probgen.core.threads import small_op_loop

LogDensityFn = Callable[[torch.Tensor, float], torch.Tensor]
TransitionFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]

SCHEDULES = ("linear", "sigmoid", "piecewise")


def temperature_schedule(
    n_betas: int,
    kind: str = "piecewise",
    *,
    dtype: torch.dtype = torch.float64,
    sigmoid_width: float = 4.0,
) -> torch.Tensor:
    """Inverse temperatures from 0 to 1 (both included) for AIS or parallel tempering.

    Args:
        n_betas: number of inverse temperatures, at least 2.
        kind: ``"linear"`` (evenly spaced); ``"sigmoid"`` (dense at both ends, Grosse et al.
            2013); ``"piecewise"`` (the shape Salakhutdinov and Murray 2008 used: a tenth of
            the steps over [0, 0.5], four tenths over [0.5, 0.9], half over [0.9, 1]).
        dtype: dtype of the result.
        sigmoid_width: steepness of the sigmoid schedule.

    Returns:
        Tensor of shape (n_betas,), non-decreasing, first 0 and last 1.

    Example:
        >>> temperature_schedule(5, "linear").tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if isinstance(n_betas, bool) or not isinstance(n_betas, int) or n_betas < 2:
        raise DataError(f"n_betas must be an integer >= 2, got {n_betas!r}")
    if kind == "linear":
        betas = torch.linspace(0.0, 1.0, n_betas, dtype=torch.float64)
    elif kind == "sigmoid":
        grid = torch.linspace(-sigmoid_width, sigmoid_width, n_betas, dtype=torch.float64)
        raw = torch.sigmoid(grid)
        betas = (raw - raw[0]) / (raw[-1] - raw[0])
    elif kind == "piecewise":
        if n_betas < 10:
            betas = torch.linspace(0.0, 1.0, n_betas, dtype=torch.float64)
        else:
            n_first = max(2, n_betas // 10)
            n_second = max(2, (4 * n_betas) // 10)
            n_third = n_betas - n_first - n_second + 2
            betas = torch.cat(
                [
                    torch.linspace(0.0, 0.5, n_first, dtype=torch.float64),
                    torch.linspace(0.5, 0.9, n_second, dtype=torch.float64)[1:],
                    torch.linspace(0.9, 1.0, n_third, dtype=torch.float64)[1:],
                ]
            )
    else:
        raise DataError(
            f"schedule kind must be one of {', '.join(map(repr, SCHEDULES))}; got {kind!r}"
        )
    betas[0], betas[-1] = 0.0, 1.0
    return betas.to(dtype)


def check_betas(betas: torch.Tensor | list[float], name: str = "betas") -> torch.Tensor:
    """Validate a user-given schedule: 1-D, at least 2 values, non-decreasing, from 0 to 1."""
    betas = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
    if betas.numel() < 2:
        raise DataError(f"{name} needs at least 2 inverse temperatures, got {betas.numel()}")
    if not torch.isfinite(betas).all():
        raise DataError(f"{name} contains NaN or infinite values")
    if betas[0] != 0.0 or betas[-1] != 1.0:
        raise DataError(f"{name} must start at 0 and end at 1, got {betas[0]:g} .. {betas[-1]:g}")
    if (betas[1:] < betas[:-1]).any():
        raise DataError(f"{name} must be non-decreasing")
    return betas


@small_op_loop()
def annealed_importance_sampling(
    initial_state: torch.Tensor,
    log_unnormalized: LogDensityFn,
    transition: TransitionFn,
    betas: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Run AIS for a batch of independent runs and return their log importance weights.

    Args:
        initial_state: exact draws from p_0, one row per run: a tensor (n_runs, ...) or any
            object the two callables understand (a tuple carrying cached values, say).
        log_unnormalized: ``f(state, beta) -> (n_runs,)``, the log of the unnormalised
            intermediate density p*_beta (its normaliser at beta = 0 is the caller's Z_0).
        transition: ``T(state, beta, generator) -> state``, a Markov kernel leaving p_beta
            invariant.
        betas: inverse temperatures, non-decreasing from 0 to 1, shape (K + 1,).
        generator: source of randomness for the transitions.

    Returns:
        Log weights of shape (n_runs,) in float64: ``log Z_1 - log Z_0`` is estimated by their
        log-mean-exp (see `log_mean_exp_with_stderr`).
    """
    betas = check_betas(betas)
    values = betas.tolist()
    state = initial_state
    log_weights: torch.Tensor | float = 0.0
    previous = values[0]
    for beta in values[1:]:
        # The weight uses the state *before* the move at this temperature (Neal 2001).
        increment = log_unnormalized(state, beta) - log_unnormalized(state, previous)
        log_weights = log_weights + increment.to(torch.float64)
        if beta < 1.0:
            state = transition(state, beta, generator)
        previous = beta
    return log_weights


def log_mean_exp_with_stderr(log_weights: torch.Tensor) -> tuple[float, float]:
    """Log of the mean of ``exp(log_weights)`` and its standard error (delta method).

    The standard error of ``log(mean w)`` is ``std(w) / (sqrt(n) * mean(w))``, computed on
    weights rescaled by their maximum so that nothing overflows.

    Example:
        >>> import torch
        >>> estimate, stderr = log_mean_exp_with_stderr(torch.zeros(4, dtype=torch.float64))
        >>> estimate, stderr
        (0.0, 0.0)
    """
    log_weights = log_weights.detach().to(torch.float64).reshape(-1)
    n_runs = log_weights.numel()
    if n_runs == 0:
        raise DataError("log_weights is empty")
    if not torch.isfinite(log_weights).all():
        raise DataError("log_weights contains NaN or infinite values")
    estimate = torch.logsumexp(log_weights, 0) - math.log(n_runs)
    if n_runs < 2:
        return float(estimate), float("inf")
    scaled = torch.exp(log_weights - log_weights.max())
    stderr = scaled.std(unbiased=True) / (math.sqrt(n_runs) * scaled.mean())
    return float(estimate), float(stderr)
