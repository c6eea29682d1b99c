"""Partly observed rows of full- and tied-covariance Gaussians: marginals and EM statistics.

A row with some entries missing has, under component k, the marginal density of its observed
entries, N(x_o | mu_o, S_oo). The EM statistics of such a row are those of the complete row
with the missing entries replaced by their conditional expectation given the observed ones,
E[x_m | x_o] = mu_m + S_mo S_oo^-1 (x_o - mu_o), plus the conditional covariance
S_mm - S_mo S_oo^-1 S_om in the second moment. Rows are grouped by their pattern of missing
entries, so each pattern costs one small Cholesky factorisation per component.

Example:
    >>> import torch
    >>> from probgen.hmm.emissions.missing import partly_observed
    >>> partly_observed(torch.tensor([[True, True], [True, False], [False, False]]))
    tensor([False,  True, False])
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

_LOG_2PI = math.log(2 * math.pi)


def partly_observed(observed: torch.Tensor) -> torch.Tensor | None:
    """(N,) mask of rows with some but not all entries observed; None when there are none."""
    n_observed = observed.sum(-1)
    partial = (n_observed > 0) & (n_observed < observed.shape[-1])
    return partial if bool(partial.any()) else None


def _patterns(observed: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(row indices, observed dims) for each distinct observation pattern of the rows."""
    patterns, inverse = torch.unique(observed, dim=0, return_inverse=True)
    for index, pattern in enumerate(patterns):
        yield (inverse == index).nonzero().squeeze(1), pattern.nonzero().squeeze(1)


def marginal_log_probs(
    complete_log_probs: torch.Tensor,
    values: torch.Tensor,
    observed: torch.Tensor,
    means: torch.Tensor,
    covariances: torch.Tensor,
) -> torch.Tensor:
    """Log-densities of rows with missing entries marginalised.

    Args:
        complete_log_probs: (N, K) log-densities computed as if every entry were observed.
        values: (N, D) values, missing entries filled with any finite number.
        observed: (N, D) bool mask of observed entries.
        means: (K, D); covariances: (K, D, D).

    Returns:
        (N, K): the complete rows' log-densities, 0 for rows with nothing observed, and the
        marginal log-density of the observed entries for the other rows.
    """
    any_observed = observed.any(-1, keepdim=True)
    log_probs = torch.where(any_observed, complete_log_probs, torch.zeros_like(complete_log_probs))
    partial = partly_observed(observed)
    if partial is None:
        return log_probs
    rows = partial.nonzero().squeeze(1)
    for members, dims in _patterns(observed[rows]):
        index = rows[members]
        sub = covariances[:, dims][:, :, dims]  # (K, d, d)
        cholesky = torch.linalg.cholesky(sub)
        differences = values[index][:, dims][None] - means[:, dims][:, None]  # (K, n, d)
        solved = torch.linalg.solve_triangular(cholesky, differences.transpose(-1, -2), upper=False)
        quadratic = solved.square().sum(-2).t()  # (n, K)
        log_det = 2 * cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_probs[index] = -0.5 * (quadratic + log_det + dims.numel() * _LOG_2PI)
    return log_probs


def add_imputed_statistics(
    stats: dict[str, torch.Tensor],
    values: torch.Tensor,
    observed: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    covariances: torch.Tensor,
    center: torch.Tensor,
) -> None:
    """Add the expected statistics of partly observed rows to `stats` (in place).

    Args:
        stats: ``feature_weight`` (K, D), ``sum`` (K, D) and ``sum_outer`` (K, D, D), taken
            about `center`, as `GaussianComponents.statistics` makes them.
        values: (N, D) partly observed rows (missing entries filled with any finite number).
        observed: (N, D) their observed entries; weights: (N, K) their weights.
        means, covariances: the parameters the e-step runs at, (K, D) and (K, D, D).
        center: (D,) the point the sums are taken about.
    """
    feature_weight, sums, sum_outer = stats["feature_weight"], stats["sum"], stats["sum_outer"]
    n_features = values.shape[-1]
    all_dims = torch.arange(n_features, device=values.device)
    for members, dims in _patterns(observed):
        missing = all_dims[~torch.isin(all_dims, dims)]
        x_obs = values[members][:, dims]  # (n, o)
        w = weights[members]  # (n, K)
        s_oo = covariances[:, dims][:, :, dims]
        s_om = covariances[:, dims][:, :, missing]  # (K, o, m)
        cholesky = torch.linalg.cholesky(s_oo)
        gain = torch.cholesky_solve(s_om, cholesky).transpose(-1, -2)  # (K, m, o) = S_mo S_oo^-1
        residual = x_obs[None] - means[:, dims][:, None]  # (K, n, o)
        imputed_missing = means[:, missing][:, None] + residual @ gain.transpose(-1, -2)
        filled = values[members].expand(means.shape[0], -1, -1).clone()  # (K, n, D)
        filled[:, :, missing] = imputed_missing
        centred = filled - center  # (K, n, D)
        conditional = covariances[:, missing][:, :, missing] - gain @ s_om  # (K, m, m)
        total = w.sum(0)  # (K,)
        weighted = centred * w.t()[:, :, None]  # (K, n, D)
        feature_weight += total[:, None]
        sums += weighted.sum(1)
        outer = weighted.transpose(-1, -2) @ centred  # (K, D, D)
        block = missing[:, None], missing[None, :]
        outer[(slice(None), *block)] += total[:, None, None] * conditional
        sum_outer += outer
