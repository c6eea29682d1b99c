"""Importance-sampling estimate of a continuous model's normaliser, the integral of exp(log_prob).

A grid integral is exact enough in one or two dimensions and hopeless beyond. Here the
proposal is fitted to the model's own samples: a kernel density estimate on them, mixed with
a multivariate Student-t whose covariance is inflated so that its tails are heavier than the
model's; the estimate
Z = mean(exp(log_prob(x) - log q(x))), x ~ q, comes with its standard error and the effective
sample size of the weights. A normalised model gives Z within a few standard errors of 1; a
log_prob that is off by a constant c gives exp(c). The model's samples only place the
proposal: a wrong sampler makes the estimate noisier (a smaller effective sample size), not
biased.

Example:
    >>> import torch
    >>> from probgen.core.normalization import importance_normalizer
    >>> class Gaussian3:
    ...     event_shape = torch.Size([3])
    ...     def sample(self, n, seed=None):
    ...         return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    ...     def log_prob(self, x):
    ...         return torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    >>> result = importance_normalizer(Gaussian3(), n_draws=4000, seed=0)
    >>> abs(result["normalizer"] - 1) < 4 * result["standard_error"] + 0.01
    True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from probgen.core.errors import DataError


def importance_normalizer(
    model: Any,
    *,
    n_draws: int = 20000,
    n_fit: int = 2000,
    seed: int = 0,
    sample_options: dict[str, Any] | None = None,
    inflation: float = 1.5,
    degrees_of_freedom: float = 5.0,
    n_centres: int = 500,
    defensive: float = 0.2,
    chunk: int = 4096,
) -> dict[str, float]:
    """Estimate the integral of exp(model.log_prob) over the model's (flattened) event space.

    Args:
        model: a fitted model with `sample(n, seed=...)` and `log_prob`, over real vectors
            (any event shape; it is flattened for the proposal).
        n_draws: proposal draws for the estimate (its standard error falls as 1/sqrt(n)).
        n_fit: model samples used to fit the proposal's location and covariance.
        seed: seed of the model's samples and of the proposal draws.
        sample_options: extra keyword options for `model.sample`.
        inflation: factor on the wide component's scale (its covariance grows by its square).
        degrees_of_freedom: of the wide Student-t component (smaller: heavier tails).
        n_centres: model samples that centre the kernel component of the proposal.
        defensive: weight of the wide Student-t component in the proposal mixture.
        chunk: points per `log_prob` call.

    Returns:
        A dict with `normalizer` (the estimate of Z), `standard_error`,
        `effective_sample_size` (of the normalised weights) and `dimension`.

    Raises:
        DataError: the model's samples are not finite real vectors, or `log_prob` returned
            NaN or +inf at a proposal draw.
    """
    options = dict(sample_options or {})
    fit_draws = _tensor(model.sample(n_fit, seed=seed, **options))
    if not fit_draws.is_floating_point():
        raise DataError("the importance-sampling normaliser needs real-valued samples")
    event_shape = tuple(fit_draws.shape[1:])
    dtype = fit_draws.dtype
    flat = fit_draws.reshape(n_fit, -1).double().cpu()
    flat = flat[torch.isfinite(flat).all(-1)]
    dim = flat.shape[1]
    if flat.shape[0] <= dim + 1:
        raise DataError("too few finite model samples to fit the proposal")
    mean = flat.mean(0)
    covariance = torch.atleast_2d(torch.cov(flat.T))
    # A jitter relative to the overall scale keeps a degenerate sample covariance invertible.
    jitter = 1e-6 * float(covariance.diagonal().mean().clamp_min(1e-12))
    covariance = covariance + jitter * torch.eye(dim, dtype=torch.float64)
    scale_tril = torch.linalg.cholesky(covariance) * inflation

    generator = torch.Generator().manual_seed(int(seed) + 1)
    # A mixture: a kernel density estimate on model samples (close to the model, so the
    # weights vary little) and, with weight `defensive`, one wide Student-t for the tails.
    centres = flat[: min(n_centres, flat.shape[0])]
    bandwidth = (4 / (dim + 2)) ** (1 / (dim + 4)) * centres.shape[0] ** (-1 / (dim + 4))
    kernel_tril = scale_tril / inflation * bandwidth
    wide = torch.rand(n_draws, generator=generator, dtype=torch.float64) < defensive
    normal = torch.randn(n_draws, dim, generator=generator, dtype=torch.float64)
    # Chi-square draws take no generator: seed them from ours, the global state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
        chi2 = torch.distributions.Chi2(
            torch.full((n_draws,), degrees_of_freedom, dtype=torch.float64)
        ).sample()
    picks = torch.randint(centres.shape[0], (n_draws,), generator=generator)
    global_points = mean + (normal @ scale_tril.T) * torch.sqrt(degrees_of_freedom / chi2)[:, None]
    kernel_points = centres[picks] + normal @ kernel_tril.T
    points = torch.where(wide[:, None], global_points, kernel_points)
    log_q = torch.logaddexp(
        math.log(defensive) + _student_t_log_density(points, mean, scale_tril, degrees_of_freedom),
        math.log1p(-defensive) + _kernel_log_density(points, centres, kernel_tril),
    )

    log_p = []
    with torch.no_grad():
        for part in points.split(chunk):
            values = part.reshape(-1, *event_shape).to(dtype)
            log_p.append(_tensor(model.log_prob(values)).double().cpu().reshape(-1))
    log_p_tensor = torch.cat(log_p)
    if bool(torch.isnan(log_p_tensor).any() or torch.isposinf(log_p_tensor).any()):
        raise DataError("log_prob returned NaN or +inf at a proposal draw")
    log_weights = log_p_tensor - log_q
    top = float(log_weights.max())
    if not math.isfinite(top):  # every draw outside the support
        return {
            "normalizer": 0.0,
            "standard_error": 0.0,
            "effective_sample_size": 0.0,
            "dimension": float(dim),
        }
    weights = torch.exp(log_weights - top)
    scale = math.exp(top)
    estimate = float(weights.mean()) * scale
    standard_error = float(weights.std()) / math.sqrt(n_draws) * scale
    ess = float(weights.sum() ** 2 / (weights**2).sum())
    return {
        "normalizer": estimate,
        "standard_error": standard_error,
        "effective_sample_size": ess,
        "dimension": float(dim),
    }


def _student_t_log_density(
    x: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor, df: float
) -> torch.Tensor:
    dim = x.shape[-1]
    solved = torch.linalg.solve_triangular(scale_tril, (x - mean).T, upper=False).T
    mahalanobis = (solved**2).sum(-1)
    log_det = torch.log(scale_tril.diagonal()).sum()
    return (
        math.lgamma((df + dim) / 2)
        - math.lgamma(df / 2)
        - dim / 2 * math.log(df * math.pi)
        - log_det
        - (df + dim) / 2 * torch.log1p(mahalanobis / df)
    )


def _kernel_log_density(
    x: torch.Tensor, centres: torch.Tensor, scale_tril: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """Log-density of an equal-weight Gaussian mixture with one component per centre."""
    dim = x.shape[-1]
    log_det = torch.log(scale_tril.diagonal()).sum()
    centres_solved = torch.linalg.solve_triangular(scale_tril, centres.T, upper=False).T
    parts = []
    for part in x.split(chunk):
        solved = torch.linalg.solve_triangular(scale_tril, part.T, upper=False).T
        squares = torch.cdist(solved, centres_solved) ** 2
        parts.append(torch.logsumexp(-0.5 * squares, -1))
    return torch.cat(parts) - math.log(centres.shape[0]) - dim / 2 * math.log(2 * math.pi) - log_det


def _tensor(value: Any) -> torch.Tensor:
    if isinstance(value, tuple):
        value = value[0]
    if isinstance(value, torch.Tensor):
        return value.detach()
    return torch.as_tensor(np.asarray(value))
