"""Chains split over the ranks of a `torch.distributed` run, drawing the single-process draws.

`sample_chains` under `torchrun` (`probgen.core.distributed.is_distributed()`) splits its
chains into contiguous blocks, one per rank (`shard_indices`), and gathers every chain's draws
into one `Samples` on rank 0 (R-hat and ESS over all chains); the other ranks get None. The
draws equal the single-process run with the same seed (up to the rounding of the target on a
smaller batch) because nothing random depends on the rank:

- MH and Gibbs (`shard_target`): every rank keeps the state of *all* chains and runs the
  sampler's whole bookkeeping on it: the noise of every chain is drawn from the run's one
  generator as in one process, and the acceptance tests, step-size and covariance adaptation,
  pooled history of the "mixed" Student-t proposal and straggler restarts see all chains. Only
  the target, the costly part, is split: a batch of rows is evaluated on each rank's block of
  rows and the log densities are gathered (`all_gather_rows`, one small collective per
  call). So the pooled adaptation needs no reduce hook: its statistics are computed from
  identical full tensors on every rank, bit for bit the single-process ones. The price is
  one collective per target call and the (cheap) proposal arithmetic for all chains on every
  rank; drawing per-chain generators instead would change today's single-process draws and
  cost a Python loop over chains per random number.
- NUTS / HMC (`gather_recorded`): Pyro's kernels are one per chain, seeded ``seed + chain``
  with their own generator state, so each rank runs only its block (with the chains' global
  indices as seeds) and the draws are gathered at the end. Gibbs with ``continuous="nuts"``
  runs the NUTS part this way and the discrete sweeps as MH and Gibbs above.

Example:
    >>> import torch
    >>> split = ChainSplit(num_chains=5, rank=1, world=2)
    >>> split.rows, split.distributed
    (range(3, 5), True)
    >>> split.local(torch.arange(5))
    tensor([3, 4])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from probgen.core.distributed import (
    all_gather_rows,
    gather_to_rank0,
    rank,
    shard_indices,
    world_size,
)
from probgen.core.errors import DataError
from probgen.samplers.recording import DrawRecorder
from probgen.samplers.targets import FlatTarget

__all__ = ["ChainSplit", "DiscardedDraws", "gather_recorded"]


@dataclasses.dataclass(frozen=True)
class ChainSplit:
    """Which block of a run's `num_chains` chains this rank (`rank` of `world`) runs."""

    num_chains: int
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls, num_chains: int) -> ChainSplit:
        """The split of this process (`probgen.core.distributed.rank` / `world_size`)."""
        return cls(num_chains, rank(), world_size())

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def rows(self) -> range:
        """This rank's chains: a contiguous block (the first ranks hold one more)."""
        return shard_indices(self.num_chains, self.rank, self.world)

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor with one row per chain."""
        return tensor[self.rows.start : self.rows.stop]

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every chain's rows, in chain order, on every rank, from each rank's `local` rows."""
        if not self.distributed:
            return tensor
        sizes = [len(shard_indices(self.num_chains, r, self.world)) for r in range(self.world)]
        return all_gather_rows(tensor.contiguous(), sizes)

    def split_rows(self, function: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
        """`function` of a batch of rows, each rank evaluating its block of the rows.

        `function` maps (rows, ...) to a tensor with one row per input row, or to a tuple of
        such tensors (e.g. log densities and their gradients: autograd runs inside `function`
        on each rank's rows). Every rank must call the result with the same number of rows at
        the same time (the replicated sampler loop does); the values are gathered, so no
        gradient flows back through the result.

        Example:
            >>> ChainSplit(3).split_rows(lambda rows: rows.sum(-1))(torch.ones(3, 2))
            tensor([2., 2., 2.])
        """
        if not self.distributed:
            return function

        def split_function(rows: torch.Tensor) -> Any:
            count = rows.shape[0]
            mine = shard_indices(count, self.rank, self.world)
            values = function(rows[mine.start : mine.stop])
            parts = values if isinstance(values, tuple) else (values,)
            if not all(isinstance(v, torch.Tensor) and v.shape[:1] == (len(mine),) for v in parts):
                return values  # FlatTarget.log_density names the problem
            sizes = [len(shard_indices(count, r, self.world)) for r in range(self.world)]
            gathered = tuple(all_gather_rows(v.detach().contiguous(), sizes) for v in parts)
            return gathered if isinstance(values, tuple) else gathered[0]

        return split_function

    def shard_target(self, target: FlatTarget, *, differentiable: bool = False) -> FlatTarget:
        """The target whose log density splits each batch of rows over the ranks.

        With `differentiable`, each rank also differentiates its rows and the gradients are
        gathered with the values, so autograd through the log density works as in one process
        (``d sum(w * lp) / dz`` is ``w[:, None] * gradient``: rows are independent); every
        call then pays for a gradient.
        """
        if not self.distributed:
            return target
        function = target.log_density_fn
        if differentiable:
            split = self

            def log_density(rows: torch.Tensor) -> torch.Tensor:
                return _GatheredLogDensity.apply(rows, function, split)

            return dataclasses.replace(target, log_density_fn=log_density)
        return dataclasses.replace(target, log_density_fn=self.split_rows(function))


class _GatheredLogDensity(torch.autograd.Function):
    """Log densities of all rows, each rank evaluating and differentiating its block."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, rows: torch.Tensor, function: Callable[..., Any], split: ChainSplit
    ) -> torch.Tensor:
        def value_and_grad(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.enable_grad():
                leaf = part.detach().requires_grad_(True)
                values = function(leaf)
                if not isinstance(values, torch.Tensor) or values.shape != part.shape[:1]:
                    shape = tuple(values.shape) if isinstance(values, torch.Tensor) else values
                    raise DataError(
                        f"the target's log density returned {shape} for {part.shape[0]} "
                        f"points; it must return one value per point, shape ({part.shape[0]},)"
                    )
                # -inf or NaN rows would poison the sum's backward; they get no gradient.
                kept = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
                (gradient,) = torch.autograd.grad(kept.sum(), leaf, allow_unused=True)
            if gradient is None:
                gradient = torch.zeros_like(leaf)
            return values.detach(), gradient

        values, gradient = split.split_rows(value_and_grad)(rows)
        ctx.save_for_backward(gradient)
        return values

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (gradient,) = ctx.saved_tensors
        return upstream.unsqueeze(-1) * gradient, None, None


class DiscardedDraws(DrawRecorder):
    """The recorder of ranks other than 0: keeps the run's settings, stores no draw."""

    def __init__(self, target: FlatTarget, num_chains: int, num_samples: int) -> None:
        self.target = target
        self.num_chains = num_chains
        self.num_samples = num_samples
        self.stats = {}
        self.filled = np.zeros(0, dtype=np.int64)
        self.attrs = {}
        self.checkpoint = None
        self.flush_every = num_samples
        self._last_flush = 0

    def record(self, draw: int, z: torch.Tensor, **stats: Any) -> None:
        """Nothing: rank 0 keeps the draws."""

    def record_chain(self, chain: int, draw: int, z: torch.Tensor, **stats: Any) -> None:
        """Nothing: rank 0 keeps the draws."""

    def flush(self) -> None:
        """Nothing: rank 0 writes the checkpoint."""


def gather_recorded(local: DrawRecorder, into: DrawRecorder, stat_names: tuple[str, ...]) -> None:
    """Copy every rank's `local` draws (its block of chains) into rank 0's recorder `into`.

    Args:
        local: this rank's draws, its chains in order.
        into: rank 0's recorder of all chains (ignored on the other ranks).
        stat_names: the statistics every rank recorded.
    """
    parts = gather_to_rank0(local.z)
    stats = {name: gather_to_rank0(torch.from_numpy(local.stats[name])) for name in stat_names}
    filled = gather_to_rank0(torch.from_numpy(local.filled))
    if parts is None:
        return
    into.z[:] = torch.cat(parts)
    for name in stat_names:
        into.stats[name][:] = torch.cat(stats[name]).numpy()  # type: ignore[arg-type]
    into.filled[:] = torch.cat(filled).numpy()  # type: ignore[arg-type]
