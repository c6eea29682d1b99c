"""A "loaded" mode for the benchmarks: a CPU-burning process beside the measurement.

A user's machine is rarely idle. `cpu_load()` starts one busy-looping Python subprocess (one
core kept at 100%) for the duration of a `with` block and kills it afterwards, so a benchmark
can report each headline figure quiet and loaded. `load_modes` maps the `--load` option of the
benchmark scripts (`quiet`, `loaded` or `both`) to the modes to run, and `under` gives the
context of one mode. `OtherLoad` measures how many cores processes outside this one's tree
kept busy during a block, which tells a quiet run from one on a machine shared with other work
(the load average cannot: it counts the benchmark's own threads).

Example:
    >>> load_modes("both")
    ['quiet', 'loaded']
    >>> with under("quiet"):
    ...     pass
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

LOAD_CHOICES = ("quiet", "loaded", "both")

_BUSY_LOOP = "while True:\n    pass\n"


@contextlib.contextmanager
def cpu_load(processes: int = 1, warmup: float = 0.3) -> Iterator[list[subprocess.Popen]]:
    """Keep `processes` cores busy (one busy-looping subprocess each) inside the block."""
    burners = [
        subprocess.Popen([sys.executable, "-c", _BUSY_LOOP], stdin=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    try:
        time.sleep(warmup)  # let the burners reach the scheduler before timing starts
        yield burners
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()


def _system_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (None off Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def _own_tree_seconds() -> float:
    """CPU seconds of this process, its live descendants and every child they reaped."""
    parents: dict[int, int] = {}
    seconds: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        pid = int(entry.name)
        parents[pid] = int(rest[1])
        seconds[pid] = sum(int(v) for v in rest[11:15])  # utime stime cutime cstime
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(seconds.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Cores kept busy by processes outside this one's tree while the block ran.

    ``cores`` is None where /proc is not available. A burner started by `cpu_load` is a child
    of this process, so it counts as the benchmark's own work, not as other load.

    Example:
        >>> with OtherLoad() as other:
        ...     pass
        >>> other.cores is None or other.cores >= -1.0
        True
    """

    def __init__(self) -> None:
        self.cores: float | None = None

    def __enter__(self) -> OtherLoad:
        self._started = (time.perf_counter(), _system_busy_seconds(), _own_tree_seconds())
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        wall, busy, own = time.perf_counter(), _system_busy_seconds(), _own_tree_seconds()
        started_wall, started_busy, started_own = self._started
        if busy is None or started_busy is None or wall <= started_wall:
            return
        self.cores = ((busy - started_busy) - (own - started_own)) / (wall - started_wall)


def under(mode: str) -> contextlib.AbstractContextManager:
    """The context of one load mode: nothing for "quiet", `cpu_load()` for "loaded"."""
    if mode == "quiet":
        return contextlib.nullcontext()
    if mode == "loaded":
        return cpu_load()
    raise ValueError(f"unknown load mode {mode!r}")


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo (``platform.processor()`` is often empty).

    Shared machines change hardware between runs, and a ratio measured on one CPU family does
    not carry to another, so each results file names the CPU it ran on.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def load_modes(option: str) -> list[str]:
    """The modes a `--load` option runs, quiet first."""
    if option == "both":
        return ["quiet", "loaded"]
    if option in ("quiet", "loaded"):
        return [option]
    raise ValueError(f"--load must be one of {LOAD_CHOICES}, got {option!r}")


def add_options(parser: argparse.ArgumentParser, default_load: str = "both") -> None:
    """Add `--load` and `--threads` (default: the library's own thread policy)."""
    parser.add_argument(
        "--load",
        choices=LOAD_CHOICES,
        default=default_load,
        help="measure headline figures on a quiet machine, beside a CPU-burning process, "
        f"or both (default {default_load})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for the whole run (default: leave torch's default, so "
        "the library's own thread policy is measured, as a user gets it)",
    )


def apply_threads(threads: int | None) -> None:
    """Set torch's thread count only when the user asked for one."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
