"""Gaussian components batched over states, with diag, full, spherical or tied covariances.

`GaussianComponents` is shared by the Gaussian and Gaussian-mixture emission families: it
holds the means and the covariance storage of the covariance type and gives log-densities,
sufficient statistics and the m-step.

Example:
    >>> import torch
    >>> from probgen.hmm.emissions.components import GaussianComponents
    >>> components = GaussianComponents(3, 2, "full", 1e-2, 1e-6)
    >>> components.full_covariances().shape
    torch.Size([3, 2, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from probgen.core.kmeans import kmeans
from probgen.hmm.emissions.missing import (
    add_imputed_statistics,
    marginal_log_probs,
    partly_observed,
)
from probgen.hmm.layout import (
    summed_step_products,
)

_LOG_2PI = math.log(2 * math.pi)
# Largest (n_values * n_components * n_features) block evaluated at once in Gaussian log-densities.
_BLOCK_ELEMENTS = 2**22
# The dtype of quadratic features and their products, whatever the model's (see
# `GaussianComponents.uses_quadratic_features`).
FEATURE_DTYPE = torch.float64


@dataclass
class QuadraticFeatures:
    """Features [(x - c)^2, x - c, 1 or observed] of Gaussian values (see `quadratic_features`).

    Attributes:
        values: (..., 2 D + 1) when complete, else (..., 3 D).
        complete: whether every entry was observed.
    """

    values: torch.Tensor
    complete: bool


class GaussianComponents(nn.Module):
    """`n_components` Gaussians of one covariance type; the workhorse of Gaussian emissions.

    Covariance storage follows hmmlearn: ``diag`` (K, D) variances, ``spherical`` (K,) variances,
    ``full`` (K, D, D), ``tied`` (D, D) shared by all components, or (G, D, D) with
    `tied_groups` G. The m-step adds `covariance_prior` to every entry of the scatter
    (hmmlearn's scalar `covars_prior`: an inverse-gamma/Wishart prior that keeps the variance of
    a state with constant data positive) and clamps variances (eigenvalues) at
    `covariance_floor`. Missing entries are marginalised (`probgen.hmm.emissions.missing`).
    Statistics are taken about a fixed `center` (the data mean at initialisation) so that
    float32 sums keep their precision.
    """

    def __init__(
        self,
        n_components: int,
        n_features: int,
        covariance: str,
        covariance_prior: float,
        covariance_floor: float,
        tied_groups: int | None = None,
    ) -> None:
        super().__init__()
        self.n_components = n_components
        # None: one tied matrix (D, D) for all components; G: (G, D, D), one per group of
        # n_components / G consecutive components (hmmlearn's GMMHMM ties within a state).
        self.tied_groups = tied_groups
        self.n_features = n_features
        self.covariance = covariance
        self.covariance_prior = float(covariance_prior)
        self.covariance_floor = float(covariance_floor)
        self.register_buffer("means", torch.zeros(n_components, n_features))
        self.register_buffer("center", torch.zeros(n_features))
        eye = torch.eye(n_features)
        if covariance == "diag":
            storage = torch.ones(n_components, n_features)
        elif covariance == "spherical":
            storage = torch.ones(n_components)
        elif covariance == "full":
            storage = eye.expand(n_components, n_features, n_features).clone()
        elif tied_groups is None:
            storage = eye.clone()
        else:
            storage = eye.expand(tied_groups, n_features, n_features).clone()
        self.register_buffer("covariance_storage", storage)

    # ---- views ---------------------------------------------------------------------------
    def variances(self) -> torch.Tensor:
        """(K, D) per-feature variances (diag and spherical types)."""
        if self.covariance == "spherical":
            return self.covariance_storage[:, None].expand(self.n_components, self.n_features)
        return self.covariance_storage

    def full_covariances(self) -> torch.Tensor:
        """(K, D, D) covariance matrices whatever the storage."""
        if self.covariance in ("diag", "spherical"):
            return torch.diag_embed(self.variances())
        if self.covariance == "tied":
            if self.tied_groups is not None:
                per_group = self.n_components // self.tied_groups
                return self.covariance_storage.repeat_interleave(per_group, 0)
            return self.covariance_storage.expand(
                self.n_components, self.n_features, self.n_features
            )
        return self.covariance_storage

    # ---- densities -------------------------------------------------------------------------
    def log_prob(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """log N(x | component k) for (N, D) values -> (N, K).

        `values` has its missing entries replaced by zero and `observed` (N, D) marks the
        observed entries; missing entries are marginalised (only whole missing rows for full and
        tied covariances).
        """
        n_values = values.shape[0]
        block = max(1, _BLOCK_ELEMENTS // max(1, self.n_components * self.n_features))
        if n_values <= block:
            return self._log_prob_block(values, observed)
        return torch.cat(
            [
                self._log_prob_block(values[i : i + block], observed[i : i + block])
                for i in range(0, n_values, block)
            ]
        )

    def _log_prob_block(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        if self.uses_quadratic_features(values.dtype, values.device):
            features = self.quadratic_features(values, observed)
            log_probs = features.values @ self.quadratic_weights(features.complete).t()
            return log_probs.to(values.dtype)
        observed_f = observed.to(values.dtype)
        if self.covariance in ("diag", "spherical"):
            variances = self.variances()
            log_norm = observed_f @ (variances.log() + _LOG_2PI).t()
            scaled = (values[:, None, :] - self.means[None]) * variances.rsqrt()
            quadratic = (scaled.square_() * observed_f[:, None, :]).sum(-1)
            return -0.5 * (quadratic + log_norm)
        covariances = self.full_covariances()
        cholesky = torch.linalg.cholesky(covariances)
        differences = values[None, :, :] - self.means[:, None, :]  # (K, N, D)
        solved = torch.linalg.solve_triangular(cholesky, differences.transpose(-1, -2), upper=False)
        quadratic = solved.square().sum(-2).t()  # (N, K)
        log_det = 2 * cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        log_prob = -0.5 * (quadratic + log_det + self.n_features * _LOG_2PI)
        # Missing rows contribute 1; partly observed rows the marginal of their observed dims.
        return marginal_log_probs(log_prob, values, observed, self.means, covariances)

    # ---- quadratic features (diag and spherical covariances; float64 arithmetic) ----------
    def uses_quadratic_features(
        self, dtype: torch.dtype, device: torch.device | str | None = None
    ) -> bool:
        """Whether log-densities and statistics go through `quadratic_features`.

        The features and their products are always float64 (`FEATURE_DTYPE`): expanding the
        square cancels terms of size (x - c)^2 / variance, which float32 would round to
        ~1e-7 of that, i.e. visibly when a state lies many standard deviations from the data
        centre c. float64 models use them on every device; float32 models on the CPU, where
        one float64 matrix product is several times faster than the direct float32
        (x - mean)^2 over (N, K, D) (on a GPU the direct route is cheap and float64 may not
        be). Other dtypes keep the direct route.

        Example:
            >>> components = GaussianComponents(2, 3, "diag", 1e-2, 1e-6)
            >>> components.uses_quadratic_features(torch.float32, "cpu")
            True
            >>> components.uses_quadratic_features(torch.float32, "cuda")
            False
        """
        if self.covariance not in ("diag", "spherical"):
            return False
        if dtype == torch.float64:
            return True
        return dtype == torch.float32 and torch.device(device or "cpu").type == "cpu"

    def quadratic_features(
        self, values: torch.Tensor, observed: torch.Tensor | None
    ) -> QuadraticFeatures:
        """Features of (..., D) values in which every component's log-density is linear.

        With c the centre, m_k = mean_k - c and p_k = 1 / variance_k,
        log N(x | k) = sum_d -p_kd / 2 (x_d - c_d)^2 + p_kd m_kd (x_d - c_d)
        - (p_kd m_kd^2 + log(2 pi variance_kd)) / 2, so with the features
        [(x - c)^2, x - c, 1] (the last one per feature, as the observed mask, when entries are
        missing) all K log-densities are one matrix product with `quadratic_weights`, and the
        same features weighted by the posteriors are the sufficient statistics.

        Args:
            values: (..., D) values, missing entries filled with any finite number.
            observed: (..., D) bool mask of observed entries, or None when all are observed.
        """
        n = self.n_features
        width = 2 * n + 1 if observed is None else 3 * n
        features = values.new_empty(*values.shape[:-1], width, dtype=FEATURE_DTYPE)
        # Written into slices of one buffer: no temporaries of the data's size (float32 values
        # are widened by the subtraction itself).
        centred = torch.sub(values, self.center.to(FEATURE_DTYPE), out=features[..., n : 2 * n])
        if observed is None:
            features[..., 2 * n].fill_(1.0)
        else:
            centred.mul_(features[..., 2 * n :].copy_(observed))
        torch.square(centred, out=features[..., :n])
        return QuadraticFeatures(features, complete=observed is None)

    def quadratic_weights(self, complete: bool) -> torch.Tensor:
        """(K, F) float64 weights with `log N(x | k) = quadratic_features(x) @ weights[k]`."""
        variances = self.variances().to(FEATURE_DTYPE)
        precisions = variances.reciprocal()
        centred_means = self.means.to(FEATURE_DTYPE) - self.center.to(FEATURE_DTYPE)
        constant = centred_means.square() * precisions + variances.log() + _LOG_2PI  # (K, D)
        if complete:
            constant = constant.sum(-1, keepdim=True)
        return torch.cat([-0.5 * precisions, centred_means * precisions, -0.5 * constant], -1)

    def feature_statistics(
        self, features: QuadraticFeatures, posteriors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """`statistics` from time-major features (T, B, F) and state-major weights (T, K, B).

        One matrix product over all steps, (K, T * B) x (T * B, F), gives every weighted sum at
        once (a batched one unless the posteriors are stored state-outer). The sums are
        float64 like the features, whatever the posteriors' dtype: rounded to float32 they would
        lose the scatter (sum_squares - 2 mean sum + mean^2 weight) of a state many standard
        deviations from the centre; `m_step` rounds only the parameters it sets.
        """
        n = self.n_features
        # `to` keeps the state-outer strides, so the product stays a single matrix product.
        posteriors = posteriors.to(FEATURE_DTYPE)
        sums = summed_step_products(posteriors, features.values)  # (K, F)
        if features.complete:
            weight = sums[:, 2 * n]
            feature_weight = weight.unsqueeze(1).expand(-1, n).contiguous()
        else:
            weight = posteriors.sum((0, 2))
            feature_weight = sums[:, 2 * n :].contiguous()
        return {
            "weight": weight.contiguous(),
            "feature_weight": feature_weight,
            "sum": sums[:, n : 2 * n].contiguous(),
            "sum_squares": sums[:, :n].contiguous(),
        }

    # ---- EM ------------------------------------------------------------------------------
    def statistics(
        self, values: torch.Tensor, observed: torch.Tensor, weights: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Weighted sums about `center`: (N, D) values, (N, D) observed mask, (N, K) weights.

        Diagonal and spherical sums are float64 (`FEATURE_DTYPE`) whenever their densities
        use quadratic features (float32 models on the CPU included); see `feature_statistics`.
        """
        if self.uses_quadratic_features(values.dtype, values.device):
            values, weights = values.to(FEATURE_DTYPE), weights.to(FEATURE_DTYPE)
        observed_f = observed.to(values.dtype)
        centred = (values - self.center) * observed_f
        stats = {
            "weight": weights.sum(0),
            "feature_weight": weights.t() @ observed_f,
            "sum": weights.t() @ centred,
        }
        if self.covariance in ("diag", "spherical"):
            stats["sum_squares"] = weights.t() @ centred.square()
        else:
            # Partly observed rows enter through the conditional expectations of their missing
            # entries (`add_imputed_statistics`); the plain sums cover the other rows.
            partial = partly_observed(observed)
            whole = weights
            if partial is not None:
                whole = weights * (~partial).to(weights.dtype)[:, None]
                stats["feature_weight"] = whole.t() @ observed_f
                stats["sum"] = whole.t() @ centred
            outer = (centred[:, :, None] * centred[:, None, :]).reshape(centred.shape[0], -1)
            stats["sum_outer"] = (whole.t() @ outer).reshape(-1, self.n_features, self.n_features)
            if partial is not None:
                add_imputed_statistics(
                    stats,
                    values[partial],
                    observed[partial],
                    weights[partial],
                    self.means,
                    self.full_covariances(),
                    self.center,
                )
        return stats

    def m_step(self, stats: dict[str, torch.Tensor]) -> None:
        # float64 statistics of a float32 model (see `statistics`) are used at their precision:
        # the scatter below cancels terms of size weight * (mean - centre)^2. Only the new
        # parameters are rounded to the model's dtype.
        dtype = self.means.dtype
        weight = stats["feature_weight"]  # (K, D): per-feature weights (missing entries)
        has_data = weight > 0
        centred_means = torch.where(
            has_data,
            stats["sum"] / torch.where(has_data, weight, torch.ones_like(weight)),
            self.means - self.center,
        )
        self.means = (centred_means + self.center).to(dtype)
        prior = self.covariance_prior
        floor = self.covariance_floor
        if self.covariance in ("diag", "spherical"):
            scatter = (
                stats["sum_squares"]
                - 2 * centred_means * stats["sum"]
                + centred_means.square() * weight
            )
            variances = (prior + scatter) / weight.clamp_min(1e-5)
            if self.covariance == "spherical":
                variances = variances.mean(-1)
                keep = self.covariance_storage
                any_data = has_data.any(-1)
            else:
                keep = self.covariance_storage
                any_data = has_data
            variances = torch.where(any_data, variances, keep).clamp_min(floor)
            self.covariance_storage = variances.to(dtype)
            return
        total = stats["feature_weight"][:, 0]  # (K,): only whole rows can be missing here
        sums = stats["sum"]
        mean_outer = centred_means[:, :, None] * sums[:, None, :]
        scatter = (
            stats["sum_outer"]
            - mean_outer
            - mean_outer.transpose(-1, -2)
            + total[:, None, None] * centred_means[:, :, None] * centred_means[:, None, :]
        )
        # As hmmlearn's `covars_prior`, the prior is added to every entry of the scatter matrix.
        if self.covariance == "tied":
            if self.tied_groups is not None:
                d = self.n_features
                scatter = scatter.reshape(self.tied_groups, -1, d, d).sum(1)
                group_total = total.reshape(self.tied_groups, -1).sum(1)[:, None, None]
                covariance = (prior + scatter) / group_total.clamp_min(1e-5)
                covariance = torch.where(group_total > 0, covariance, self.covariance_storage)
            else:
                covariance = (prior + scatter.sum(0)) / total.sum().clamp_min(1e-5)
            self.covariance_storage = _floor_eigenvalues(covariance, floor)
            return
        covariances = (prior + scatter) / total.clamp_min(1e-5)[:, None, None]
        covariances = torch.where(total[:, None, None] > 0, covariances, self.covariance_storage)
        self.covariance_storage = _floor_eigenvalues(covariances, floor)

    def log_prior(self) -> torch.Tensor:
        """The prior the m-step maximises: -prior/2 tr(Sigma^-1) per component, up to a constant."""
        if self.covariance_prior == 0:
            return self.means.new_zeros(())
        if self.covariance in ("diag", "spherical"):
            return -0.5 * self.covariance_prior * (1.0 / self.variances()).sum()
        # tr(Psi Sigma^-1) with Psi = prior * ones: the prior times the sum of all entries.
        inverse_sum = torch.linalg.inv(self.covariance_storage).sum()
        return -0.5 * self.covariance_prior * inverse_sum

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        """k-means centres as means; the pooled data covariance for every component."""
        data = values.to(self.means)
        self.center = data.mean(0)
        centres, _ = kmeans(data, self.n_components, generator)
        self.means = centres
        variance = data.var(0, unbiased=False) if data.shape[0] > 1 else torch.ones_like(data[0])
        variance = variance + max(self.covariance_floor, 1e-3 * float(variance.mean()))
        variance = variance.clamp_min(max(self.covariance_floor, 1e-6))
        if self.covariance == "diag":
            self.covariance_storage = variance.expand(self.n_components, -1).clone()
        elif self.covariance == "spherical":
            self.covariance_storage = variance.mean().expand(self.n_components).clone()
        else:
            centred = data - data.mean(0)
            covariance = centred.t() @ centred / max(1, data.shape[0])
            covariance = covariance + torch.diag(
                torch.full_like(variance, max(self.covariance_floor, 1e-3 * float(variance.mean())))
            )
            covariance = _floor_eigenvalues(covariance, max(self.covariance_floor, 1e-6))
            if self.covariance == "full":
                covariance = covariance.expand(self.n_components, -1, -1).clone()
            elif self.tied_groups is not None:
                covariance = covariance.expand(self.tied_groups, -1, -1).clone()
            self.covariance_storage = covariance

    def sample(self, components: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One draw from each indexed component: (...,) long -> (..., D)."""
        noise = torch.randn(
            *components.shape,
            self.n_features,
            dtype=self.means.dtype,
            generator=generator,
            device=generator.device,
        ).to(self.means.device)
        if self.covariance in ("diag", "spherical"):
            return self.means[components] + noise * self.variances().sqrt()[components]
        cholesky = torch.linalg.cholesky(self.full_covariances())[components]
        return self.means[components] + (cholesky @ noise.unsqueeze(-1)).squeeze(-1)

    def n_covariance_parameters(self) -> int:
        d = self.n_features
        return {
            "diag": self.n_components * d,
            "spherical": self.n_components,
            "full": self.n_components * d * (d + 1) // 2,
            "tied": (self.tied_groups or 1) * d * (d + 1) // 2,
        }[self.covariance]


def _floor_eigenvalues(covariances: torch.Tensor, floor: float) -> torch.Tensor:
    """Raise the smallest eigenvalue to at least `floor` (adds a multiple of the identity).

    The bound is also at least 64 machine epsilons of the largest eigenvalue, so the matrix
    stays numerically positive definite: the prior added to every entry of the scatter (as in
    hmmlearn) gives a rank-one covariance to a state whose data are constant.
    """
    symmetric = 0.5 * (covariances + covariances.transpose(-1, -2))
    eigenvalues = torch.linalg.eigvalsh(symmetric)
    smallest = eigenvalues[..., 0]
    relative = 64 * torch.finfo(covariances.dtype).eps * eigenvalues[..., -1].abs()
    lift = (relative.clamp_min(floor) - smallest).clamp_min(0)
    eye = torch.eye(covariances.shape[-1], dtype=covariances.dtype, device=covariances.device)
    return symmetric + lift[..., None, None] * eye
