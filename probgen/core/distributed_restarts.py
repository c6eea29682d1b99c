"""EM restarts split over the ranks of a distributed run whose ranks all hold the whole data.

Sharded EM (`probgen.core.distributed`) splits the data; when every rank holds the whole data
set instead, the work to split is the `n_init` restarts. Inside `restarts_across_ranks()` a fit
sees one process (its data are the whole data, its reductions no-ops), and the families' restart
loop, `fit_restarts_across_ranks`, runs restarts r, r + world, ... on rank r and keeps the best
restart of all ranks on every rank: the same parameters as the single-process fit.

Example:
    >>> import torch
    >>> from probgen.core.distributed_restarts import restarts_across_ranks, restart_split
    >>> with restarts_across_ranks():  # in one process: changes nothing
    ...     restart_split()
    (0, 1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from probgen.core.distributed import (
    all_gather_object,
    broadcast,
    broadcast_object,
    outside_single_process,
    rank,
    single_process,
    world_size,
)

__all__ = [
    "fit_restarts_across_ranks",
    "restart_seed",
    "restart_split",
    "restarts_across_ranks",
]

_restarts_split: tuple[int, int] | None = None  # (rank, world) inside `restarts_across_ranks()`


@contextlib.contextmanager
def restarts_across_ranks() -> Iterator[None]:
    """Within the block every rank holds the whole data; EM restarts are split over the ranks.

    The fits inside see one process (as in `single_process()`: their data are the whole data
    set and their reductions are no-ops), but a fit with ``n_init > 1`` runs only its share of
    the restarts: rank r runs restarts r, r + world, r + 2 world, ... The restart with the
    highest final log-likelihood (ties: the lowest restart index) is kept on every rank, so
    every rank ends with the parameters, history and convergence flag of the single-process
    fit with the same seed (`fit_restarts_across_ranks`). Every rank calls `fit` with the same
    data and settings. Outside a distributed run the block changes nothing.

    Example:
        >>> from probgen.core.distributed import world_size
        >>> with restarts_across_ranks():
        ...     world_size(), restart_split()
        (1, (0, 1))
    """
    global _restarts_split
    outer = _restarts_split
    _restarts_split = (rank(), world_size())
    try:
        with single_process():
            yield
    finally:
        _restarts_split = outer


def restart_split() -> tuple[int, int]:
    """(rank, world) over which EM restarts are split: (0, 1) outside `restarts_across_ranks`."""
    return _restarts_split or (0, 1)


def restart_seed(seed: int | None) -> int | None:
    """`seed`, or without one a seed drawn on rank 0 when restarts are split over the ranks
    (every rank must draw the same starts).

    Example:
        >>> restart_seed(5)
        5
    """
    if seed is not None or restart_split()[1] == 1:
        return seed
    drawn = int(torch.randint(2**62, (1,)).item())
    with outside_single_process():
        return int(broadcast_object(drawn))


def fit_restarts_across_ranks(
    module: torch.nn.Module,
    n_init: int,
    initialize: Callable[[int], None],
    run: Callable[[], Any],
    *,
    warm_start: bool = False,
    score: Callable[[Any], float] | None = None,
) -> Any:
    """`probgen.fitting.em.fit_restarts` with the restarts split over the ranks.

    Rank r runs EM for restarts r, r + world, ... but calls `initialize` for every restart,
    in order, so that a generator the starts share advances as in one process (a start costs
    far less than its EM run; a `run` must not draw from that generator). The best restart of
    all ranks (highest score, NaN counting as -inf; ties: the lowest restart index, as in one
    process) is sent from its rank to every rank: its parameters (the module's state dict, in
    place) and its `run` result. Outside `restarts_across_ranks()` in a distributed run (or in
    one process) this is the single-process loop.

    Args:
        module: the model; its state dict is what a restart produces.
        n_init: number of restarts.
        initialize: `initialize(restart)` sets a fresh start.
        run: runs EM from the current parameters; returns a picklable result.
        warm_start: restart 0 continues from the current parameters.
        score: the figure restarts are ranked by (default: ``result.history[-1]``).

    Returns:
        The best restart's result, on every rank.
    """
    me, world = restart_split()
    rank_by = score or (lambda result: result.history[-1] if result.history else -float("inf"))
    best: tuple[float, int, dict[str, torch.Tensor], Any] | None = None
    for restart in range(n_init):
        if not (warm_start and restart == 0):
            initialize(restart)
        if restart % world != me:
            continue
        result = run()
        value = float(rank_by(result))
        value = -float("inf") if value != value else value
        if best is None or value > best[0]:
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            best = (value, restart, state, result)
    if world == 1:
        assert best is not None
        module.load_state_dict(best[2])
        return best[3]
    with outside_single_process():
        candidates = all_gather_object(None if best is None else best[:2])
        owner = max((c[0], -c[1], r) for r, c in enumerate(candidates) if c is not None)[2]
        if me == owner:
            assert best is not None
            module.load_state_dict(best[2])
        # Every rank holds tensors of the same shapes (same model, same data): sent in place.
        broadcast(list(module.state_dict().values()), src=owner)
        kept = best[3] if best is not None and me == owner else None
        return broadcast_object(kept, src=owner)
