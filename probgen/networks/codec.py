"""Helpers shared by the discrete graphical models (`BayesianNetwork`, `MarkovNetwork`).

Both speak the Gibbs interface on long tensors of state indices (num_chains, n_variables) and
enumerate small joint spaces the same way.

Example:
    >>> from probgen.networks.codec import enumerate_assignments
    >>> enumerate_assignments([2, 3], max_size=16).tolist()
    [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from probgen.core.errors import DataError


def enumerate_assignments(
    cardinalities: Sequence[int], max_size: int, device: torch.device | str | None = None
) -> Tensor:
    """Every joint assignment of variables with these state counts, (K, n_variables), long.

    The last variable varies fastest.

    Raises:
        DataError: the joint space has more than `max_size` states.
    """
    size = math.prod(cardinalities)
    if size > max_size:
        raise DataError(
            f"the joint space has {size} states, more than max_size={max_size}; "
            "enumerate_support is for small networks"
        )
    grids = [torch.arange(c) for c in cardinalities]
    support = torch.cartesian_prod(*grids) if len(grids) > 1 else grids[0][:, None]
    return support.reshape(-1, len(cardinalities)).to(device)


def check_chain_state(state: Any, n_variables: int) -> None:
    """Raise `DataError` unless `state` is a tensor (num_chains, n_variables)."""
    if not isinstance(state, Tensor) or state.dim() != 2 or state.shape[1] != n_variables:
        raise DataError(
            f"state must be a long tensor (num_chains, {n_variables}), got "
            f"{getattr(state, 'shape', type(state).__name__)}"
        )


def clamp_chains(state: Tensor, clamp: Tensor, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """A long copy of chain states on `device` with the evidence set, and the observed mask.

    `clamp` holds one state index per variable, -1 where the variable is unobserved.
    """
    state = state.to(device, torch.long).clone()
    observed = clamp >= 0
    state[:, observed] = clamp[observed]
    return state, observed


def draw_states(logits: Tensor, generator: torch.Generator) -> Tensor:
    """One inverse-CDF draw per row from unnormalised log-probabilities (rows, n_states).

    A row where every state is impossible (a chain stuck in a zero-probability state) draws
    uniformly, so the chain can leave it.
    """
    stuck = torch.isinf(logits).all(dim=1, keepdim=True)
    logits = torch.where(stuck, torch.zeros_like(logits), logits)
    cumulative = torch.softmax(logits, dim=1).cumsum(dim=1)
    uniform = torch.rand(
        logits.shape[0], 1, generator=generator, device=logits.device, dtype=cumulative.dtype
    )
    return (uniform >= cumulative).sum(dim=1).clamp_max(logits.shape[1] - 1)
