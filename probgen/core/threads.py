"""The thread policy of probgen's loops of small tensor ops.

Many of probgen's loops (HMM forward/backward steps, Bayesian-network queries and calibration,
RBM and Boltzmann-machine epochs and Gibbs sweeps, AIS, MH/Gibbs chains, SVI, neural fits on
small batches, GMM EM) run thousands of small tensor ops in a row. Measured on a 2-core machine
(`benchmarks/results/threads.json`, made by `benchmarks/threads_policy.py`), such a loop is
1.2-2.4x slower at torch's default of 2 intra-op threads than at 1 on a quiet machine, and
2-3x slower when another process keeps a core busy; threads pay off only once one step does
about 2**22 multiply-adds or more (1.7x faster quiet at 2**26).

The rule, applied at each public entry point that runs such a loop:

- while the call runs, torch uses **one** intra-op thread when the loop's per-step work
  (`work_size`, about the number of multiply-adds of one step) is at most `THREADED_WORK`
  (2**22), or unknown; larger steps keep the caller's setting unless the machine is busy:
  when the one-minute load average exceeds the usable cores less one half (another process
  keeps the cores occupied), large steps run on one thread too, since torch's spinning
  threads then lose 5-50x while a second thread gains at most about 1.7x on an idle machine
  (a GAN's 6.6-million multiply-add steps took 0.5 s at 2 threads beside other work against
  0.01 s at 1). Nothing changes off the CPU.
- the caller's `torch.get_num_threads()` is restored when the call returns or raises.
- a process-wide override replaces the rule: `probgen.set_num_threads(n)` (read at call time),
  else the environment variable `PROBGEN_NUM_THREADS=n`; every loop then runs on `n` threads
  whatever its size. `probgen.set_num_threads(None)` (or `PROBGEN_NUM_THREADS=auto`) goes back
  to the rule. On a machine shared with other busy processes, `PROBGEN_NUM_THREADS=1` keeps the
  large steps single-threaded too.
- nothing changes at import time.

`torch.set_num_threads` is process-wide: two Python threads running probgen loops at the same
time may see each other's setting during the calls (results are unaffected).

Example:
    >>> import torch
    >>> from probgen.core.threads import small_op_threads
    >>> before = torch.get_num_threads()
    >>> with small_op_threads(1000):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

__all__ = [
    "ENV_VARIABLE",
    "THREADED_WORK",
    "get_thread_override",
    "machine_is_busy",
    "set_num_threads",
    "small_op_loop",
    "small_op_threads",
    "thread_target",
]

# Per-step work (multiply-adds) up to which loops run on one thread; see the module docstring.
THREADED_WORK = 2**22

ENV_VARIABLE = "PROBGEN_NUM_THREADS"

_R = TypeVar("_R")

# None: no call-level override (the environment variable, then the size rule, decide).
_override: int | None = None


def set_num_threads(n: int | None) -> None:
    """Run every probgen loop of small ops on `n` intra-op threads; None restores the rule.

    The setting applies only while probgen's loops run (the caller's torch setting is restored
    afterwards) and takes precedence over the environment variable `PROBGEN_NUM_THREADS`.

    Args:
        n: a positive number of threads, or None for the default policy (one thread for steps
            of at most `THREADED_WORK` multiply-adds, the caller's setting above).

    Raises:
        ValueError: when `n` is not a positive integer or None.

    Example:
        >>> import probgen
        >>> probgen.set_num_threads(2)
        >>> get_thread_override()
        2
        >>> probgen.set_num_threads(None)
    """
    global _override
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads expects a positive integer or None, got {n!r}")
    _override = n


def get_thread_override() -> int | None:
    """The thread count every loop uses (call, then environment), or None for the size rule.

    Raises:
        ValueError: when `PROBGEN_NUM_THREADS` is set to something other than a positive
            integer or "auto".

    Example:
        >>> get_thread_override() is None or get_thread_override() >= 1
        True
    """
    if _override is not None:
        return _override
    raw = os.environ.get(ENV_VARIABLE, "").strip()
    if raw == "" or raw.lower() == "auto":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV_VARIABLE} must be a positive integer or 'auto', got {raw!r}")
    return value


def thread_target(work_size: int | None) -> int | None:
    """The thread count a loop with steps of `work_size` multiply-adds runs on (None: unchanged).

    Example:
        >>> thread_target(10) if get_thread_override() is None else 1
        1
    """
    override = get_thread_override()
    if override is not None:
        return override
    if work_size is None or work_size <= THREADED_WORK or machine_is_busy():
        return 1
    return None


def machine_is_busy() -> bool:
    """Whether other work keeps this process's cores occupied: the one-minute load average
    exceeds the usable cores less one half (False where the load average is unknown).

    Example:
        >>> isinstance(machine_is_busy(), bool)
        True
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return load > cores - 0.5


def _on_cpu(device: Any) -> bool:
    if device is None:
        return True
    if isinstance(device, torch.Tensor):
        return device.device.type == "cpu"
    return torch.device(device).type == "cpu"


@contextlib.contextmanager
def small_op_threads(work_size: int | None = None, device: Any = None) -> Iterator[None]:
    """Apply the thread policy for the duration of a loop of small ops, then restore.

    Args:
        work_size: about the number of multiply-adds one step of the loop does; None when
            unknown (treated as small).
        device: the tensor or device the loop runs on; nothing changes off the CPU.

    Example:
        >>> with small_op_threads(10, torch.zeros(1)):
        ...     torch.get_num_threads() == (get_thread_override() or 1)
        True
    """
    target = thread_target(work_size) if _on_cpu(device) else None
    threads = torch.get_num_threads()
    if target is None or target == threads:
        yield
        return
    torch.set_num_threads(target)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def small_op_loop(
    work: Callable[..., int | None] | None = None,
) -> Callable[[Callable[..., _R]], Callable[..., _R]]:
    """Decorator: run a public entry point under `small_op_threads`.

    Args:
        work: called with the entry point's arguments, returns the per-step work of its loop
            (None: unknown, treated as small). Without it every call counts as small work.

    Example:
        >>> @small_op_loop()
        ... def threads_inside() -> int:
        ...     return torch.get_num_threads()
        >>> threads_inside() == (get_thread_override() or 1)
        True
    """

    def decorate(function: Callable[..., _R]) -> Callable[..., _R]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> _R:
            size = None if work is None else work(*args, **kwargs)
            with small_op_threads(size):
                return function(*args, **kwargs)

        return wrapper

    return decorate
