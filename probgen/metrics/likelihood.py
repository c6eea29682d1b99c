"""Held-out log-likelihood in nats and bits per dimension.

Example:
    >>> import torch
    >>> from probgen.metrics.likelihood import bits_per_dim
    >>> round(float(bits_per_dim(torch.tensor([-8 * 0.6931471805599453]), n_dims=8)), 6)
    1.0
"""

from __future__ import annotations

import math
from typing import Any

import torch

from probgen.core.data import check_positive_int
from probgen.core.errors import DataError

__all__ = ["bits_per_dim", "heldout_log_likelihood"]


def bits_per_dim(log_prob: Any, n_dims: int, *, scale: float = 1.0) -> torch.Tensor:
    """Convert log-likelihoods in nats to bits per dimension: -log p(x) / (n_dims log 2).

    Args:
        log_prob: log-likelihoods in nats, any shape.
        n_dims: dimensions per example.
        scale: data scale to undo for continuous images, e.g. 256 when a density over
            x / 256 is reported for 8-bit pixels (adds log2(scale) per dimension).

    Returns:
        Tensor of the same shape in bits per dimension.
    """
    n_dims = check_positive_int(n_dims, "n_dims")
    if scale <= 0:
        raise DataError(f"scale must be positive, got {scale}")
    values = torch.as_tensor(log_prob, dtype=torch.float64)
    return -values / (n_dims * math.log(2.0)) + math.log2(scale)


@torch.no_grad()
def heldout_log_likelihood(
    model: Any,
    data: Any,
    *,
    batch_size: int = 1024,
    n_dims: int | None = None,
    **log_prob_options: Any,
) -> dict[str, Any]:
    """Mean held-out log-likelihood of `model` on `data`, with its standard error.

    Args:
        model: a fitted probgen model (any `log_prob_kind` except `none`).
        data: held-out examples (a tensor with the examples on the first dimension).
        batch_size: examples scored at once.
        n_dims: dimensions per example for bits/dim (default: the model's event size).
        **log_prob_options: passed to `model.log_prob` (e.g. `k=5000` for a VAE's `iwae`).

    Returns:
        dict with `mean_log_prob` (nats per example), `standard_error`, `nll` (= -mean),
        `bits_per_dim`, `n_examples` and the model's `log_prob_kind` (so a bound or an estimate
        is never mistaken for an exact figure).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(data, torch.Tensor) or hasattr(data, "__len__"):
        n = len(data)
    else:
        raise DataError("data must be a tensor or an array of examples")
    if n == 0:
        raise DataError("data is empty")
    values = torch.cat(
        [
            torch.as_tensor(model.log_prob(data[start : start + batch_size], **log_prob_options))
            .detach()
            .double()
            .reshape(-1)
            .cpu()
            for start in range(0, n, batch_size)
        ]
    )
    if not bool(torch.isfinite(values).all()):
        raise DataError("the model gave non-finite log-likelihoods on data")
    if n_dims is None:
        n_dims = max(1, math.prod(tuple(getattr(model, "event_shape", ()))))
    mean = float(values.mean())
    error = float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "mean_log_prob": mean,
        "standard_error": error,
        "nll": -mean,
        "bits_per_dim": float(bits_per_dim(mean, n_dims)),
        "n_examples": n,
        "log_prob_kind": str(getattr(model, "log_prob_kind", "exact")),
    }
