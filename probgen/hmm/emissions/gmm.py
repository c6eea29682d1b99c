"""Gaussian-mixture emissions: `n_mix` Gaussians per hidden state.

Example:
    >>> import torch
    >>> from probgen.hmm.emissions.gmm import GaussianMixtureEmission
    >>> emission = GaussianMixtureEmission(n_states=2, n_features=1, n_mix=3)
    >>> emission.log_prob(torch.zeros(5, 1)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.hmm.emissions.base import (
    Emission,
    _normalize,
    _uniform,
)
from probgen.hmm.emissions.components import GaussianComponents
from probgen.hmm.emissions.gaussian import _split_missing


class GaussianMixtureEmission(Emission):
    """A mixture of `n_mix` Gaussians per state; NaN entries are marginalised.

    With ``covariance="tied"`` the components of a state share one covariance matrix (as in
    hmmlearn's GMMHMM); ``covariance_prior`` is added to each scatter as for Gaussian emissions.

    Example:
        >>> emission = GaussianMixtureEmission(n_states=2, n_features=3, n_mix=4)
        >>> emission.means.shape, emission.weights.shape
        (torch.Size([2, 4, 3]), torch.Size([2, 4]))
    """

    family = "gmm"
    allows_missing = True

    def __init__(
        self,
        n_states: int,
        n_features: int,
        n_mix: int = 2,
        covariance: str = "diag",
        covariance_prior: float = 1e-2,
        covariance_floor: float = 1e-6,
        pseudocount: float = 0.0,
    ) -> None:
        super().__init__(n_states)
        self.n_features = n_features
        self.n_mix = n_mix
        self.pseudocount = float(pseudocount)
        self.event_shape = torch.Size([n_features])
        # "tied" ties the components of each state (hmmlearn's GMMHMM), not all states.
        self.components = GaussianComponents(
            n_states * n_mix,
            n_features,
            covariance,
            covariance_prior,
            covariance_floor,
            tied_groups=n_states if covariance == "tied" else None,
        )
        self.register_buffer("weights", torch.full((n_states, n_mix), 1.0 / n_mix))

    @property
    def covariance(self) -> str:
        return self.components.covariance

    @property
    def means(self) -> torch.Tensor:
        """(n_states, n_mix, n_features) component means."""
        return self.components.means.reshape(self.n_states, self.n_mix, self.n_features)

    @property
    def covariances(self) -> torch.Tensor:
        """(n_states, n_mix, n_features, n_features) component covariances."""
        return self.components.full_covariances().reshape(
            self.n_states, self.n_mix, self.n_features, self.n_features
        )

    def check_missing(self, values: torch.Tensor, name: str) -> None:
        """Every pattern of missing entries is marginalised, so there is nothing to reject."""

    def _component_log_probs(self, values: torch.Tensor) -> torch.Tensor:
        filled, observed = _split_missing(values)
        per_component = self.components.log_prob(filled, observed)
        return per_component.reshape(-1, self.n_states, self.n_mix) + self.weights.log()

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        batch = values.shape[:-1]
        joint = self._component_log_probs(values.reshape(-1, self.n_features))
        return torch.logsumexp(joint, -1).reshape(*batch, self.n_states)

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        joint = self._component_log_probs(values)
        within_state = torch.softmax(joint, -1)  # p(component | state, x)
        responsibilities = (weights.unsqueeze(-1) * within_state).reshape(values.shape[0], -1)
        filled, observed = _split_missing(values)
        stats = self.components.statistics(filled, observed, responsibilities)
        stats["mixture_counts"] = responsibilities.sum(0).reshape(self.n_states, self.n_mix)
        return stats

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        self.weights = _normalize(statistics["mixture_counts"] + self.pseudocount, self.weights)
        self.components.m_step(statistics)

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        complete = values[~torch.isnan(values).any(-1)]
        if complete.shape[0] < self.n_states * self.n_mix:
            raise DataError(
                f"sequences have {complete.shape[0]} complete observations; need at least "
                f"n_states * n_mix = {self.n_states * self.n_mix} for Gaussian mixture emissions"
            )
        self.components.initialize(complete, generator)
        self.weights = torch.full_like(self.weights, 1.0 / self.n_mix)

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cumulative = self.weights.cumsum(-1)[states]
        uniform = _uniform(states.shape, cumulative.dtype, generator).to(cumulative.device)
        mixture = torch.searchsorted(cumulative, uniform.unsqueeze(-1)).squeeze(-1)
        mixture = mixture.clamp_max(self.n_mix - 1)
        return self.components.sample(states * self.n_mix + mixture, generator)

    def log_prior(self) -> torch.Tensor:
        prior = self.components.log_prior()
        if self.pseudocount:
            prior = prior + self.pseudocount * self.weights.log().sum()
        return prior

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        means = self.means if index is None else self.means[index]
        weights = self.weights if index is None else self.weights[index]
        if self.covariance in ("diag", "spherical"):
            variances = self.components.variances().reshape(
                self.n_states, self.n_mix, self.n_features
            )
            variances = variances if index is None else variances[index]
            components = library.Independent(
                library.Normal(means, variances.sqrt(), validate_args=False), 1
            )
        else:
            covariances = self.covariances if index is None else self.covariances[index]
            components = library.MultivariateNormal(
                means, covariance_matrix=covariances, validate_args=False
            )
        return library.MixtureSameFamily(
            library.Categorical(probs=weights, validate_args=False),
            components,
            validate_args=False,
        )

    def n_parameters(self) -> int:
        return (
            self.n_states * (self.n_mix - 1)
            + self.n_states * self.n_mix * self.n_features
            + self.components.n_covariance_parameters()
        )

    def config(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "n_mix": self.n_mix,
            "covariance": self.covariance,
            "covariance_prior": self.components.covariance_prior,
            "covariance_floor": self.components.covariance_floor,
        }
