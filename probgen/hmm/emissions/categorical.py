"""Categorical emissions: one probability table over symbols per hidden state.

Example:
    >>> import torch
    >>> from probgen.hmm.emissions.categorical import CategoricalEmission
    >>> CategoricalEmission(n_states=2, n_symbols=3).log_prob(torch.tensor([0, 2])).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.hmm.emissions.base import (
    Emission,
    _normalize,
    _uniform,
)
from probgen.hmm.layout import (
    neutral_padding,
)


class CategoricalEmission(Emission):
    """Categorical emissions over `n_symbols` symbols, with Dirichlet pseudocounts.

    A missing symbol is the code -1 (`HMM` turns NaN in float input into -1): it has
    probability one in every state, so it is marginalised, and adds nothing to the counts.

    Example:
        >>> emission = CategoricalEmission(n_states=2, n_symbols=3)
        >>> emission.log_prob(torch.tensor([0, 2])).exp()
        tensor([[0.3333, 0.3333],
                [0.3333, 0.3333]])
    """

    family = "categorical"
    discrete = True
    allows_missing = True

    def __init__(self, n_states: int, n_symbols: int, pseudocount: float = 0.0) -> None:
        super().__init__(n_states)
        self.n_symbols = n_symbols
        self.pseudocount = float(pseudocount)
        self.register_buffer("probs", torch.full((n_states, n_symbols), 1.0 / n_symbols))

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        codes = values.long()
        missing = codes < 0
        log_probs = self.probs.log().t()[codes.clamp_min(0)]
        return log_probs.masked_fill_(missing.unsqueeze(-1), 0.0) if missing.any() else log_probs

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        codes = values.long()
        missing = codes < 0
        if missing.any():
            codes = codes.clamp_min(0)
            weights = weights.masked_fill(missing.unsqueeze(-1), 0.0)
        counts = weights.new_zeros(self.n_symbols, self.n_states)
        counts.index_add_(0, codes, weights)
        return {"symbol_counts": counts.t()}

    def prepare(self, values_tm: torch.Tensor) -> torch.Tensor:
        return values_tm.long()

    def scaled_probs(
        self, inputs: torch.Tensor, mask_tm: torch.Tensor | None, *, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A gather from the probability table scaled per symbol.

        A step's scale (its largest probability over states) depends only on its symbol, so
        scaling the (n_states, n_symbols) table once replaces the log, max and exp over every
        step; the gather writes the state-major layout directly.
        """
        max_length, n_sequences = inputs.shape
        missing = inputs < 0
        if missing.any():
            inputs = inputs.clamp_min(0)
            observed = ~missing if mask_tm is None else mask_tm & ~missing
            emission_probs, log_offsets = self.scaled_probs(inputs, None, out=out)
            neutral_padding(emission_probs, log_offsets, observed)  # missing: probability one
            return emission_probs, log_offsets
        peak = self.probs.amax(0)  # (n_symbols,); zero for a symbol no state emits
        scaled_table = self.probs / torch.where(peak > 0, peak, torch.ones_like(peak))
        table = scaled_table.expand(max_length, self.n_states, self.n_symbols)
        index = inputs.unsqueeze(1).expand(max_length, self.n_states, n_sequences)
        emission_probs = torch.gather(table, 2, index, out=out)
        log_offsets = peak.log()[inputs]  # -inf marks an impossible step
        if mask_tm is not None:
            neutral_padding(emission_probs, log_offsets, mask_tm)
        return emission_probs, log_offsets

    def posterior_statistics(
        self, inputs: torch.Tensor, posteriors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Symbol counts by one scatter-add of the posteriors, in their layout."""
        max_length, n_states, n_sequences = posteriors.shape
        missing = inputs < 0
        if missing.any():
            inputs = inputs.clamp_min(0)
            posteriors = posteriors.masked_fill(missing.unsqueeze(1), 0.0)
        if self.n_symbols > n_sequences:
            # The (T, n_states, n_symbols) scratch would outgrow the posteriors themselves.
            return super().posterior_statistics(inputs, posteriors)
        counts = posteriors.new_zeros(max_length, n_states, self.n_symbols)
        index = inputs.unsqueeze(1).expand(max_length, n_states, n_sequences)
        counts.scatter_add_(2, index, posteriors)
        return {"symbol_counts": counts.sum(0)}

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        counts = statistics["symbol_counts"] + self.pseudocount
        self.probs = _normalize(counts, self.probs)

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        codes = values.long().reshape(-1)
        frequencies = torch.bincount(codes[codes >= 0], minlength=self.n_symbols)
        frequencies = frequencies.to(self.probs) + 1.0
        noise = torch.rand(
            self.n_states, self.n_symbols, generator=generator, device=generator.device
        ).to(self.probs)
        self.probs = _normalize(frequencies * (0.25 + noise), self.probs)

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cumulative = self.probs.cumsum(-1)[states]
        uniform = _uniform(states.shape, cumulative.dtype, generator).to(cumulative.device)
        draws = torch.searchsorted(cumulative, uniform.unsqueeze(-1)).squeeze(-1)
        return draws.clamp_max(self.n_symbols - 1)

    def log_prior(self) -> torch.Tensor:
        if self.pseudocount == 0:
            return super().log_prior()
        return self.pseudocount * self.probs.log().sum()

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        probs = self.probs if index is None else self.probs[index]
        return library.Categorical(probs=probs, validate_args=False)

    def n_parameters(self) -> int:
        return self.n_states * (self.n_symbols - 1)

    def config(self) -> dict[str, Any]:
        return {"n_symbols": self.n_symbols}
