"""A "loaded" mode for the benchmarks: a CPU-burning process beside the measurement.

A user's machine is rarely idle. `cpu_load()` starts one busy-looping Python subprocess (one
core kept at 100%) for the duration of a `with` block and kills it afterwards, so a benchmark
can report each headline figure quiet and loaded. `load_modes` maps the `--load` option of the
benchmark scripts (`quiet`, `loaded` or `both`) to the modes to run, and `under` gives the
context of one mode.

Example:
    >>> load_modes("both")
    ['quiet', 'loaded']
    >>> with under("quiet"):
    ...     pass
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

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


def under(mode: str) -> contextlib.AbstractContextManager:
    """The context of one load mode: nothing for "quiet", `cpu_load()` for "loaded"."""
    if mode == "quiet":
        return contextlib.nullcontext()
    if mode == "loaded":
        return cpu_load()
    raise ValueError(f"unknown load mode {mode!r}")


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
