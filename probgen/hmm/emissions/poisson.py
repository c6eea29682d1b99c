"""Poisson emissions: independent Poisson counts per feature, one rate vector per state.

Example:
    >>> import torch
    >>> from probgen.hmm.emissions.poisson import PoissonEmission
    >>> PoissonEmission(n_states=2, n_features=3).log_prob(torch.zeros(4, 3)).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.kmeans import kmeans
from probgen.hmm.emissions.base import (
    Emission,
)

_RATE_FLOOR = 1e-8


class PoissonEmission(Emission):
    """Independent Poisson counts per feature, one rate vector per state.

    A missing count (NaN) has probability one and is left out of its feature's statistics:
    the ``weight`` statistic is per state and feature, (n_states, n_features).

    Example:
        >>> emission = PoissonEmission(n_states=2, n_features=1)
        >>> emission.log_prob(torch.tensor([[0.0]])).exp()
        tensor([[0.3679, 0.3679]])
    """

    family = "poisson"
    discrete = True
    allows_missing = True

    def __init__(self, n_states: int, n_features: int = 1) -> None:
        super().__init__(n_states)
        self.n_features = n_features
        self.event_shape = torch.Size([n_features])
        self.register_buffer("rates", torch.ones(n_states, n_features))

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        rates = self.rates.clamp_min(_RATE_FLOOR)
        values = values.to(rates.dtype)
        missing = torch.isnan(values)
        if missing.any():
            values = values.masked_fill(missing, 0.0)
            mean_terms = (~missing).to(rates.dtype) @ rates.t()  # only observed counts
        else:
            mean_terms = rates.sum(-1)
        constant = torch.lgamma(values + 1).sum(-1, keepdim=True)
        return values @ rates.log().t() - mean_terms - constant

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        values = values.to(weights.dtype)
        observed = ~torch.isnan(values)
        return {
            "weight": weights.t() @ observed.to(weights.dtype),
            "sum": weights.t() @ values.masked_fill(~observed, 0.0),
        }

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        weight = statistics["weight"]
        if weight.dim() == 1:  # statistics of a release before per-feature weights
            weight = weight[:, None]
        rates = statistics["sum"] / weight.clamp_min(1e-300)
        self.rates = torch.where(weight > 0, rates, self.rates).clamp_min(_RATE_FLOOR)

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        data = values.to(self.rates.dtype)
        missing = torch.isnan(data)
        if missing.any():
            # k-means needs whole rows: missing counts take their feature's observed mean.
            means = data.nan_to_num(0.0).sum(0) / (~missing).sum(0).clamp_min(1)
            data = torch.where(missing, means, data)
        centres, _ = kmeans(data, self.n_states, generator)
        self.rates = (centres + 0.1 * data.mean(0).clamp_min(_RATE_FLOOR)).clamp_min(_RATE_FLOOR)

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rates = self.rates.clamp_min(_RATE_FLOOR)[states]
        return torch.poisson(rates.to(generator.device), generator=generator).to(rates.device)

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        rates = self.rates if index is None else self.rates[index]
        return library.Independent(
            library.Poisson(rates.clamp_min(_RATE_FLOOR), validate_args=False), 1
        )

    def n_parameters(self) -> int:
        return self.n_states * self.n_features

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features}
