"""Pure batched tensor functions for finite Gaussian mixtures (no model classes).

Density and EM: `gaussian_log_probs`, `diagonal_log_probs`, `m_step`, `covariances_valid`.
Conjugate blocked Gibbs for the Bayesian mixture, batched over chains: `draw_assignments`
(z | parameters), `draw_weights` (weights | z, Dirichlet), `draw_means_variances`
((means, variances) | z, x, Normal-Inverse-Gamma), `joint_log_prob` and `sort_state`.
`probgen.graphical.mixture.GaussianMixture` is the model built on them.

Example:
    >>> import torch
    >>> x = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    >>> means = torch.tensor([[0.0]], dtype=torch.float64)
    >>> variances = torch.tensor([[1.0]], dtype=torch.float64)
    >>> [round(v, 3) for v in diagonal_log_probs(x, means, variances)[:, 0].tolist()]
    [-0.919, -2.919]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.samplers.gibbs import sample_categorical

_LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------------------------
# Density and EM: pure tensor functions
# ---------------------------------------------------------------------------------------------
def gaussian_log_probs(x: Tensor, means: Tensor, covariances: Tensor, covariance: str) -> Tensor:
    """Log density of every point under every component, (n, D) -> (n, K).

    Args:
        x: points (n, D).
        means: (K, D).
        covariances: (K, D, D) for "full", (K, D) variances for "diag", (K,) for "spherical".
        covariance: "full", "diag" or "spherical".

    Example:
        >>> x = torch.zeros(1, 2)
        >>> gaussian_log_probs(x, torch.zeros(1, 2), torch.ones(1, 2), "diag")
        tensor([[-1.8379]])
    """
    n_features = x.shape[-1]
    if covariance == "full":
        cholesky = torch.linalg.cholesky(covariances)
        difference = (x.unsqueeze(0) - means.unsqueeze(1)).transpose(-1, -2)  # (K, D, n)
        whitened = torch.linalg.solve_triangular(cholesky, difference, upper=False)
        mahalanobis = (whitened**2).sum(-2)  # (K, n)
        log_det = 2 * torch.diagonal(cholesky, dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (n_features * _LOG_2PI + log_det[:, None] + mahalanobis).T
    variances = covariances if covariance == "diag" else covariances[:, None].expand_as(means)
    return diagonal_log_probs(x, means, variances)


def diagonal_log_probs(x: Tensor, means: Tensor, variances: Tensor) -> Tensor:
    """Diagonal-Gaussian log densities, batched: x (n, D), means/variances (*batch, K, D).

    Returns (*batch, n, K). The quadratic form is expanded into matrix products (no (n, K, D)
    intermediate); the points are first centred on the mean of the component means so the
    expansion does not lose precision for data far from the origin.
    """
    shift = means.detach().reshape(-1, means.shape[-1]).mean(0)
    centred = x - shift
    means = means - shift
    precisions = variances.reciprocal()
    quadratic = (
        torch.einsum("nd,...kd->...nk", centred**2, precisions)
        - 2 * torch.einsum("nd,...kd->...nk", centred, means * precisions)
        + (means**2 * precisions).sum(-1).unsqueeze(-2)
    )
    log_det = variances.log().sum(-1).unsqueeze(-2)
    return -0.5 * (x.shape[-1] * _LOG_2PI + log_det + quadratic)


def m_step(
    x: Tensor, responsibilities: Tensor, covariance: str, reg_covar: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Maximum-likelihood (weights, means, covariances) given responsibilities (n, K).

    Follows scikit-learn's `GaussianMixture` formulas (including its 10 * eps added to the
    component counts and `reg_covar` added to the diagonal), so both fits agree step by step.
    """
    counts = responsibilities.sum(0) + 10 * torch.finfo(x.dtype).eps
    weighted_sums = responsibilities.T @ x
    means = weighted_sums / counts[:, None]
    if covariance == "full":
        difference = x.unsqueeze(0) - means.unsqueeze(1)  # (K, n, D)
        covariances = (
            torch.einsum("nk,knd,kne->kde", responsibilities, difference, difference)
            / counts[:, None, None]
        )
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        covariances = covariances + reg_covar * eye
    else:
        mean_squares = responsibilities.T @ (x * x) / counts[:, None]
        cross = means * weighted_sums / counts[:, None]
        covariances = mean_squares - 2 * cross + means**2 + reg_covar
        if covariance == "spherical":
            covariances = covariances.mean(1)
    weights = counts / counts.sum()
    return weights, means, covariances


def covariances_valid(covariances: Tensor, covariance: str) -> bool:
    """Whether every covariance is finite and positive definite."""
    if not bool(torch.isfinite(covariances).all()):
        return False
    if covariance == "full":
        return bool((torch.linalg.cholesky_ex(covariances).info == 0).all())
    return bool((covariances > 0).all())


# ---------------------------------------------------------------------------------------------
# Gibbs for the Bayesian mixture: pure tensor functions batched over chains
# ---------------------------------------------------------------------------------------------
@dataclass
class MixturePrior:
    """Resolved conjugate prior (tensors on the data's dtype and device).

    Attributes:
        weight_concentration: Dirichlet concentration, scalar tensor (shared by components).
        mean_prior: (D,) prior mean of every component's mean.
        mean_precision: scalar kappa; mean | variance ~ Normal(mean_prior, variance / kappa).
        variance_shape: scalar InverseGamma shape a.
        variance_scale: InverseGamma scale b, (D,) for "diag", scalar for "spherical".
        spherical: whether one variance per component is shared by its features.
    """

    weight_concentration: Tensor
    mean_prior: Tensor
    mean_precision: Tensor
    variance_shape: Tensor
    variance_scale: Tensor
    spherical: bool = False


def draw_assignments(
    x: Tensor, weights: Tensor, means: Tensor, variances: Tensor, generator: torch.Generator
) -> Tensor:
    """Draw each point's component from its exact conditional, for every chain.

    Args:
        x: data (n, D).
        weights: (chains, K); means, variances: (chains, K, D).

    Returns:
        Long tensor (chains, n).
    """
    logits = weights.log().unsqueeze(-2) + diagonal_log_probs(x, means, variances)
    return sample_categorical(logits, generator)


def component_counts(assignments: Tensor, n_components: int, dtype: torch.dtype) -> Tensor:
    """Number of points per component, (chains, n) -> (chains, K)."""
    counts = torch.zeros(assignments.shape[0], n_components, dtype=dtype, device=assignments.device)
    return counts.scatter_add_(1, assignments, torch.ones_like(assignments, dtype=dtype))


def draw_weights(counts: Tensor, concentration: Tensor, generator: torch.Generator) -> Tensor:
    """Dirichlet(concentration + counts) draws, (chains, K), by normalised Gamma draws."""
    gammas = torch._standard_gamma(concentration + counts, generator=generator)
    gammas = gammas.clamp_min(torch.finfo(counts.dtype).tiny)
    return gammas / gammas.sum(-1, keepdim=True)


def normal_inverse_gamma_posterior(
    x: Tensor, assignments: Tensor, counts: Tensor, prior: MixturePrior
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Posterior (mean, kappa, shape, scale) of each component's (mean, variance) given z, x.

    Returns tensors (chains, K, D), (chains, K), (chains, K[, D]) and (chains, K[, D]); the
    last two have no feature axis for a spherical prior. Residual sums of squares come from
    the points' distance to the posterior mean (scatter-added per component), which avoids
    the cancellation of the textbook "sum of squares minus squared sum" form.
    """
    n_chains, n_points = assignments.shape
    n_features = x.shape[1]
    index = assignments.unsqueeze(-1).expand(n_chains, n_points, n_features)
    sums = torch.zeros(n_chains, counts.shape[1], n_features, dtype=x.dtype, device=x.device)
    sums = sums.scatter_add_(1, index, x.expand(n_chains, n_points, n_features))
    kappa = prior.mean_precision + counts
    mean = (prior.mean_precision * prior.mean_prior + sums) / kappa.unsqueeze(-1)
    residuals = (x - mean.gather(1, index)) ** 2
    squares = torch.zeros_like(sums).scatter_add_(1, index, residuals)
    spread = squares + prior.mean_precision * (mean - prior.mean_prior) ** 2
    if prior.spherical:
        shape = prior.variance_shape + 0.5 * n_features * counts
        scale = prior.variance_scale + 0.5 * spread.sum(-1)
    else:
        shape = (prior.variance_shape + 0.5 * counts).unsqueeze(-1).expand_as(mean)
        scale = prior.variance_scale + 0.5 * spread
    return mean, kappa, shape, scale


def draw_means_variances(
    x: Tensor,
    assignments: Tensor,
    counts: Tensor,
    prior: MixturePrior,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Draw (means, variances), each (chains, K, D), from their Normal-Inverse-Gamma posterior."""
    mean, kappa, shape, scale = normal_inverse_gamma_posterior(x, assignments, counts, prior)
    variances = scale / torch._standard_gamma(shape, generator=generator).clamp_min(
        torch.finfo(x.dtype).tiny
    )
    if prior.spherical:
        variances = variances.unsqueeze(-1).expand_as(mean)
    noise = torch.randn(mean.shape, dtype=x.dtype, device=x.device, generator=generator)
    means = mean + (variances / kappa.unsqueeze(-1)).sqrt() * noise
    return means, variances.contiguous()


def joint_log_prob(
    x: Tensor,
    weights: Tensor,
    means: Tensor,
    variances: Tensor,
    assignments: Tensor,
    prior: MixturePrior,
) -> Tensor:
    """log p(weights, means, variances, assignments, x) with every constant, per chain."""
    concentration = prior.weight_concentration.expand(weights.shape[-1])
    log_dirichlet = (
        torch.lgamma(concentration.sum())
        - torch.lgamma(concentration).sum()
        + ((concentration - 1) * weights.log()).sum(-1)
    )
    a, b = prior.variance_shape, prior.variance_scale
    prior_variances = variances[..., 0] if prior.spherical else variances
    log_inverse_gamma = (
        a * b.log() - torch.lgamma(a) - (a + 1) * prior_variances.log() - b / prior_variances
    )
    log_inverse_gamma = log_inverse_gamma.reshape(weights.shape[0], -1).sum(-1)
    mean_variances = variances / prior.mean_precision
    log_mean_prior = -0.5 * (
        _LOG_2PI + mean_variances.log() + (means - prior.mean_prior) ** 2 / mean_variances
    )
    n_chains, n_points = assignments.shape
    index = assignments.unsqueeze(-1).expand(n_chains, n_points, x.shape[1])
    point_means, point_variances = means.gather(1, index), variances.gather(1, index)
    log_likelihood = -0.5 * (
        _LOG_2PI + point_variances.log() + (x - point_means) ** 2 / point_variances
    )
    return (
        log_dirichlet
        + log_inverse_gamma
        + log_mean_prior.sum((-1, -2))
        + weights.log().gather(1, assignments).sum(-1)
        + log_likelihood.sum((-1, -2))
    )


def sort_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Relabel components so that the first feature of the means increases, per chain."""
    order = state["means"][..., 0].argsort(dim=1)
    rank = order.argsort(dim=1)
    expanded = order.unsqueeze(-1).expand_as(state["means"])
    return {
        "weights": state["weights"].gather(1, order),
        "means": state["means"].gather(1, expanded),
        "variances": state["variances"].gather(1, expanded),
        "assignments": rank.gather(1, state["assignments"]),
    }
