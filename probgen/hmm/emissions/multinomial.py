"""Multinomial emissions: a vector of counts over `n_features` categories per step.

Each step's counts come from n draws of one categorical distribution per state (hmmlearn's
`MultinomialHMM` since 0.3): log p(x | k) = log n! - sum_i log x_i! + sum_i x_i log p_ki with
n = sum_i x_i, so steps may have different totals; `n_trials` fixes the total for sampling.

Example:
    >>> import torch
    >>> from probgen.hmm.emissions.multinomial import MultinomialEmission
    >>> emission = MultinomialEmission(n_states=2, n_features=3, n_trials=4)
    >>> emission.log_prob(torch.tensor([[4.0, 0.0, 0.0]])).exp()
    tensor([[0.0123, 0.0123]])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.hmm.emissions.base import Emission, _normalize


class MultinomialEmission(Emission):
    """Counts over `n_features` categories, one probability vector per state.

    Example:
        >>> MultinomialEmission(n_states=2, n_features=3).probs.shape
        torch.Size([2, 3])
    """

    family = "multinomial"
    discrete = True

    def __init__(
        self,
        n_states: int,
        n_features: int,
        n_trials: int | None = None,
        pseudocount: float = 0.0,
    ) -> None:
        super().__init__(n_states)
        self.n_features = n_features
        self.n_trials = n_trials
        self.pseudocount = float(pseudocount)
        self.event_shape = torch.Size([n_features])
        self.register_buffer("probs", torch.full((n_states, n_features), 1.0 / n_features))

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        counts = values.to(self.probs.dtype)
        constant = torch.lgamma(counts.sum(-1, keepdim=True) + 1) - torch.lgamma(counts + 1).sum(
            -1, keepdim=True
        )
        # x log p with 0 log 0 = 0, so categories a state never emits cost nothing when unseen.
        log_probs = self.probs.log()
        terms = counts @ torch.where(self.probs > 0, log_probs, 0.0).t()
        impossible = (counts > 0).to(counts.dtype) @ (self.probs == 0).to(counts.dtype).t()
        return (terms + constant).masked_fill(impossible > 0, float("-inf"))

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"counts": weights.t() @ values.to(weights.dtype)}

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        self.probs = _normalize(statistics["counts"] + self.pseudocount, self.probs)

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        totals = values.to(self.probs.dtype).sum(0) + 1.0
        noise = torch.rand(
            self.n_states, self.n_features, generator=generator, device=generator.device
        ).to(self.probs)
        self.probs = _normalize(totals * (0.25 + noise), self.probs)

    def log_prior(self) -> torch.Tensor:
        if self.pseudocount == 0:
            return super().log_prior()
        return self.pseudocount * self.probs.log().sum()

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        if self.n_trials is None:
            raise DataError("multinomial emissions need n_trials to sample or build a distribution")
        probs = self.probs if index is None else self.probs[index]
        return library.Multinomial(self.n_trials, probs=probs, validate_args=False)

    def n_parameters(self) -> int:
        return self.n_states * (self.n_features - 1)

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "n_trials": self.n_trials}
