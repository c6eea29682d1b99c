"""`probgen.distributed`: ranks, shards and reductions over `torch.distributed`.

The public spelling of `probgen.core.distributed` (the families import that module; this one
only re-exports it). Under `torchrun` (or any launcher that sets `RANK`, `WORLD_SIZE`,
`MASTER_ADDR`, `MASTER_PORT`), or once a process group is initialised, each rank passes its
shard of the data to `fit` and the fits reduce their statistics across ranks; in one process
everything works unchanged.

Example:
    >>> import torch
    >>> from probgen import distributed
    >>> distributed.world_size()
    1
    >>> distributed.shard(torch.arange(5), rank=0, world=2)
    tensor([0, 1, 2])
"""

from probgen.core.distributed import (
    DEFAULT_TIMEOUT,
    TIMEOUT_VARIABLE,
    DistributedError,
    all_gather_object,
    all_gather_rows,
    all_reduce_sum,
    barrier,
    broadcast,
    broadcast_object,
    gather_to_rank0,
    init,
    is_distributed,
    is_initialized,
    local_rank,
    outside_single_process,
    rank,
    shard,
    shard_indices,
    shard_layout,
    single_process,
    spawn_local,
    world_size,
)
from probgen.core.distributed_restarts import restart_split, restarts_across_ranks

__all__ = [
    "DEFAULT_TIMEOUT",
    "TIMEOUT_VARIABLE",
    "DistributedError",
    "all_gather_object",
    "all_gather_rows",
    "all_reduce_sum",
    "barrier",
    "broadcast",
    "broadcast_object",
    "gather_to_rank0",
    "init",
    "is_distributed",
    "is_initialized",
    "local_rank",
    "outside_single_process",
    "rank",
    "restart_split",
    "restarts_across_ranks",
    "shard",
    "shard_indices",
    "shard_layout",
    "single_process",
    "spawn_local",
    "world_size",
]
