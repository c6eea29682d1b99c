"""Density and EM for finite Gaussian mixtures: pure batched tensor functions (no classes).

`gaussian_log_probs`, `diagonal_log_probs`, `m_step`, `covariances_valid`, and the fast EM
step on precomputed `em_features` (each E-step and the M-step's sufficient statistics are one
matrix product with the feature matrix): `em_weighted_log_probs`, `normalize_in_place`,
`em_m_step`, one whole iteration `em_iteration`, and the standalone loop `run_em`.
`probgen.mixture.model.GaussianMixture` runs these iterations on the shared EM driver
(`probgen.fitting.em`); the conjugate Gibbs draws are in `probgen.mixture.conjugate`.

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

from probgen.core.distributed import all_reduce_sum

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
# Fast EM: features computed once per fit, one matrix product per E-step
# ---------------------------------------------------------------------------------------------
@dataclass
class EMFeatures:
    """The data in the form EM consumes, computed once per fit.

    Attributes:
        covariance: "full", "diag" or "spherical".
        points: (n, D) the data.
        shift: (D,) the data's mean.
        density_features: (n, F) rows [1, c] ("full"), [1, c, c**2] ("diag") or
            [1, c, |c|**2] ("spherical") of the centred points c = points - shift. Every
            E-step is one product of them with an (F, K) matrix; centring keeps the expanded
            quadratic forms from losing precision on data far from the origin.
        statistics_features: the same rows built from the uncentred points, so that
            responsibilities^T @ statistics_features gives every M-step sum at once, with
            scikit-learn's formulas on the data as given.
    """

    covariance: str
    points: Tensor
    shift: Tensor
    density_features: Tensor
    statistics_features: Tensor


def _augmented(points: Tensor, covariance: str) -> Tensor:
    ones = torch.ones(points.shape[0], 1, dtype=points.dtype, device=points.device)
    if covariance == "full":
        return torch.cat([ones, points], 1)
    squares = points * points
    if covariance == "spherical":
        squares = squares.sum(1, keepdim=True)
    return torch.cat([ones, points, squares], 1)


def em_features(x: Tensor, covariance: str) -> EMFeatures:
    """Precompute the feature matrices of `x` (n, D) for `run_em`.

    Example:
        >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> em_features(x, "diag").density_features
        tensor([[ 1., -1., -1.,  1.,  1.],
                [ 1.,  1.,  1.,  1.,  1.]])
    """
    shift = x.mean(0)
    return EMFeatures(
        covariance,
        x,
        shift,
        _augmented(x - shift, covariance),
        _augmented(x, covariance),
    )


def precision_cholesky(covariance_cholesky: Tensor) -> Tensor:
    """Upper-triangular U with U U^T = covariance^-1, from the lower Cholesky factor (K, D, D).

    This is scikit-learn's `precisions_cholesky_`: U = (L^-1)^T.
    """
    eye = torch.eye(
        covariance_cholesky.shape[-1],
        dtype=covariance_cholesky.dtype,
        device=covariance_cholesky.device,
    ).expand_as(covariance_cholesky)
    return torch.linalg.solve_triangular(covariance_cholesky, eye, upper=False).mT


def em_weighted_log_probs(
    data: EMFeatures,
    weights: Tensor,
    means: Tensor,
    covariances: Tensor,
    covariance_cholesky: Tensor | None = None,
) -> Tensor:
    """log weight_k + log N(x_i | component k) for every point and component, (n, K).

    Args:
        data: from `em_features`.
        weights: (K,).
        means: (K, D).
        covariances: as in `gaussian_log_probs`.
        covariance_cholesky: for "full", the lower Cholesky factors of `covariances` when
            already known (the validity check of the previous M-step computes them).

    The diagonal and spherical quadratic forms expand into one product of the feature matrix
    with a (F, K) matrix whose first row holds every constant. The full form whitens with
    scikit-learn's precision Cholesky factors, all components in one (n, K * D) product.
    """
    n_features = means.shape[1]
    means = means - data.shift
    constant = weights.log() - 0.5 * n_features * _LOG_2PI
    if data.covariance == "full":
        if covariance_cholesky is None:
            covariance_cholesky = torch.linalg.cholesky(covariances)
        factors = precision_cholesky(covariance_cholesky)  # (K, D, D)
        n_components = means.shape[0]
        projection = torch.cat(
            [-(means.unsqueeze(1) @ factors), factors], 1
        )  # (K, 1 + D, D): [1, x] @ it = (x - mean) @ U
        projection = projection.permute(1, 0, 2).reshape(n_features + 1, -1)
        log_det = factors.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # = -0.5 log|covariance|
        block_sums = torch.block_diag(
            *[torch.full((n_features, 1), -0.5, dtype=means.dtype, device=means.device)]
            * n_components
        )
        bias = constant + log_det
        features = data.density_features
        n_points = features.shape[0]
        result = torch.empty(n_points, n_components, dtype=means.dtype, device=means.device)
        rows = _chunk_rows(n_components * n_features, n_points)
        buffer = torch.empty(
            rows, n_components * n_features, dtype=means.dtype, device=means.device
        )
        # Row blocks keep the (rows, K * D) whitened points in cache (one (n, K * D) array
        # costs about three times as much in memory traffic and page faults).
        for start in range(0, n_points, rows):
            stop = min(start + rows, n_points)
            whitened = buffer[: stop - start]
            torch.mm(features[start:stop], projection, out=whitened)
            whitened.square_()
            torch.addmm(bias, whitened, block_sums, out=result[start:stop])
        return result
    if data.covariance == "diag":
        precisions = covariances.reciprocal()
        log_det = covariances.log().sum(-1)
        quadratic_rows = -0.5 * precisions.T  # (D, K)
    else:
        precisions = covariances.reciprocal()
        log_det = n_features * covariances.log()
        quadratic_rows = (-0.5 * precisions).unsqueeze(0)
        precisions = precisions.unsqueeze(1)
    scaled_means = means * precisions  # (K, D)
    first = constant - 0.5 * (log_det + (means * scaled_means).sum(-1))
    matrix = torch.cat([first.unsqueeze(0), scaled_means.T, quadratic_rows])
    return data.density_features @ matrix


def _chunk_rows(width: int, n_points: int) -> int:
    """Rows per block so that a (rows, width) float block stays around 1 MB."""
    return max(1, min(n_points, 131072 // max(width, 1)))


def normalize_in_place(weighted_log_probs: Tensor) -> Tensor:
    """Turn weighted log densities (n, K) into responsibilities in place; returns log p(x_i).

    One exponential per entry: the row maximum is subtracted, the exponentials are normalised
    by their sum, and log p(x_i) = max + log(sum).
    """
    top = weighted_log_probs.amax(-1, keepdim=True)
    # Terms below a floor a little above log(smallest normal number) become exact zeros (as
    # if exp had underflowed): this keeps exp, the division and the M-step products free of
    # subnormals, which are about ten times slower to compute (float32 especially), and
    # changes a responsibility by less than 1e-33 (float32).
    floor = math.log(torch.finfo(weighted_log_probs.dtype).tiny) + 10.0
    weighted_log_probs.sub_(top)
    weighted_log_probs.masked_fill_(weighted_log_probs < floor, -math.inf).exp_()
    total = weighted_log_probs.sum(-1, keepdim=True)
    weighted_log_probs.div_(total)
    return (top + total.log()).squeeze(-1)


def em_m_step(
    data: EMFeatures, responsibilities: Tensor, reg_covar: float, *, sharded: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """`m_step` on precomputed features: (weights, means, covariances).

    The counts, weighted sums and (for "diag"/"spherical") weighted sums of squares come from
    one product responsibilities^T @ features. Full covariances are accumulated from the
    points' differences to each new mean (scikit-learn's numerically stable form), one batched
    product over components.

    With `sharded`, `data` and `responsibilities` are this rank's rows: the sums are added up
    over the ranks (`probgen.core.distributed.all_reduce_sum`; a second reduction for the full
    covariances, which need the new means first), so every rank gets the same parameters.
    """
    dtype = data.points.dtype
    n_features = data.points.shape[1]
    statistics = responsibilities.T @ data.statistics_features  # (K, F)
    if sharded:
        all_reduce_sum(statistics)
    counts = statistics[:, 0] + 10 * torch.finfo(dtype).eps
    weighted_sums = statistics[:, 1 : n_features + 1]
    inverse_counts = counts.reciprocal().unsqueeze(1)
    means = weighted_sums * inverse_counts
    if data.covariance == "full":
        n_points, n_components = responsibilities.shape
        covariances = torch.zeros(
            n_components, n_features, n_features, dtype=dtype, device=means.device
        )
        columns = responsibilities.T.contiguous()  # contiguous per-component blocks
        rows = _chunk_rows(n_components * n_features, n_points)
        for start in range(0, n_points, rows):  # row blocks that stay in cache
            stop = min(start + rows, n_points)
            difference = data.points[start:stop].unsqueeze(0) - means.unsqueeze(1)  # (K, b, D)
            weighted = difference * columns[:, start:stop, None]
            covariances.baddbmm_(weighted.mT, difference)
        if sharded:
            all_reduce_sum(covariances)
        covariances.mul_(inverse_counts.unsqueeze(-1))
        covariances.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
    else:
        # scikit-learn's formula: E[x^2] - 2 mean E[x] + mean^2 + reg_covar.
        squares = statistics[:, n_features + 1 :] * inverse_counts
        cross = means * weighted_sums * inverse_counts
        if data.covariance == "diag":
            covariances = squares - 2 * cross + means * means + reg_covar
        else:
            covariances = (
                squares[:, 0] - 2 * cross.sum(1) + (means * means).sum(1)
            ) / n_features + reg_covar
    weights = counts / counts.sum()
    return weights, means, covariances


@dataclass
class EMResult:
    """What `run_em` returns.

    Attributes:
        weights, means, covariances: the last good parameters.
        history: average log-likelihood per point before each completed M-step.
        converged: the change of the average log-likelihood fell below `tol`.
        failure: None, or why EM stopped early ("nonfinite" or "singular").
        failed_iteration: the iteration that failed (1-based), 0 when none did.
        failed_value: the non-finite average log-likelihood for "nonfinite".
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor
    history: list[float]
    converged: bool
    failure: str | None = None
    failed_iteration: int = 0
    failed_value: float = math.nan


def _check_parameters(weights: Tensor, means: Tensor, covariances: Tensor, covariance: str):
    """(valid, lower Cholesky factors for "full" or None), one synchronisation."""
    finite = torch.isfinite(covariances).all() & torch.isfinite(means).all()
    finite = finite & torch.isfinite(weights).all()
    if covariance == "full":
        cholesky, info = torch.linalg.cholesky_ex(covariances)
        return bool(finite & (info == 0).all()), cholesky
    return bool(finite & (covariances > 0).all()), None


@dataclass
class EMStep:
    """One EM iteration's outcome (`em_iteration`).

    Attributes:
        average: the average log-likelihood per point at the parameters the step started from.
        parameters: (weights, means, covariances) after the M-step; None when it failed.
        cholesky: lower Cholesky factors of the new covariances ("full"), else None.
        failure: None, "nonfinite" (the average is not finite: no M-step ran) or "singular"
            (the M-step made a covariance invalid: its parameters are dropped).
    """

    average: float
    parameters: tuple[Tensor, Tensor, Tensor] | None = None
    cholesky: Tensor | None = None
    failure: str | None = None


def em_iteration(
    data: EMFeatures,
    weights: Tensor,
    means: Tensor,
    covariances: Tensor,
    cholesky: Tensor | None,
    *,
    reg_covar: float,
    sharded: bool = False,
) -> EMStep:
    """One EM iteration in scikit-learn's order: E-step (the average log-likelihood of the
    current parameters), M-step, validity check of the new parameters.

    `cholesky` is the lower Cholesky factor of `covariances` for "full" (None otherwise); the
    returned step carries the new parameters' factors for the next iteration. With `sharded`,
    `data` is this rank's rows: the log-likelihood and the M-step's sums are reduced over the
    ranks, so every rank records the same average and gets the same parameters.

    Example:
        >>> x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=torch.float64)
        >>> start = (torch.tensor([0.5, 0.5]), torch.tensor([[-1.0], [1.0]]), torch.ones(2, 1))
        >>> step = em_iteration(
        ...     em_features(x, "diag"), *[t.double() for t in start], None, reg_covar=1e-6)
        >>> step.failure, [round(m, 3) for m in step.parameters[1][:, 0].tolist()]
        (None, [-1.345, 1.345])
    """
    weighted = em_weighted_log_probs(data, weights, means, covariances, cholesky)
    if sharded:
        log_likelihoods = normalize_in_place(weighted)
        totals = torch.stack([log_likelihoods.sum(), log_likelihoods.new_tensor(len(weighted))])
        average = float(all_reduce_sum(totals)[0] / totals[1])
    else:
        average = float(normalize_in_place(weighted).mean())
    if not math.isfinite(average):
        return EMStep(average, failure="nonfinite")
    new_weights, new_means, new_covariances = em_m_step(
        data, weighted, reg_covar, sharded=sharded
    )
    new = (new_weights, new_means, new_covariances)
    valid, new_cholesky = _check_parameters(*new, data.covariance)
    if not valid:
        return EMStep(average, failure="singular")
    return EMStep(average, new, new_cholesky)


def run_em(
    data: EMFeatures,
    weights: Tensor,
    means: Tensor,
    covariances: Tensor,
    *,
    reg_covar: float,
    max_iter: int,
    tol: float,
) -> EMResult:
    """EM iterations in scikit-learn's order from (weights, means, covariances).

    Each iteration: E-step (the average log-likelihood of the current parameters is recorded),
    M-step, validity check; stops once the average changes by less than `tol`. A non-finite
    log-likelihood or an invalid covariance ends the run with the last good parameters and
    `failure` set (the caller raises).

    Example:
        >>> x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=torch.float64)
        >>> data = em_features(x, "diag")
        >>> start = (torch.tensor([0.5, 0.5]), torch.tensor([[-1.0], [1.0]]),
        ...          torch.ones(2, 1))
        >>> result = run_em(data, *[t.double() for t in start], reg_covar=1e-6, max_iter=50,
        ...                 tol=1e-9)
        >>> [round(m, 3) for m in result.means[:, 0].tolist()]
        [-1.5, 1.5]
    """
    cholesky = torch.linalg.cholesky(covariances) if data.covariance == "full" else None
    history: list[float] = []
    previous = -math.inf
    for iteration in range(1, max_iter + 1):
        step = em_iteration(data, weights, means, covariances, cholesky, reg_covar=reg_covar)
        if step.failure is not None:
            failed_value = step.average if step.failure == "nonfinite" else math.nan
            return EMResult(
                weights, means, covariances, history, False, step.failure, iteration, failed_value
            )
        weights, means, covariances = step.parameters
        cholesky = step.cholesky
        history.append(step.average)
        if abs(step.average - previous) < tol:
            return EMResult(weights, means, covariances, history, True)
        previous = step.average
    return EMResult(weights, means, covariances, history, False)

