"""Conjugate blocked Gibbs for the Bayesian Gaussian mixture: pure tensor functions.

Batched over chains: `draw_assignments` (z | parameters), `draw_weights` (weights | z,
Dirichlet), `draw_means_variances` ((means, variances) | z, x, Normal-Inverse-Gamma,
"diag"/"spherical"), `draw_means_covariances` ((means, covariances) | z, x,
Normal-Inverse-Wishart, "full", with `draw_inverse_wishart`), `joint_log_prob` and
`sort_state`. `probgen.mixture.gibbs.MixtureGibbs` is the model's Gibbs interface built on them.

Example:
    >>> import torch
    >>> from probgen.mixture.conjugate import component_counts, draw_weights
    >>> counts = component_counts(torch.tensor([[0, 0, 1]]), 2, torch.float64)
    >>> counts.tolist()
    [[2.0, 1.0]]
    >>> draw_weights(counts, torch.tensor(1.0, dtype=torch.float64),
    ...              torch.Generator().manual_seed(0)).sum(-1).tolist()
    [1.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.mixture.inference import diagonal_log_probs, precision_cholesky

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class MixturePrior:
    """Resolved conjugate prior (tensors on the data's dtype and device).

    "diag" / "spherical" use the Normal-Inverse-Gamma fields (`variance_shape`,
    `variance_scale`); "full" uses the Normal-Inverse-Wishart fields (`covariance_df`,
    `covariance_scale`) and leaves the others None.

    Attributes:
        weight_concentration: Dirichlet concentration, scalar tensor (shared by components).
        mean_prior: (D,) prior mean of every component's mean.
        mean_precision: scalar kappa; mean | variance ~ Normal(mean_prior, variance / kappa)
            (full: mean | covariance ~ MultivariateNormal(mean_prior, covariance / kappa)).
        variance_shape: scalar InverseGamma shape a.
        variance_scale: InverseGamma scale b, (D,) for "diag", scalar for "spherical".
        spherical: whether one variance per component is shared by its features.
        covariance_df: scalar InverseWishart degrees of freedom nu (> D - 1), "full" only.
        covariance_scale: (D, D) InverseWishart scale matrix Psi (positive definite).
    """

    weight_concentration: Tensor
    mean_prior: Tensor
    mean_precision: Tensor
    variance_shape: Tensor | None = None
    variance_scale: Tensor | None = None
    spherical: bool = False
    covariance_df: Tensor | None = None
    covariance_scale: Tensor | None = None

    @property
    def full(self) -> bool:
        """Whether this is the Normal-Inverse-Wishart prior of full covariances."""
        return self.covariance_scale is not None


def draw_assignments(
    x: Tensor, weights: Tensor, means: Tensor, variances: Tensor, generator: torch.Generator
) -> Tensor:
    """Draw each point's component from its exact conditional, for every chain.

    Args:
        x: data (n, D).
        weights: (chains, K); means: (chains, K, D).
        variances: (chains, K, D) variances, or (chains, K, D, D) full covariances.

    Returns:
        Long tensor (chains, n).
    """
    logits = weights.log().unsqueeze(-2) + component_log_probs(x, means, variances)
    return draw_categorical(logits, generator)


def component_log_probs(x: Tensor, means: Tensor, covariances: Tensor) -> Tensor:
    """log N(x_i | component k) batched over chains, (chains, n, K).

    `covariances` (chains, K, D) are diagonal variances, (chains, K, D, D) full matrices.
    """
    if covariances.dim() == means.dim():
        return diagonal_log_probs(x, means, covariances)
    return full_log_probs(x, means, covariances)


def full_log_probs(x: Tensor, means: Tensor, covariances: Tensor) -> Tensor:
    """Full-covariance Gaussian log densities, batched: x (n, D), means (*batch, K, D),
    covariances (*batch, K, D, D) -> (*batch, n, K).

    Points are whitened by the precision Cholesky factor U (U U^T = covariance^-1), one
    (n, D) @ (D, D) product per component; as in `diagonal_log_probs` they are first centred
    on the mean of the component means so that data far from the origin keeps its precision.

    Example:
        >>> x = torch.zeros(1, 2, dtype=torch.float64)
        >>> covariances = torch.eye(2, dtype=torch.float64).expand(1, 1, 2, 2)
        >>> full_log_probs(x, torch.zeros(1, 1, 2, dtype=torch.float64), covariances)
        tensor([[[-1.8379]]], dtype=torch.float64)
    """
    shift = means.detach().reshape(-1, means.shape[-1]).mean(0)
    factors = precision_cholesky(torch.linalg.cholesky(covariances))  # (*batch, K, D, D)
    whitened = (x - shift) @ factors - ((means - shift).unsqueeze(-2) @ factors)
    mahalanobis = (whitened**2).sum(-1)  # (*batch, K, n)
    half_log_det = factors.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # -0.5 log|covariance|
    values = half_log_det.unsqueeze(-1) - 0.5 * (x.shape[-1] * _LOG_2PI + mahalanobis)
    return values.transpose(-1, -2)


def draw_categorical(logits: Tensor, generator: torch.Generator) -> Tensor:
    """One draw per row of `logits` (*rows, K) by inverting the cumulative distribution.

    The same draws as `probgen.samplers.gibbs.sample_categorical` (one uniform per row, scaled
    by the total), without its softmax: torch's softmax over a short last axis is several
    times slower than this max-subtracted exponential, and the normalisation is not needed.

    Example:
        >>> logits = torch.tensor([[0.0, -1e9], [-1e9, 0.0]])
        >>> draw_categorical(logits, torch.Generator().manual_seed(0)).tolist()
        [0, 1]
    """
    unnormalized = (logits - logits.amax(-1, keepdim=True)).exp_()
    cumulative = unnormalized.cumsum_(-1)
    uniform = torch.rand(
        logits.shape[:-1] + (1,), generator=generator, dtype=logits.dtype, device=logits.device
    )
    index = (cumulative < uniform * cumulative[..., -1:]).sum(-1)
    return index.clamp_(max=logits.shape[-1] - 1)


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


def draw_inverse_wishart(
    df: Tensor, scale_cholesky: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """InverseWishart(df, scale) draws by the Bartlett decomposition, batched.

    Args:
        df: degrees of freedom nu (*batch), each > D - 1.
        scale_cholesky: lower Cholesky factor C of the scale matrix Psi = C C^T (*batch, D, D).
        generator: source of every draw (D gammas, then D * D normals per matrix).

    Returns:
        (covariance (*batch, D, D), factor (*batch, D, D)) with factor @ factor^T =
        covariance (the factor is not triangular).

    The precision covariance^-1 ~ Wishart(nu, Psi^-1) is F A A^T F^T with F = C^-T and A
    lower triangular, A_ii^2 ~ chi-square(nu - i) (twice a Gamma((nu - i) / 2), drawn with
    the generator) and standard normals below the diagonal. Inverting it gives the covariance
    C A^-T A^-1 C^T, computed by one triangular solve without inverting Psi.

    Example:
        >>> eye = torch.eye(2, dtype=torch.float64)
        >>> covariance, factor = draw_inverse_wishart(
        ...     torch.tensor(5.0, dtype=torch.float64), eye, torch.Generator().manual_seed(0))
        >>> covariance.shape, bool(torch.allclose(factor @ factor.mT, covariance))
        (torch.Size([2, 2]), True)
    """
    n_features = scale_cholesky.shape[-1]
    batch = scale_cholesky.shape[:-2]
    dtype, device = scale_cholesky.dtype, scale_cholesky.device
    offsets = torch.arange(n_features, dtype=dtype, device=device)
    shapes = 0.5 * (df.unsqueeze(-1).expand(*batch, n_features) - offsets)
    chi_squares = 2 * torch._standard_gamma(shapes, generator=generator)
    diagonal = chi_squares.clamp_min(torch.finfo(dtype).tiny).sqrt()
    noise = torch.randn(
        batch + (n_features, n_features), dtype=dtype, device=device, generator=generator
    )
    bartlett = noise.tril(-1) + torch.diag_embed(diagonal)
    solved = torch.linalg.solve_triangular(bartlett, scale_cholesky.mT, upper=False)  # A^-1 C^T
    factor = solved.mT  # C A^-T
    covariance = factor @ solved
    return 0.5 * (covariance + covariance.mT), factor


def normal_inverse_wishart_posterior(
    x: Tensor, assignments: Tensor, counts: Tensor, prior: MixturePrior
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Posterior (mean, kappa, df, scale) of each component's (mean, covariance) given z, x.

    Returns tensors (chains, K, D), (chains, K), (chains, K) and (chains, K, D, D):
    kappa_n = kappa + n_k, mean_n = (kappa mean_prior + sum x) / kappa_n, nu_n = nu + n_k and
    Psi_n = Psi + sum (x - mean_n)(x - mean_n)^T + kappa (mean_n - mean_prior)(...)^T, the
    scatter taken about the posterior mean (no "sum of squares minus squared sum"
    cancellation); it equals the textbook Psi + S + kappa n_k / kappa_n (xbar - m)(xbar - m)^T.
    """
    n_chains, n_points = assignments.shape
    n_components, n_features = counts.shape[1], x.shape[1]
    index = assignments.unsqueeze(-1).expand(n_chains, n_points, n_features)
    sums = torch.zeros(n_chains, n_components, n_features, dtype=x.dtype, device=x.device)
    sums = sums.scatter_add_(1, index, x.expand(n_chains, n_points, n_features))
    kappa = prior.mean_precision + counts
    mean = (prior.mean_precision * prior.mean_prior + sums) / kappa.unsqueeze(-1)
    residuals = x - mean.gather(1, index)  # (chains, n, D)
    outer = (residuals.unsqueeze(-1) * residuals.unsqueeze(-2)).reshape(n_chains, n_points, -1)
    scatter = torch.zeros(
        n_chains, n_components, n_features * n_features, dtype=x.dtype, device=x.device
    )
    scatter = scatter.scatter_add_(1, assignments.unsqueeze(-1).expand_as(outer), outer)
    offset = mean - prior.mean_prior
    scale = (
        prior.covariance_scale
        + scatter.reshape(n_chains, n_components, n_features, n_features)
        + prior.mean_precision * offset.unsqueeze(-1) * offset.unsqueeze(-2)
    )
    return mean, kappa, prior.covariance_df + counts, 0.5 * (scale + scale.mT)


def draw_means_covariances(
    x: Tensor,
    assignments: Tensor,
    counts: Tensor,
    prior: MixturePrior,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Draw (means (chains, K, D), covariances (chains, K, D, D)) from their
    Normal-Inverse-Wishart posterior: covariance ~ InverseWishart(nu_n, Psi_n), then
    mean | covariance ~ MultivariateNormal(mean_n, covariance / kappa_n)."""
    mean, kappa, df, scale = normal_inverse_wishart_posterior(x, assignments, counts, prior)
    covariances, factor = draw_inverse_wishart(df, torch.linalg.cholesky(scale), generator)
    noise = torch.randn(mean.shape, dtype=x.dtype, device=x.device, generator=generator)
    offsets = (factor @ noise.unsqueeze(-1)).squeeze(-1) / kappa.sqrt().unsqueeze(-1)
    return mean + offsets, covariances


def inverse_wishart_log_prob(covariances: Tensor, df: Tensor, scale: Tensor) -> Tensor:
    """log InverseWishart(covariances | df, scale) with every constant, (*batch, D, D) -> (*batch).

    Example:
        >>> eye = torch.eye(2, dtype=torch.float64)
        >>> round(float(inverse_wishart_log_prob(eye, torch.tensor(4.0).double(), eye)), 4)
        -4.2242
    """
    n_features = scale.shape[-1]
    cholesky = torch.linalg.cholesky(covariances)
    scale_cholesky = torch.linalg.cholesky(scale)
    log_det = 2 * cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    scale_log_det = 2 * scale_cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    # tr(Psi covariance^-1) = |L^-1 C|_F^2 with covariance = L L^T, Psi = C C^T.
    whitened = torch.linalg.solve_triangular(
        cholesky, scale_cholesky.expand_as(cholesky), upper=False
    )
    trace = (whitened**2).sum((-1, -2))
    return (
        0.5 * df * scale_log_det
        - 0.5 * df * n_features * math.log(2)
        - torch.mvlgamma(0.5 * df, n_features)
        - 0.5 * (df + n_features + 1) * log_det
        - 0.5 * trace
    )


def joint_log_prob(
    x: Tensor,
    weights: Tensor,
    means: Tensor,
    variances: Tensor,
    assignments: Tensor,
    prior: MixturePrior,
) -> Tensor:
    """log p(weights, means, variances, assignments, x) with every constant, per chain.

    `variances` are (chains, K, D) under the Normal-Inverse-Gamma prior and full covariances
    (chains, K, D, D) under the Normal-Inverse-Wishart one (`prior.full`).
    """
    concentration = prior.weight_concentration.expand(weights.shape[-1])
    log_dirichlet = (
        torch.lgamma(concentration.sum())
        - torch.lgamma(concentration).sum()
        + ((concentration - 1) * weights.log()).sum(-1)
    )
    log_assignments = weights.log().gather(1, assignments).sum(-1)
    if prior.full:
        assert prior.covariance_df is not None and prior.covariance_scale is not None
        log_inverse_wishart = inverse_wishart_log_prob(
            variances, prior.covariance_df, prior.covariance_scale
        ).sum(-1)
        # N(mean_k | mean_prior, covariance_k / kappa) = N(mean_prior | mean_k, same): the
        # prior mean as the one "point" under every component, (chains, 1, K).
        mean_covariances = variances / prior.mean_precision
        log_mean_prior = full_log_probs(prior.mean_prior.unsqueeze(0), means, mean_covariances)
        log_mean_prior = log_mean_prior.sum((-1, -2))
        log_likelihood = full_log_probs(x, means, variances).gather(-1, assignments.unsqueeze(-1))
        return (
            log_dirichlet
            + log_inverse_wishart
            + log_mean_prior
            + log_assignments
            + log_likelihood.sum((-1, -2))
        )
    a, b = prior.variance_shape, prior.variance_scale
    assert a is not None and b is not None
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
        + log_assignments
        + log_likelihood.sum((-1, -2))
    )


def sort_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Relabel components so that the first feature of the means increases, per chain.

    Every entry other than "assignments" has the component axis at dimension 1 ("weights",
    "means", "variances" or full "covariances") and is permuted; assignments are renamed.
    """
    order = state["means"][..., 0].argsort(dim=1)
    rank = order.argsort(dim=1)
    sorted_state = {}
    for key, value in state.items():
        if key == "assignments":
            sorted_state[key] = rank.gather(1, value)
        else:
            index = order.reshape(*order.shape, *[1] * (value.dim() - 2)).expand_as(value)
            sorted_state[key] = value.gather(1, index)
    return sorted_state
