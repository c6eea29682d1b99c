"""Exact inference in a two-slice dynamic Bayesian network by the interface algorithm.

A discrete DBN is an HMM over its slice's joint assignments (S of them). The forward message
need not range over all of them: only the interface, the variables with a child in the next
slice, carries information forward (Murphy, 2002, *Dynamic Bayesian Networks*, sec. 3.4). With
S_I interface assignments the prior slice gives the start distribution (S,), the transition
slice the matrix (S_I, S) of P(slice t | interface at t-1), and `projection` maps each slice
assignment to its interface assignment; evidence at each step is a 0/1 mask over the slice
assignments that agree with what was observed. These functions are the pure batched tensor side
of `DynamicBayesianNetwork`: building the tables from the conditional tables (`family_index`,
`joint_log_table`), a scaled forward-backward pass over ragged batches (`forward_backward`),
and the expected counts EM needs (`expected_counts`). Everything is float64; the cost is
O(T * S_I * S) per sequence, for networks whose slice has up to a few thousand joint states.

Example:
    >>> import torch
    >>> start = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> transition = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
    >>> masks = torch.ones(1, 3, 2, dtype=torch.float64)  # nothing observed
    >>> projection = torch.arange(2)  # every variable is in the interface
    >>> result = forward_backward(start, transition, projection, masks, torch.tensor([3]))
    >>> round(float(result.log_likelihood[0]), 12)
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ForwardBackward",
    "evidence_masks",
    "expected_counts",
    "family_index",
    "forward_backward",
    "joint_log_table",
]


def family_index(
    table_shape: Sequence[int], columns: Sequence[Tensor]
) -> Tensor:
    """Flat index into a table of `table_shape` for index tensors of its axes.

    Args:
        table_shape: the table's shape (*parent_cardinalities, n_states).
        columns: one integer tensor per axis, all broadcastable to a common shape.

    Returns:
        A long tensor of the broadcast shape: the row-major flat position of each entry.
    """
    index: Tensor | None = None
    for size, column in zip(table_shape, columns):
        index = column.long() if index is None else index * size + column.long()
    assert index is not None
    return index


def joint_log_table(
    tables: Sequence[Tensor], columns: Sequence[Sequence[Tensor]]
) -> Tensor:
    """Sum over variables of log table entries at each joint configuration.

    Args:
        tables: each variable's conditional table.
        columns: for each variable, one index tensor per table axis (broadcastable).

    Returns:
        float64 tensor of the broadcast shape: the log of the product of the entries.
    """
    total: Tensor | None = None
    for table, axes in zip(tables, columns):
        term = torch.log(table.reshape(-1))[family_index(table.shape, axes)]
        total = term if total is None else total + term
    assert total is not None
    return total


def evidence_masks(codes: Tensor, assignments: Tensor) -> Tensor:
    """Which joint assignments agree with each step's observations.

    Args:
        codes: long tensor (*batch, n_variables) of observed states, -1 where unobserved.
        assignments: long tensor (S, n_variables), every joint assignment of a slice.

    Returns:
        float64 tensor (*batch, S): 1 where the assignment agrees with every observed value.
    """
    agree = (codes[..., None, :] < 0) | (codes[..., None, :] == assignments)
    return agree.all(dim=-1).to(torch.float64)


@dataclass
class ForwardBackward:
    """Result of `forward_backward` on a batch of B sequences padded to length T.

    Attributes:
        log_likelihood: (B,) log P(evidence) of each sequence.
        filtered: (B, T, S) P(slice state at t | evidence up to t); padding repeats the last.
        smoothed: (B, T, S) P(slice state at t | all evidence) (None when not asked for).
        scales: (B, T) the normalisers P(evidence at t | evidence before t) (1 on padding).
        backward: (B, T, S_I) scaled backward messages over the interface (None when not
            asked for).
    """

    log_likelihood: Tensor
    filtered: Tensor
    smoothed: Tensor | None
    scales: Tensor
    backward: Tensor | None


def forward_backward(
    start: Tensor,
    transition: Tensor,
    projection: Tensor,
    masks: Tensor,
    lengths: Tensor,
    *,
    smooth: bool = True,
) -> ForwardBackward:
    """Scaled forward(-backward) recursions over the interface, with 0/1 evidence likelihoods.

    Args:
        start: (S,) distribution of the first slice.
        transition: (S_I, S) P(slice at t | interface at t-1).
        projection: (S,) long, the interface assignment of each slice assignment.
        masks: (B, T, S) evidence likelihood of each slice assignment at each step.
        lengths: (B,) number of real steps of each sequence.
        smooth: also run the backward pass (smoothed marginals).

    Returns:
        A `ForwardBackward`. A sequence whose evidence is impossible gets log-likelihood -inf
        and all-zero marginals (no NaN).
    """
    batch, steps, size = masks.shape
    interface_size = transition.shape[0]
    lengths = lengths.to(masks.device)
    tiny = torch.finfo(torch.float64).tiny
    filtered = torch.empty_like(masks)
    scales = torch.ones(batch, steps, dtype=torch.float64, device=masks.device)
    full = start[None, :] * masks[:, 0]
    for t in range(steps):
        if t > 0:
            interface = _project(full, projection, interface_size)
            proposal = (interface @ transition) * masks[:, t]
            full = torch.where((t < lengths)[:, None], proposal, full)
        total = full.sum(dim=1, keepdim=True)
        if t > 0:
            total = torch.where((t < lengths)[:, None], total, torch.ones_like(total))
        scales[:, t] = total[:, 0]
        full = full / total.clamp_min(tiny)
        filtered[:, t] = full
    log_likelihood = torch.log(scales).sum(dim=1)
    if not smooth:
        return ForwardBackward(log_likelihood, filtered, None, scales, None)
    backward = torch.ones(batch, steps, interface_size, dtype=torch.float64, device=masks.device)
    beta = backward[:, -1].clone()
    for t in range(steps - 2, -1, -1):
        message = (masks[:, t + 1] * beta[:, projection]) @ transition.T
        message = message / scales[:, t + 1, None].clamp_min(tiny)
        beta = torch.where((t + 1 < lengths)[:, None], message, torch.ones_like(message))
        backward[:, t] = beta
    smoothed = filtered * backward[:, :, projection]
    return ForwardBackward(log_likelihood, filtered, smoothed, scales, backward)


def _project(full: Tensor, projection: Tensor, interface_size: int) -> Tensor:
    """Sum a (..., S) message over the slice assignments of each interface assignment."""
    if interface_size == full.shape[-1] and bool(
        (projection == torch.arange(interface_size, device=projection.device)).all()
    ):
        return full
    result = torch.zeros(*full.shape[:-1], interface_size, dtype=full.dtype, device=full.device)
    return result.index_add_(full.dim() - 1, projection, full)


def expected_counts(
    result: ForwardBackward,
    transition: Tensor,
    projection: Tensor,
    masks: Tensor,
    lengths: Tensor,
) -> tuple[Tensor, Tensor]:
    """Expected start and transition counts summed over the batch.

    Args:
        result: `forward_backward(..., smooth=True)` of the batch.
        transition: (S_I, S) the transition matrix used for it.
        projection: (S,) the projection used for it.
        masks: (B, T, S) the evidence likelihoods used for it.
        lengths: (B,) real lengths.

    Returns:
        (start_counts (S,), pair_counts (S_I, S)): sums over sequences of P(slice at 0 |
        evidence) and, over t >= 1, of P(interface at t-1 = i, slice at t = j | evidence).
        Sequences of probability zero contribute nothing.
    """
    assert result.smoothed is not None and result.backward is not None
    possible = torch.isfinite(result.log_likelihood)
    start_counts = result.smoothed[possible, 0].sum(dim=0)
    steps = masks.shape[1]
    if steps < 2:
        return start_counts, torch.zeros_like(transition)
    steps_after_first = torch.arange(1, steps, device=masks.device)
    live = steps_after_first[None, :] < lengths[:, None].to(masks.device)
    live = live & possible[:, None]
    # xi_t(i, j) = alpha_{t-1}(i) A(i, j) m_t(j) beta_t(proj(j)) / c_t; the sum over (b, t) of
    # the outer products is one matrix product, times A elementwise
    interface_size, size = transition.shape
    previous = _project(result.filtered[:, :-1] * live[..., None], projection, interface_size)
    weights = masks[:, 1:] * result.backward[:, 1:][..., projection] / result.scales[
        :, 1:, None
    ].clamp_min(torch.finfo(torch.float64).tiny)
    outer = previous.reshape(-1, interface_size).T @ weights.reshape(-1, size)
    return start_counts, outer * transition
