"""Ranks, shards and reductions over `torch.distributed`, and a no-op in one process.

probgen scales past one process with the engine torch users already run: `torch.distributed`,
launched by `torchrun` (gloo on CPU, NCCL on GPU). This module is what the families use:

- where am I: `rank()`, `world_size()`, `local_rank()`, `is_distributed()`. A run is
  distributed when a process group is initialised with more than one rank, or when the
  `torchrun` environment variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
  `MASTER_PORT`) say so; the first collective then initialises the group itself (`init`).
- the reductions: `all_reduce_sum` (in place, in the tensors' own dtype: float64 statistics
  stay float64), `broadcast`, `gather_to_rank0`, `shard_layout` (where this rank's rows sit
  among all ranks' rows) and `barrier`.
- shards: `shard_indices(n, rank, world)` is the contiguous, deterministic block of rows of a
  rank (the first ``n % world`` ranks hold one row more, as `numpy.array_split`), `shard(data)`
  slices it.
- the timeout policy: a collective that a dead or stuck rank never joins fails on the others
  with `DistributedError` (naming the collective, the rank and the timeout) once the process
  group's timeout has passed; it never hangs. `init` sets that timeout (default
  `DEFAULT_TIMEOUT` seconds, or the environment variable `PROBGEN_DISTRIBUTED_TIMEOUT`); a
  group the caller initialised keeps the caller's timeout.
- `spawn_local(fn, world_size)`: runs `fn` on that many local processes with a rendezvous on
  127.0.0.1 (tests, benchmarks, notebooks); `torchrun` is the launcher for real runs.

In one process every function works unchanged: `rank()` is 0, `world_size()` 1, the reductions
return their input, `shard_indices` is every row. `single_process()` makes a distributed
process behave as a single one for a while (a fit on data that is not sharded).

Example:
    >>> import torch
    >>> from probgen.core import distributed
    >>> distributed.rank(), distributed.world_size(), distributed.is_distributed()
    (0, 1, False)
    >>> statistics = torch.tensor([1.5, 2.0], dtype=torch.float64)
    >>> distributed.all_reduce_sum(statistics) is statistics  # a no-op in one process
    True
    >>> [list(distributed.shard_indices(5, r, 2)) for r in range(2)]
    [[0, 1, 2], [3, 4]]
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from probgen.core.errors import ProbgenError

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
    "shard",
    "shard_indices",
    "shard_layout",
    "single_process",
    "spawn_local",
    "world_size",
]

# Seconds a collective waits for the other ranks before failing. Long enough for a slow rank to
# load its shard, short enough that a dead rank does not hold a job (torch's default is 30 min).
DEFAULT_TIMEOUT = 600.0
TIMEOUT_VARIABLE = "PROBGEN_DISTRIBUTED_TIMEOUT"

Data = TypeVar("Data")
_local_only = 0  # depth of `single_process()` blocks
_timeout_set: float | None = None  # the timeout `init` or `spawn_local` gave the group


class DistributedError(ProbgenError, RuntimeError):
    """A collective failed: another rank died, or did not join it within the timeout."""


# ---- where am I ------------------------------------------------------------------------------
def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def is_initialized() -> bool:
    """Whether a `torch.distributed` process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def _launched() -> bool:
    """Whether `torchrun` (or another env:// launcher) started this process as one of many."""
    return _env_int("WORLD_SIZE", 1) > 1 and "MASTER_ADDR" in os.environ


def rank() -> int:
    """This process's rank: the process group's, else `RANK` from the environment, else 0."""
    if _local_only:
        return 0
    if is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0) if _launched() else 0


_this_rank = rank  # `shard_indices` and `shard` take a `rank` argument


def world_size() -> int:
    """Number of processes: the process group's, else `WORLD_SIZE` from the environment, else 1."""
    if _local_only:
        return 1
    if is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1) if _launched() else 1


def local_rank() -> int:
    """This process's rank on its machine (`LOCAL_RANK`; the CUDA device it should use)."""
    return 0 if _local_only else _env_int("LOCAL_RANK", rank())


def is_distributed() -> bool:
    """Whether the work is split across more than one process."""
    return world_size() > 1


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Within the block, behave as one process: fits see their data as the whole data set.

    Example:
        >>> with single_process():
        ...     world_size()
        1
    """
    global _local_only
    _local_only += 1
    try:
        yield
    finally:
        _local_only -= 1


@contextlib.contextmanager
def outside_single_process() -> Iterator[None]:
    """Undo `single_process()` for a while: collectives reach every rank again
    (`probgen.core.distributed_restarts` gathers the ranks' best restarts inside it)."""
    global _local_only
    depth = _local_only
    _local_only = 0
    try:
        yield
    finally:
        _local_only = depth


def _timeout_seconds(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    value = os.environ.get(TIMEOUT_VARIABLE)
    return float(value) if value else DEFAULT_TIMEOUT


def init(backend: str | None = None, *, timeout: float | None = None) -> bool:
    """Initialise the process group from the `torchrun` environment if it is not yet.

    Args:
        backend: "gloo", "nccl", or torch's "cpu:gloo,cuda:nccl"; None: gloo without CUDA,
            else gloo for CPU tensors and NCCL for CUDA tensors.
        timeout: seconds a collective waits for the other ranks before failing (None:
            `PROBGEN_DISTRIBUTED_TIMEOUT`, else `DEFAULT_TIMEOUT`).

    Returns:
        Whether a process group is initialised (False in a single process).
    """
    if is_initialized():
        return True
    if not _launched() or not dist.is_available():
        return False
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    _init_group(backend, _timeout_seconds(timeout))
    return True


def _init_group(backend: str, seconds: float, rendezvous: float | None = None) -> None:
    """Initialise the default group; its collectives time out after `seconds`.

    `rendezvous`: seconds the processes may take to find each other, when longer (processes
    start slowly on a loaded machine, while a test wants a short collective timeout).
    """
    global _timeout_set
    joining = max(seconds, rendezvous or 0.0)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=joining))
    set_timeout = getattr(dist.distributed_c10d, "_set_pg_timeout", None)
    if joining > seconds and set_timeout is not None:
        set_timeout(datetime.timedelta(seconds=seconds))
        joining = seconds
    _timeout_set = joining


def _group_timeout() -> str:
    return f"{_timeout_set:g} s" if _timeout_set is not None else "the process group's timeout"


@contextlib.contextmanager
def _collective(name: str) -> Iterator[None]:
    """Turn a failed collective into a `DistributedError` that says what to look at."""
    init()
    try:
        yield
    except (RuntimeError, dist.DistError) as error:
        raise DistributedError(
            f"{name} failed on rank {rank()} of {world_size()}: another rank died or did not "
            f"join it within {_group_timeout()} ({type(error).__name__}: {error})"
        ) from error


# ---- reductions --------------------------------------------------------------------------------
def _as_list(tensors: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)


def all_reduce_sum(tensors: Data) -> Data:
    """Sum each tensor over the ranks, in place; returns its argument.

    Tensors of one dtype and device travel in one flat buffer (one collective per dtype), in
    their own dtype: float64 statistics are summed in float64. A no-op in one process.

    Args:
        tensors: a tensor or a sequence of tensors (every rank passes the same shapes).

    Example:
        >>> counts = torch.tensor([3.0, 4.0], dtype=torch.float64)
        >>> all_reduce_sum([counts])[0]
        tensor([3., 4.], dtype=torch.float64)
    """
    if not is_distributed():
        return tensors
    items = _as_list(tensors)  # type: ignore[arg-type]
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for tensor in items:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    with _collective("all_reduce_sum"):
        for group in groups.values():
            if len(group) == 1 and group[0].is_contiguous():
                dist.all_reduce(group[0], op=dist.ReduceOp.SUM)
                continue
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for tensor, part in zip(group, flat.split([t.numel() for t in group])):
                tensor.copy_(part.view_as(tensor))
    return tensors


def broadcast(tensors: Data, src: int = 0) -> Data:
    """Overwrite each tensor with rank `src`'s, in place; returns its argument.

    Example:
        >>> broadcast(torch.tensor([1.0]))
        tensor([1.])
    """
    if not is_distributed():
        return tensors
    with _collective("broadcast"):
        for tensor in _as_list(tensors):  # type: ignore[arg-type]
            if tensor.is_contiguous():
                dist.broadcast(tensor, src)
            else:
                buffer = tensor.contiguous()
                dist.broadcast(buffer, src)
                tensor.copy_(buffer)
    return tensors


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank `src`'s picklable `value` on every rank.

    Example:
        >>> broadcast_object({"seed": 3})
        {'seed': 3}
    """
    if not is_distributed():
        return value
    holder = [value]
    with _collective("broadcast_object"):
        dist.broadcast_object_list(holder, src)
    return holder[0]


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's picklable `value`, in rank order, on every rank.

    Example:
        >>> all_gather_object(["a", "b"])
        [['a', 'b']]
    """
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * world_size()
    with _collective("all_gather_object"):
        dist.all_gather_object(values, value)
    return values


def _all_gather_ints(value: int) -> list[int]:
    tensor = torch.tensor([value], dtype=torch.int64)
    if is_initialized() and dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    parts = [torch.zeros_like(tensor) for _ in range(world_size())]
    with _collective("all_gather"):
        dist.all_gather(parts, tensor)
    return [int(p) for p in parts]


def all_gather_rows(tensor: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Every rank's rows of `tensor`, concatenated in rank order, on every rank.

    `sizes`: every rank's number of rows when the caller knows them (`shard_indices`); None
    exchanges them first (one more collective). Other dimensions and dtype agree on all ranks.

    Example:
        >>> all_gather_rows(torch.arange(3))
        tensor([0, 1, 2])
    """
    if not is_distributed():
        return tensor
    lengths = list(sizes) if sizes is not None else _all_gather_ints(tensor.shape[0])
    longest = max(lengths)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in lengths]
    with _collective("all_gather_rows"):
        dist.all_gather(parts, padded)
    return torch.cat([part[:length] for part, length in zip(parts, lengths)])


def shard_layout(n_local: int) -> tuple[int, int]:
    """(offset, total): where this rank's `n_local` rows start among all ranks' rows (ranks in
    order), and how many rows all ranks hold together.

    Example:
        >>> shard_layout(7)
        (0, 7)
    """
    if not is_distributed():
        return 0, n_local
    sizes = _all_gather_ints(n_local)
    return sum(sizes[: rank()]), sum(sizes)


def gather_to_rank0(tensor: torch.Tensor) -> list[torch.Tensor] | None:
    """Every rank's `tensor` (any first-dimension length) as a list on rank 0; None elsewhere.

    Example:
        >>> gather_to_rank0(torch.arange(3))
        [tensor([0, 1, 2])]
    """
    if not is_distributed():
        return [tensor]
    lengths = _all_gather_ints(tensor.shape[0] if tensor.dim() else 1)
    longest = max(lengths)
    flat = tensor.reshape(-1, *tensor.shape[1:]) if tensor.dim() else tensor.reshape(1)
    padded = flat.new_zeros((longest, *flat.shape[1:]))
    padded[: flat.shape[0]] = flat
    padded = padded.contiguous()
    with _collective("gather_to_rank0"):
        if rank() == 0:
            parts = [torch.empty_like(padded) for _ in lengths]
            dist.gather(padded, parts, dst=0)
        else:
            dist.gather(padded, None, dst=0)
            return None
    shape = tuple(tensor.shape)
    return [
        part[:length] if tensor.dim() else part[0].reshape(shape)
        for part, length in zip(parts, lengths)
    ]


def barrier(timeout: float | None = None) -> None:
    """Wait until every rank reaches this point; fail with `DistributedError` naming the
    missing ranks after `timeout` seconds (gloo's monitored barrier; None: the group's timeout).
    """
    if not is_distributed():
        return
    with _collective("barrier"):
        if dist.get_backend() == "gloo":
            seconds = _timeout_seconds(timeout)
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=seconds), wait_all_ranks=True)
        else:
            dist.barrier()


# ---- shards ------------------------------------------------------------------------------------
def shard_indices(n: int, rank: int | None = None, world: int | None = None) -> range:
    """The contiguous rows of `n` that rank `rank` of `world` holds (default: this process's).

    The first ``n % world`` ranks hold ``n // world + 1`` rows, the others ``n // world``;
    concatenating the shards in rank order gives ``range(n)`` back.

    Example:
        >>> [len(shard_indices(10, r, 3)) for r in range(3)]
        [4, 3, 3]
    """
    rank_ = _this_rank() if rank is None else rank
    world_ = world_size() if world is None else world
    if world_ < 1 or not 0 <= rank_ < world_:
        raise ValueError(f"rank must lie in [0, {world_}), got {rank_}")
    base, extra = divmod(n, world_)
    start = rank_ * base + min(rank_, extra)
    return range(start, start + base + (rank_ < extra))


def shard(data: Data, rank: int | None = None, world: int | None = None) -> Data:
    """This rank's contiguous block of the rows of `data` (anything that slices by rows).

    Example:
        >>> shard(torch.arange(5), 1, 2)
        tensor([3, 4])
    """
    rows = shard_indices(len(data), rank, world)  # type: ignore[arg-type]
    return data[rows.start : rows.stop]  # type: ignore[index]


# ---- local launcher ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_rank(
    local: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    world: int,
    port: int,
    backend: str,
    timeout: float,
    threads: int,
    results: str,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local),
        LOCAL_RANK=str(local),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
    )
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(threads)
    try:
        _init_group(backend, timeout, rendezvous=_RENDEZVOUS_SECONDS)
    except RuntimeError as error:
        message = f"rank {local} could not join the process group: {error}"
        raise _RendezvousFailed(message) from error
    try:
        value = fn(*args)
        with open(Path(results) / f"{local}.pickle", "wb") as file:
            pickle.dump(value, file)
    finally:
        dist.destroy_process_group()


def spawn_local(
    fn: Callable[..., Any],
    world_size: int = 2,
    *,
    args: Sequence[Any] = (),
    backend: str = "gloo",
    timeout: float = 60.0,
    threads: int | None = None,
    deadline: float | None = None,
) -> list[Any]:
    """Run ``fn(*args)`` on `world_size` local processes joined in one process group.

    The rendezvous is on 127.0.0.1 at a free port; each process gets the `torchrun`
    environment variables, so `fn` sees the same `rank()` and `world_size()` as under
    `torchrun`. The processes start from a fork server that has imported torch and `fn`'s
    module once, so a second call starts in well under a second.

    Args:
        fn: a module-level function (it is pickled by name).
        world_size: number of processes.
        args: `fn`'s arguments (picklable).
        backend: "gloo" (CPU) or "nccl" (one GPU per process).
        timeout: seconds a collective waits for a missing rank before failing.
        threads: torch threads per process (default: the CPU cores shared out, at least 1).
        deadline: seconds after which the processes are stopped (None: no limit).

    Returns:
        Each rank's return value (picklable), in rank order; None for a rank that exited
        without returning.

    Raises:
        DistributedError: a rank raised (its traceback is in the message) or died, or the
            deadline passed.
    """
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // world_size)
    started = time.monotonic()
    for attempt in range(_RENDEZVOUS_ATTEMPTS):
        remaining = None if deadline is None else deadline - (time.monotonic() - started)
        try:
            return _spawn_once(fn, world_size, tuple(args), backend, timeout, threads, remaining)
        except _RendezvousFailed:
            # gloo's full-mesh connect fails now and then on a loaded machine (pytorch#53270);
            # nothing ran yet, so start again on a fresh port.
            if attempt + 1 == _RENDEZVOUS_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


_RENDEZVOUS_ATTEMPTS = 3
_RENDEZVOUS_SECONDS = 120.0


class _RendezvousFailed(DistributedError):
    """The processes could not connect to each other (before `fn` ran)."""


def _spawn_once(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple[Any, ...],
    backend: str,
    timeout: float,
    threads: int,
    deadline: float | None,
) -> list[Any]:
    import torch.multiprocessing as multiprocessing
    from torch.multiprocessing.spawn import ProcessException

    context = multiprocessing.get_context("forkserver")
    preload = ["torch", "torch.distributed", __name__]
    if getattr(fn, "__module__", "__main__") != "__main__":
        preload.append(fn.__module__)
    context.set_forkserver_preload(preload)
    with tempfile.TemporaryDirectory(prefix="probgen-spawn-") as results:
        arguments = (fn, args, world_size, _free_port(), backend, timeout, threads, results)
        processes = multiprocessing.start_processes(
            _run_rank,
            args=arguments,
            nprocs=world_size,
            join=False,
            start_method="forkserver",
        )
        started = time.monotonic()
        try:
            while not processes.join(timeout=0.05):
                if deadline is not None and time.monotonic() - started > deadline:
                    raise DistributedError(
                        f"spawn_local: the {world_size} processes did not finish within "
                        f"the deadline; stopped them"
                    )
        except ProcessException as error:
            failure = _RendezvousFailed if _RendezvousFailed.__name__ in str(error) else None
            raise (failure or DistributedError)(
                f"rank {error.error_index} failed: {error}"
            ) from error
        finally:
            for process in processes.processes:
                if process.is_alive():
                    process.terminate()
                    process.join(5)
        values = []
        for local in range(world_size):
            path = Path(results) / f"{local}.pickle"
            if path.exists():
                with open(path, "rb") as file:
                    values.append(pickle.load(file))
            else:
                values.append(None)
        return values
