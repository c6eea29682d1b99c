"""Gaussian emissions (one Gaussian per state), with missing values allowed.

Example:
    >>> import torch
    >>> from probgen.hmm.emissions.gaussian import GaussianEmission
    >>> GaussianEmission(n_states=2, n_features=1).log_prob(torch.zeros(5, 1)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.hmm.emissions.base import (
    Emission,
)
from probgen.hmm.emissions.components import GaussianComponents, QuadraticFeatures
from probgen.hmm.layout import (
    scale_state_major,
    state_major_empty,
    states_by_steps_view,
)

_LOG2_E = 1.0 / math.log(2.0)


def _split_missing(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    observed = ~torch.isnan(values)
    return torch.where(observed, values, torch.zeros_like(values)), observed


def _split_missing_if_any(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Like `_split_missing`, with mask None (and no copy) when nothing is missing."""
    missing = torch.isnan(values)
    if not bool(missing.any()):
        return values, None
    return values.masked_fill(missing, 0.0), ~missing


class GaussianEmission(Emission):
    """Gaussian emissions, one mean and covariance per state; NaN entries are marginalised.

    Example:
        >>> emission = GaussianEmission(n_states=3, n_features=2, covariance="full")
        >>> emission.covariances.shape
        torch.Size([3, 2, 2])
    """

    family = "gaussian"
    allows_missing = True

    def __init__(
        self,
        n_states: int,
        n_features: int,
        covariance: str = "diag",
        covariance_prior: float = 1e-2,
        covariance_floor: float = 1e-6,
    ) -> None:
        super().__init__(n_states)
        self.n_features = n_features
        self.event_shape = torch.Size([n_features])
        self.components = GaussianComponents(
            n_states, n_features, covariance, covariance_prior, covariance_floor
        )

    @property
    def covariance(self) -> str:
        return self.components.covariance

    @property
    def means(self) -> torch.Tensor:
        """(n_states, n_features) state means."""
        return self.components.means

    @property
    def covariances(self) -> torch.Tensor:
        """(n_states, n_features, n_features) state covariance matrices."""
        return self.components.full_covariances()

    def check_missing(self, values: torch.Tensor, name: str) -> None:
        """Every pattern of missing entries is marginalised, so there is nothing to reject."""

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        batch = values.shape[:-1]
        filled, observed = _split_missing(values.reshape(-1, self.n_features))
        return self.components.log_prob(filled, observed).reshape(*batch, self.n_states)

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        filled, observed = _split_missing(values)
        return self.components.statistics(filled, observed, weights)

    def prepare(self, values_tm: torch.Tensor) -> Any:
        """Quadratic features (float64) for diag/spherical emissions, else the values."""
        if not self.components.uses_quadratic_features(values_tm.dtype, values_tm.device):
            return values_tm
        filled, observed = _split_missing_if_any(values_tm)
        return self.components.quadratic_features(filled, observed)

    def prepare_key(self) -> torch.Tensor | None:
        return self.components.center

    def state_outer(self, inputs: Any) -> bool:
        return isinstance(inputs, QuadraticFeatures)

    def scaled_probs(
        self, inputs: Any, mask_tm: torch.Tensor | None, *, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(inputs, QuadraticFeatures):
            return super().scaled_probs(inputs, mask_tm, out=out)
        # (K, F) x (F, T * B) -> (K, T * B): one matrix product writes the state-major layout
        # (stored state-outer) directly. The weights are scaled to give log2-densities, which
        # `scale_state_major` exponentiates with the faster exp2 at no extra pass.
        weights = self.components.quadratic_weights(inputs.complete) * _LOG2_E
        length, n_sequences, width = inputs.values.shape
        features = inputs.values.reshape(length * n_sequences, width)
        dtype = self.means.dtype if out is None else out.dtype
        if dtype != features.dtype:
            # float32 model, float64 features: the log-densities and their per-step shift are
            # taken in float64 (the shift cancels most of each value), and only the shifted
            # values, near zero for the likely states, are rounded to the model's dtype.
            shape = (length, self.n_states, n_sequences)
            wide = state_major_empty(shape, features)
            torch.mm(weights, features.t(), out=states_by_steps_view(wide))
            if out is None:
                out = state_major_empty(shape, self.means)
            probs, offsets = scale_state_major(wide, mask_tm, base_two=True, out=out)
            return probs, offsets.to(dtype)
        if out is None:
            out = state_major_empty((length, self.n_states, n_sequences), features)
        matrix = states_by_steps_view(out)
        if matrix is None:  # a caller's buffer stored otherwise
            out.copy_(
                torch.mm(weights, features.t()).reshape(out.shape[1], length, -1).transpose(0, 1)
            )
        else:
            torch.mm(weights, features.t(), out=matrix)
        return scale_state_major(out, mask_tm, base_two=True)

    def posterior_statistics(
        self, inputs: Any, posteriors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if not isinstance(inputs, QuadraticFeatures):
            return super().posterior_statistics(inputs, posteriors)
        return self.components.feature_statistics(inputs, posteriors)

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        self.components.m_step(statistics)

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        complete = values[~torch.isnan(values).any(-1)]
        if complete.shape[0] < self.n_states:
            raise DataError(
                f"sequences have {complete.shape[0]} complete observations; need at least "
                f"n_states={self.n_states} to initialise Gaussian emissions"
            )
        self.components.initialize(complete, generator)

    def log_prior(self) -> torch.Tensor:
        return self.components.log_prior()

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.components.sample(states, generator)

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        means = self.means if index is None else self.means[index]
        if self.covariance in ("diag", "spherical"):
            variances = self.components.variances()
            variances = variances if index is None else variances[index]
            return library.Independent(
                library.Normal(means, variances.sqrt(), validate_args=False), 1
            )
        covariances = self.covariances if index is None else self.covariances[index]
        return library.MultivariateNormal(means, covariance_matrix=covariances, validate_args=False)

    def n_parameters(self) -> int:
        return self.n_states * self.n_features + self.components.n_covariance_parameters()

    def config(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "covariance": self.covariance,
            "covariance_prior": self.components.covariance_prior,
            "covariance_floor": self.components.covariance_floor,
        }
