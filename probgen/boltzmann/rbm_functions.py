"""The RBM's algorithms as pure tensor functions on an `RBMParams` tuple.

The energy of a visible vector v and a binary hidden vector h is

- Bernoulli or categorical (one-hot, softmax) visible units:
  ``E(v, h) = -v.b - h.c - v^T W h``;
- Gaussian visible units with learned variances s^2 (Cho et al. 2011 parameterisation):
  ``E(v, h) = sum_i (v_i - b_i)^2 / (2 s_i^2) - h.c - (v / s^2)^T W h``.

Annealing and tempering use the geometric path ``(1 - beta) E_base(v) + beta E(v, h)`` from a
factorised base-rate model (`BaseRates`) to the RBM.

Example:
    >>> import math, torch
    >>> p = RBMParams("bernoulli", 1, torch.zeros(3, 2), torch.zeros(3), torch.zeros(2), None)
    >>> round(float(exact_log_partition(p)) / math.log(2), 6)
    5.0
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from probgen.boltzmann.ais import annealed_importance_sampling, log_mean_exp_with_stderr
from probgen.boltzmann.common import (
    ENUMERATION_CHUNK_ELEMENTS,
    LogPartition,
    enumerate_logsumexp,
)
from probgen.core.errors import NoDensityError

_LOG_2PI = math.log(2 * math.pi)


class RBMParams(NamedTuple):
    """The tensors of an RBM, the input of every pure function in this module.

    Attributes:
        visible: ``"bernoulli"``, ``"gaussian"`` or ``"categorical"``.
        n_categories: states per categorical unit (1 otherwise).
        weights: (n_visible_units, n_hidden), n_visible_units = n_visible * n_categories.
        visible_bias: (n_visible_units,); the Gaussian means.
        hidden_bias: (n_hidden,).
        log_variance: (n_visible_units,) for Gaussian units, else None.
    """

    visible: str
    n_categories: int
    weights: torch.Tensor
    visible_bias: torch.Tensor
    hidden_bias: torch.Tensor
    log_variance: torch.Tensor | None

    def to(self, dtype: torch.dtype) -> RBMParams:
        convert = lambda t: None if t is None else t.detach().to(dtype)  # noqa: E731
        return self._replace(
            weights=convert(self.weights),
            visible_bias=convert(self.visible_bias),
            hidden_bias=convert(self.hidden_bias),
            log_variance=convert(self.log_variance),
        )


class BaseRates(NamedTuple):
    """A factorised visible-only model: the start of AIS and the hot end of tempering.

    Attributes:
        visible_bias: logits (Bernoulli, categorical) or means (Gaussian), (n_visible_units,).
        log_variance: Gaussian log-variances, else None.
    """

    visible_bias: torch.Tensor
    log_variance: torch.Tensor | None


# ---- pure functions ----------------------------------------------------------------------


def bernoulli(probabilities: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """0/1 draws with the given probabilities (same dtype).

    `torch.bernoulli` with an explicit generator is several times slower on CPU than a uniform
    draw and a comparison, and sampling dominates RBM training time.
    """
    uniform = torch.rand(
        probabilities.shape,
        generator=generator,
        dtype=probabilities.dtype,
        device=probabilities.device,
    )
    return uniform.lt_(probabilities)


def visible_features(params: RBMParams, v: torch.Tensor) -> torch.Tensor:
    """What multiplies the weights on the visible side: v, or v / s^2 for Gaussian units."""
    if params.log_variance is None:
        return v
    return v * torch.exp(-params.log_variance)


def hidden_preactivation(params: RBMParams, v: torch.Tensor) -> torch.Tensor:
    """``c + features(v) W``, the logits of p(h = 1 | v); shape (..., n_hidden)."""
    return visible_features(params, v) @ params.weights + params.hidden_bias


def visible_preactivation(params: RBMParams, h: torch.Tensor) -> torch.Tensor:
    """``b + W h``: logits (Bernoulli, categorical) or means (Gaussian) of p(v | h)."""
    return h @ params.weights.T + params.visible_bias


def _grouped(params: RBMParams, x: torch.Tensor) -> torch.Tensor:
    return x.reshape(*x.shape[:-1], -1, params.n_categories)


def visible_mean(params: RBMParams, preactivation: torch.Tensor) -> torch.Tensor:
    """E[v | h] from the visible pre-activation."""
    if params.visible == "bernoulli":
        return torch.sigmoid(preactivation)
    if params.visible == "categorical":
        return torch.softmax(_grouped(params, preactivation), -1).reshape(preactivation.shape)
    return preactivation


def sample_categorical_one_hot(
    logits: torch.Tensor, n_categories: int, generator: torch.Generator
) -> torch.Tensor:
    """One-hot draws from softmax groups of size `n_categories` along the last axis."""
    grouped = logits.reshape(*logits.shape[:-1], -1, n_categories)
    uniform = torch.rand(
        grouped.shape, generator=generator, dtype=logits.dtype, device=logits.device
    )
    gumbel = -torch.log(-torch.log(uniform))
    choice = torch.argmax(grouped + gumbel, dim=-1)
    return F.one_hot(choice, n_categories).to(logits.dtype).reshape(logits.shape)


def sample_visible(
    params: RBMParams, preactivation: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """A draw of v given its pre-activation ``b + W h``."""
    if params.visible == "bernoulli":
        return bernoulli(torch.sigmoid(preactivation), generator=generator)
    if params.visible == "categorical":
        return sample_categorical_one_hot(preactivation, params.n_categories, generator)
    noise = torch.randn(
        preactivation.shape,
        generator=generator,
        dtype=preactivation.dtype,
        device=preactivation.device,
    )
    return preactivation + noise * torch.exp(0.5 * params.log_variance)


def free_energy(params: RBMParams, v: torch.Tensor) -> torch.Tensor:
    """``F(v) = -log sum_h exp(-E(v, h))``; shape (...,)."""
    hidden_term = F.softplus(hidden_preactivation(params, v)).sum(-1)
    if params.log_variance is None:
        return -(v @ params.visible_bias) - hidden_term
    quadratic = ((v - params.visible_bias) ** 2 * torch.exp(-params.log_variance)).sum(-1) / 2
    return quadratic - hidden_term


def hidden_log_marginal(params: RBMParams, h: torch.Tensor) -> torch.Tensor:
    """``log sum_v exp(-E(v, h))`` (an integral for Gaussian units); shape (...,)."""
    preactivation = visible_preactivation(params, h)
    linear = h @ params.hidden_bias
    if params.visible == "bernoulli":
        return linear + F.softplus(preactivation).sum(-1)
    if params.visible == "categorical":
        return linear + torch.logsumexp(_grouped(params, preactivation), -1).sum(-1)
    inverse_variance = torch.exp(-params.log_variance)
    completed_square = (preactivation**2 - params.visible_bias**2) * inverse_variance / 2
    normaliser = 0.5 * (_LOG_2PI + params.log_variance)
    return linear + (completed_square + normaliser).sum(-1)


def enumerated_layer(params: RBMParams) -> str:
    """Which layer exact computations enumerate: the smaller one that can be enumerated."""
    n_visible_units, n_hidden = params.weights.shape
    if params.visible == "bernoulli" and n_visible_units < n_hidden:
        return "visible"
    return "hidden"


def exact_log_partition(params: RBMParams) -> torch.Tensor:
    """log Z by enumerating the smaller layer (at most 25 units), in the params' dtype.

    Example:
        >>> import torch
        >>> p = RBMParams("bernoulli", 1, torch.zeros(3, 2), torch.zeros(3), torch.zeros(2), None)
        >>> round(float(exact_log_partition(p)), 6) == round(5 * math.log(2), 6)
        True
    """
    n_visible_units, n_hidden = params.weights.shape
    device, dtype = params.weights.device, params.weights.dtype
    if enumerated_layer(params) == "visible":
        return enumerate_logsumexp(
            n_visible_units,
            lambda v: -free_energy(params, v),
            width=n_hidden,
            dtype=dtype,
            device=device,
        )
    return enumerate_logsumexp(
        n_hidden,
        lambda h: hidden_log_marginal(params, h),
        width=n_visible_units,
        dtype=dtype,
        device=device,
    )


def pseudo_log_likelihood(params: RBMParams, v: torch.Tensor) -> torch.Tensor:
    """Exact pseudo-log-likelihood ``sum_i log p(v_i | v_-i)`` of each row of v (n, D).

    For categorical units the sum runs over variables (one-hot groups), not over columns.
    """
    if params.visible == "gaussian":
        raise NoDensityError(
            "pseudo_log_likelihood needs discrete visible units; for Gaussian units use "
            "log_prob or reconstruction error"
        )
    n_rows, width = v.shape
    n_hidden = params.weights.shape[1]
    chunk = max(1, ENUMERATION_CHUNK_ELEMENTS // max(1, width * n_hidden))
    results = []
    for start in range(0, n_rows, chunk):
        rows = v[start : start + chunk]
        preactivation = hidden_preactivation(params, rows)
        if params.visible == "bernoulli":
            flip_sign = 1 - 2 * rows
            flipped = preactivation[:, None, :] + flip_sign[:, :, None] * params.weights[None]
            # F(v with bit i flipped) - F(v)
            delta = -(flip_sign * params.visible_bias) - (
                F.softplus(flipped).sum(-1) - F.softplus(preactivation).sum(-1)[:, None]
            )
            results.append(-F.softplus(-delta).sum(-1))
        else:
            groups = _grouped(params, rows)  # (n, G, K)
            weights = params.weights.reshape(-1, params.n_categories, n_hidden)  # (G, K, H)
            bias = params.visible_bias.reshape(-1, params.n_categories)
            current = torch.einsum("ngk,gkh->ngh", groups, weights)
            without = preactivation[:, None, :] - current  # (n, G, H)
            alternatives = without[:, :, None, :] + weights[None]  # (n, G, K, H)
            scores = bias[None] + F.softplus(alternatives).sum(-1)  # (n, G, K)
            chosen = (scores * groups).sum(-1)
            results.append((chosen - torch.logsumexp(scores, -1)).sum(-1))
    return torch.cat(results)


def base_log_partition(params: RBMParams, base: BaseRates) -> torch.Tensor:
    """log Z of the base model times the 2^H hidden configurations it leaves free."""
    n_hidden = params.weights.shape[1]
    hidden_term = n_hidden * math.log(2.0)
    if params.visible == "bernoulli":
        return F.softplus(base.visible_bias).sum() + hidden_term
    if params.visible == "categorical":
        return torch.logsumexp(_grouped(params, base.visible_bias), -1).sum() + hidden_term
    return 0.5 * (_LOG_2PI + base.log_variance).sum() + hidden_term


def sample_base(
    params: RBMParams, base: BaseRates, n: int, generator: torch.Generator
) -> torch.Tensor:
    """Exact draws (n, n_visible_units) from the base model."""
    bias = base.visible_bias.expand(n, -1)
    if params.visible == "bernoulli":
        return bernoulli(torch.sigmoid(bias), generator=generator)
    if params.visible == "categorical":
        return sample_categorical_one_hot(bias, params.n_categories, generator)
    noise = torch.randn(bias.shape, generator=generator, dtype=bias.dtype, device=bias.device)
    return bias + noise * torch.exp(0.5 * base.log_variance)


def tempered_log_unnormalized(
    params: RBMParams,
    base: BaseRates,
    v: torch.Tensor,
    beta: float,
    preactivation: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p*_beta(v) on the geometric path ``(1 - beta) E_base(v) + beta E(v, h)``, h summed.

    `preactivation` is ``hidden_preactivation(params, v)`` when the caller already has it.
    """
    if preactivation is None:
        preactivation = hidden_preactivation(params, v)
    hidden_term = F.softplus(beta * preactivation).sum(-1)
    if params.visible == "gaussian":
        base_term = ((v - base.visible_bias) ** 2 * torch.exp(-base.log_variance)).sum(-1) / 2
        model_term = ((v - params.visible_bias) ** 2 * torch.exp(-params.log_variance)).sum(-1) / 2
        return -(1 - beta) * base_term - beta * model_term + hidden_term
    return (1 - beta) * (v @ base.visible_bias) + beta * (v @ params.visible_bias) + hidden_term


def tempered_gibbs_step(
    params: RBMParams,
    base: BaseRates,
    v: torch.Tensor,
    beta: float,
    generator: torch.Generator,
    preactivation: torch.Tensor | None = None,
) -> torch.Tensor:
    """One block-Gibbs sweep (h given v, then v given h) leaving p_beta invariant."""
    if preactivation is None:
        preactivation = hidden_preactivation(params, v)
    hidden = bernoulli(torch.sigmoid(beta * preactivation), generator=generator)
    model_preactivation = visible_preactivation(params, hidden)
    if params.visible == "gaussian":
        base_precision = (1 - beta) * torch.exp(-base.log_variance)
        model_precision = beta * torch.exp(-params.log_variance)
        precision = base_precision + model_precision
        mean = (base_precision * base.visible_bias + model_precision * model_preactivation) / (
            precision
        )
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + noise * precision.rsqrt()
    logits = (1 - beta) * base.visible_bias + beta * model_preactivation
    if params.visible == "bernoulli":
        return bernoulli(torch.sigmoid(logits), generator=generator)
    return sample_categorical_one_hot(logits, params.n_categories, generator)


def ais_log_partition(
    params: RBMParams,
    base: BaseRates,
    betas: torch.Tensor,
    n_runs: int,
    generator: torch.Generator,
) -> LogPartition:
    """AIS estimate of log Z from the base-rate model (Salakhutdinov and Murray 2008).

    Each run's state carries its hidden pre-activation, so a step costs two matrix products:
    the weight update and the hidden draw share one, the visible draw takes the other.
    """

    def with_preactivation(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return v, hidden_preactivation(params, v)

    def log_unnormalized(state: tuple[torch.Tensor, torch.Tensor], beta: float) -> torch.Tensor:
        return tempered_log_unnormalized(params, base, state[0], beta, state[1])

    def transition(
        state: tuple[torch.Tensor, torch.Tensor], beta: float, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return with_preactivation(tempered_gibbs_step(params, base, state[0], beta, g, state[1]))

    initial = with_preactivation(sample_base(params, base, n_runs, generator))
    log_weights = annealed_importance_sampling(
        initial, log_unnormalized, transition, betas, generator
    )
    log_ratio, stderr = log_mean_exp_with_stderr(log_weights)
    estimate = float(base_log_partition(params, base)) + log_ratio
    return LogPartition(estimate, stderr, "ais", n_runs=n_runs, n_betas=int(betas.numel()))
