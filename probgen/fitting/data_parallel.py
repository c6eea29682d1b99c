"""Data-parallel gradient steps for the shared loop under `torch.distributed`.

When `fit_model` runs in a process group of more than one rank (`torchrun`, or
`probgen.distributed.spawn_local`), each rank passes its own shard of the training data and the
loop trains one model on all shards together, as `DistributedDataParallel` does: the ranks
start from rank 0's parameters and buffers, take every step on the same global minibatch (each
its own rows of it), sum their gradients with one `all_reduce` per step, and apply the same
update, so all ranks hold identical parameters throughout.

Why not wrap the model in `torch.nn.parallel.DistributedDataParallel` itself: DDP hooks the
gradient reduction onto the wrapper's ``forward``, and probgen's losses call model methods
(``log_prob``, a Pyro ELBO, a GAN's two steps), not ``forward``. The loop therefore performs the
same reduction explicitly, which also covers multi-step (adversarial) fits and Pyro programs.

The global minibatches are those of a single-process fit on the concatenated shards (rank 0's
rows first, then rank 1's, ...) with the same seed: a global permutation drawn from the shared
shuffling generator is cut into batches of `batch_size` rows, and each rank takes the rows of
each batch that lie in its shard. Each rank's mean loss is weighted by its share of the batch
before the gradients are summed, so the summed gradient is the global batch's mean gradient
even when shards are uneven. A model without randomness in its loss (a flow, MADE) therefore
follows the single-process fit up to floating-point rounding. A Pyro ELBO loss (a VAE) draws
its normal latents by global row (`probgen.fitting.row_noise`): every rank keeps torch's stream
in step with the others and with one process, draws the noise of the whole global batch and
keeps its rows, so its training steps follow the single-process fit draw for draw (held-out
ELBOs, drawn on each rank's validation rows, are the one exception: after them rank 0's stream
is shared again, so a fit with `validation_data` agrees with one process in distribution).
Other losses that draw noise (a GAN's latents) draw it from a per-rank stream, so their runs
agree with a single process in distribution, not draw for draw.

Floating-point buffers (batch-norm running statistics) are broadcast from rank 0 after each
update, as DDP's ``broadcast_buffers`` does; batch normalisation itself uses the local rows.
A loss that is not finite on any rank stops every rank with `FitError` at the same step; the
model's own divergence test (a `FitError` raised inside one rank's loss) stops that rank, and
the others fail with `DistributedError` once the process group's timeout passes.

Example:
    >>> import torch
    >>> from probgen.fitting.data_parallel import DataParallel
    >>> DataParallel.wanted(torch.zeros(4, 2))  # one process: the loop runs as usual
    False
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from probgen.core import distributed
from probgen.core.errors import DataError
from probgen.fitting.batching import _Batches

__all__ = ["DataParallel"]

# Rank r > 0 draws its model noise from seed + r * this (a large odd stride keeps streams apart).
_RANK_SEED_STRIDE = 1_000_003


class DataParallel:
    """One fit's view of the process group: its shard, the global batches, the reductions.

    Args:
        model: the module being trained (its parameters and buffers are made rank 0's).
        batches: this rank's training data as the loop's `_Batches` (tensors, not a loader).
    """

    def __init__(self, model: nn.Module, batches: _Batches) -> None:
        if batches.loader is not None:
            raise DataError(
                "data: under torch.distributed pass this rank's shard as tensors (or a "
                "Sequences), not a DataLoader: the loop draws the global minibatches itself"
            )
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        self.batches = batches
        self.n_local = batches.n
        self.offset, self.n_total = distributed.shard_layout(self.n_local)
        # every rank's (first row, rows): who holds rows of each global batch
        layouts = distributed.all_gather_object((self.offset, self.n_local))
        self.layouts = [(int(first), int(n)) for first, n in layouts]
        self.positions = torch.zeros(0, dtype=torch.long)
        self.first_rank_with_rows = 0
        self.every_rank_has_rows = True
        self._noise_steps = 0
        # set by the loop when every step's loss draws its latents by global row
        self.by_row = False
        state = [t for t in model.state_dict().values() if isinstance(t, torch.Tensor)]
        distributed.broadcast([t for t in state if t.is_floating_point() or t.is_complex()])
        self.buffers = [b for b in model.buffers() if b.is_floating_point()]
        self.device = batches.device

    @staticmethod
    def wanted(data: Any) -> bool:
        """Whether the loop should train data-parallel: a process group of 2+ ranks.

        Example:
            >>> DataParallel.wanted(None)
            False
        """
        return distributed.is_distributed()

    def shared_seed(self, seed: int) -> int:
        """Rank 0's shuffling seed on every rank (all ranks must cut the same batches)."""
        return int(distributed.broadcast_object(int(seed)))

    def seed_rank_stream(self) -> None:
        """Give ranks after the first their own stream of model noise (latents, dropout)."""
        if self.rank > 0:
            base = int(torch.randint(2**62, (), dtype=torch.int64))
            torch.manual_seed((base + self.rank * _RANK_SEED_STRIDE) % 2**63)

    @staticmethod
    def draws_by_row(steps: Sequence[Any]) -> bool:
        """Whether every step's loss draws its latents by global row (a Pyro ELBO loss)."""
        return all(getattr(step.loss, "draws_latents_by_row", False) for step in steps)

    def share_stream(self) -> None:
        """Rank 0's state of torch's generator on every rank (they draw global noise alike)."""
        self._share_stream_from(0)

    def _share_stream_from(self, source: int) -> None:
        state = torch.get_rng_state()
        distributed.broadcast([state], src=source)
        torch.set_rng_state(state)
        if self.device.type == "cuda":  # latents of a model on the GPU come from its generator
            cuda_state = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(distributed.broadcast_object(cuda_state, source), self.device)

    def row_noise(self, n_global: int) -> Any:
        """The Pyro handler that draws this step's latents by global row on this rank."""
        from probgen.fitting.row_noise import GlobalRowNoise

        self._noise_steps += 1
        rank_seed = (self._noise_steps * self.world_size + self.rank) * _RANK_SEED_STRIDE
        return GlobalRowNoise(self.positions, n_global, rank_seed)

    def after_row_noise_step(self) -> None:
        """Ranks without rows in the step drew nothing: give them the stream of one that did."""
        if not self.every_rank_has_rows:
            self._share_stream_from(self.first_rank_with_rows)

    def __len__(self) -> int:
        return -(-self.n_total // self.batches.batch_size)

    def iterate(self, shuffle: torch.Generator) -> Iterator[tuple[Any, int, int]]:
        """Yield ``(local batch or None, local rows, global rows)`` for each global batch."""
        order = torch.randperm(self.n_total, generator=shuffle)
        size = self.batches.batch_size
        low, high = self.offset, self.offset + self.n_local
        for start in range(0, self.n_total, size):
            rows = order[start : start + size]
            held = (rows >= low) & (rows < high)
            mine = rows[held] - low
            self.positions = held.nonzero().reshape(-1)
            counts = [
                int(((rows >= first) & (rows < first + n)).sum()) for first, n in self.layouts
            ]
            self.every_rank_has_rows = min(counts) > 0
            self.first_rank_with_rows = next(r for r, count in enumerate(counts) if count)
            local = self.batches.take(mine) if len(mine) else None
            yield local, len(mine), len(rows)

    def reduce_gradients(
        self, parameters: Sequence[nn.Parameter], weighted_loss: torch.Tensor
    ) -> float:
        """Sum the ranks' (share-weighted) gradients and losses in place; the global loss.

        A parameter this rank did not reach (no rows in the batch, or unused) contributes
        zeros, so every rank takes part in the same collective.
        """
        reached = torch.tensor(
            [p.grad is not None for p in parameters], dtype=torch.float64, device=self.device
        )
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        loss = weighted_loss.detach().reshape(1).to(self.device, torch.float64, copy=True)
        distributed.all_reduce_sum([p.grad for p in parameters] + [loss, reached])
        # A parameter no rank reached keeps no gradient, as in one process (Adam skips it).
        for parameter, count in zip(parameters, reached.tolist()):
            if count == 0:
                parameter.grad = None
        return float(loss)

    def sync_buffers(self) -> None:
        """Rank 0's floating-point buffers on every rank (DDP's ``broadcast_buffers``)."""
        if self.buffers:
            distributed.broadcast(self.buffers)

    def reduce_mean(self, total: float, count: int) -> float:
        """The mean over all ranks of values whose local sum is `total` over `count` items."""
        pair = torch.tensor([total, float(count)], dtype=torch.float64)
        distributed.all_reduce_sum(pair)
        return float(pair[0]) / max(float(pair[1]), 1.0)

    @property
    def writes_checkpoints(self) -> bool:
        """Only rank 0 writes checkpoints (every rank holds the same state)."""
        return self.rank == 0
