"""Gibbs sampling vectorised over chains.

- `EnumerationKernel`: for each discrete coordinate in turn, evaluates the log density at every
  value of that coordinate for all chains in one batched call (values x chains) and draws the
  coordinate from its exact full conditional.
- `run_model_gibbs`: drives a model's own `gibbs_step(state, *, generator, evidence)` from
  `initial_state(num_chains, *, generator, evidence)` (Bayesian networks with evidence,
  Markov networks, Boltzmann machines and mixtures provide these).

Continuous coordinates of a mixed target are updated between discrete sweeps by MH (see
`probgen.samplers.mh`) or by NUTS (see `probgen.samplers.nuts.ConditionalNUTS`).

Example:
    >>> import torch
    >>> weights = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).log()
    >>> log_density = lambda z: weights[z[:, 0].long()]
    >>> kernel = EnumerationKernel(torch.tensor([0]), torch.tensor([3]), torch.tensor([0]))
    >>> z = torch.zeros(4000, 1, dtype=torch.float64)
    >>> z, lp = kernel.sweep(z, log_density(z), log_density, torch.Generator().manual_seed(0))
    >>> [round(v / 4000, 1) for v in torch.bincount(z[:, 0].long()).tolist()]
    [0.2, 0.3, 0.5]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.samplers.recording import kept_sweeps

LogDensity = Callable[[torch.Tensor], torch.Tensor]


def sample_categorical(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of `logits` (rows, values) by inverting the cumulative distribution."""
    probs = torch.softmax(logits, dim=-1)
    cumulative = probs.cumsum(-1)
    uniform = (
        torch.rand(
            logits.shape[:-1] + (1,), generator=generator, dtype=probs.dtype, device=probs.device
        )
        * cumulative[..., -1:]
    )
    index = (cumulative < uniform).sum(-1)
    return index.clamp(max=logits.shape[-1] - 1)


class EnumerationKernel:
    """Exact coordinate-wise Gibbs updates of discrete coordinates.

    Args:
        index: long tensor of the discrete coordinates.
        cardinality: number of values of each.
        low: smallest value of each.
    """

    def __init__(self, index: torch.Tensor, cardinality: torch.Tensor, low: torch.Tensor) -> None:
        self.index = index
        self.cardinality = cardinality
        self.low = low

    def sweep(
        self,
        z: torch.Tensor,
        log_prob: torch.Tensor,
        log_density: LogDensity,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update every discrete coordinate once, in order; returns (z, log density)."""
        num_chains = z.shape[0]
        chains = torch.arange(num_chains, device=z.device)
        for position in range(self.index.numel()):
            coordinate = int(self.index[position])
            count = int(self.cardinality[position])
            low = int(self.low[position])
            candidates = z.unsqueeze(0).repeat(count, 1, 1)
            values = torch.arange(low, low + count, dtype=z.dtype, device=z.device)
            candidates[:, :, coordinate] = values[:, None]
            candidate_lp = log_density(candidates.reshape(count * num_chains, -1)).reshape(
                count, num_chains
            )
            if torch.isneginf(candidate_lp).all(0).any():
                chain = int(torch.isneginf(candidate_lp).all(0).nonzero()[0])
                raise DataError(
                    f"every value of coordinate {coordinate} has zero density in chain {chain}; "
                    "the state left the support"
                )
            choice = sample_categorical(candidate_lp.T, generator)
            z = candidates[choice, chains]
            log_prob = candidate_lp[choice, chains]
        return z, log_prob


def run_model_gibbs(
    model: Any,
    *,
    num_chains: int,
    num_samples: int,
    warmup: int,
    generator: torch.Generator,
    evidence: Any = None,
    initial: Any = None,
    thin: int = 1,
    on_draw: Callable[[int, Any], None],
    progress: Any = None,
) -> Any:
    """Run `model.gibbs_step` for warmup + num_samples * thin sweeps, calling `on_draw`.

    Args:
        model: has `gibbs_step(state, *, generator=None, evidence=None)` and
            `initial_state(num_chains, *, generator=None, evidence=None)`.
        initial: a starting state instead of `initial_state`.
        on_draw: called as on_draw(draw_index, state) after each kept sweep.
        progress: a tqdm bar (or None) advanced once per sweep.

    Returns:
        The final state.
    """
    if initial is not None:
        state = initial
    elif hasattr(model, "initial_state"):
        state = model.initial_state(num_chains, generator=generator, evidence=evidence)
    else:
        raise DataError(
            f"{type(model).__name__} has gibbs_step but no initial_state; pass initial="
        )
    for _, draw in kept_sweeps(warmup, num_samples, thin, progress):
        state = model.gibbs_step(state, generator=generator, evidence=evidence)
        if draw is not None:
            on_draw(draw, state)
    return state
