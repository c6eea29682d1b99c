"""Sharded RBM and Boltzmann-machine training: each rank holds rows, every rank the same weights.

Under `torch.distributed` (`probgen.core.distributed`), `RBM.fit` and `BoltzmannMachine.fit`
take this rank's rows and make the updates a single process makes on all ranks' rows
(concatenated in rank order) with the same seed:

- every rank draws the same shuffle of all rows from the same generator, so a minibatch is the
  same set of global rows; each rank holds some of them (`RowShard.local_rows`);
- the data (positive) term of the gradient is a sum over the minibatch's rows: each rank sums
  its rows and one `all_reduce` adds the sums up, divided by the global batch size;
- PCD: the model (negative) term comes from persistent chains that do not depend on the data:
  every rank runs the same chains with the same generator, so no communication is needed for
  it. CD: the chains start at the batch's rows, so each rank runs those of its rows, drawing
  the noise of the whole batch and keeping its rows' (the generator stays in step), and the
  data-minus-model sums are added up;
- the starting biases (data base rates, means, variances) and the monitored figures are sums
  over the ranks too.

A seed is agreed on first (rank 0's when none is given), since the draws must be the same.

Example:
    >>> import torch
    >>> shard = RowShard(offset=4, n_local=3, total=10)
    >>> shard.local_rows(torch.tensor([9, 5, 0, 4, 6])).tolist()  # global rows 5, 4 and 6
    [1, 0, 2]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probgen.core.distributed import (
    all_reduce_sum,
    broadcast_object,
    is_distributed,
    shard_layout,
)

__all__ = ["RowShard", "agree_on_seed", "column_moments", "summed"]


@dataclass(frozen=True)
class RowShard:
    """Where this rank's rows sit among all ranks' rows (ranks in order)."""

    offset: int
    n_local: int
    total: int

    @classmethod
    def of(cls, n_local: int) -> RowShard | None:
        """This rank's shard of `n_local` rows; None in a single process."""
        if not is_distributed():
            return None
        offset, total = shard_layout(n_local)
        return cls(offset, n_local, total)

    def local_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The local indices of the global `rows` this rank holds, in the order given."""
        local = rows - self.offset
        return local[(local >= 0) & (local < self.n_local)]


def agree_on_seed(seed: int | None) -> int | None:
    """`seed`, or without one a seed drawn on rank 0: the ranks' chains must be the same."""
    if seed is not None or not is_distributed():
        return seed
    return int(broadcast_object(int(torch.randint(2**62, (1,)).item())))


def summed(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed over the ranks, in place (one collective per dtype)."""
    return all_reduce_sum(tensors)


def column_moments(x: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column means and (biased) variances of all ranks' rows; `x` is this rank's.

    Two passes (the mean first) keep the variance as accurate as a single process's.
    """
    mean = all_reduce_sum(x.sum(0)) / total
    variance = all_reduce_sum((x - mean).square().sum(0)) / total
    return mean, variance
