"""Functions the 2-process tests run on every rank (`probgen.distributed.spawn_local` pickles
them by name, so they live in a module of their own)."""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from probgen import distributed
from probgen.mixture import GaussianMixture


def collectives() -> dict[str, Any]:
    """The reductions, gathers and shard bookkeeping, as seen by one rank."""
    me = distributed.rank()
    values = torch.tensor([me + 0.25, 1e-300], dtype=torch.float64)
    counts = torch.tensor([me + 1], dtype=torch.int64)
    distributed.all_reduce_sum([values, counts])
    source = torch.full((2,), float(me))
    distributed.broadcast(source, src=1)
    gathered = distributed.gather_to_rank0(torch.arange(me + 2, dtype=torch.float64))
    distributed.barrier(timeout=30)
    with distributed.single_process():
        local = (distributed.world_size(), distributed.all_reduce_sum(torch.ones(1)).item())
    return {
        "rank": me,
        "world": distributed.world_size(),
        "distributed": distributed.is_distributed(),
        "values": values,
        "counts": counts,
        "broadcast": source,
        "gathered": gathered,
        "layout": distributed.shard_layout(3 + me),
        "object": distributed.broadcast_object({"rank": me}, src=1),
        "local": local,
    }


def dead_rank(timeout: float) -> tuple[str, float] | None:
    """Rank 1 dies before the reduction; rank 0 reports the error and how long it waited."""
    if distributed.rank() == 1:
        os._exit(0)
    started = time.monotonic()
    try:
        distributed.all_reduce_sum(torch.ones(3))
    except distributed.DistributedError as error:
        return str(error), time.monotonic() - started
    return "no error", time.monotonic() - started


def stuck_rank(timeout: float) -> tuple[str, float] | None:
    """Rank 1 joins no reduction until after the timeout; rank 0 reports how long it waited."""
    if distributed.rank() == 1:
        time.sleep(timeout + 0.5)
        return None
    started = time.monotonic()
    try:
        distributed.all_reduce_sum(torch.ones(3))
    except distributed.DistributedError as error:
        return str(error), time.monotonic() - started
    return "no error", time.monotonic() - started


def failing_rank() -> None:
    """Rank 1 raises."""
    if distributed.rank() == 1:
        raise ValueError("rank 1 gives up")


def fit_mixtures(jobs: list[tuple[torch.Tensor, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Fit one GaussianMixture per config on this rank's shard of each job's data."""
    fits = []
    for data, configs in jobs:
        part = distributed.shard(data)
        for config in configs:
            model = GaussianMixture(**config).double().fit(part)
            state = {k: v.clone() for k, v in model.state_dict().items()}
            fits.append({"state": state, "history": model.history_})
    return fits


def fit_networks(jobs: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Fit one BayesianNetwork per (data frame, settings) on this rank's rows."""
    from probgen.networks import BayesianNetwork

    fits = []
    for frame, settings in jobs:
        model = BayesianNetwork(**settings).fit(distributed.shard(frame))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        fits.append({"state": state, "history": model.history_, "states": model.states})
    return fits
