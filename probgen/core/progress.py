"""One progress-bar helper for every long loop of the library.

`progress_bar` is tqdm with a policy: on a terminal (stderr is a TTY) or in a notebook it is
the usual live bar; when stderr goes to a file, a pipe or a CI log it stays silent for the
first `QUIET_INTERVAL` seconds and then updates at most once per `QUIET_INTERVAL`, so a
piped `probgen demo` or a fit in CI writes nothing per iteration (a loop running longer than
that leaves a line a minute and a final one). `enabled=False` turns it off everywhere.

Example:
    >>> from probgen.core.progress import progress_bar
    >>> with progress_bar(3, "demo", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    >>> bar.disable
    True
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["QUIET_INTERVAL", "interactive_stderr", "progress_bar"]

# Seconds between two updates (and before the first) when stderr is not a terminal.
QUIET_INTERVAL = 60.0


class _RareTqdm(tqdm):
    """tqdm whose postfix and description changes wait for the next due refresh.

    tqdm redraws on every `set_postfix` by default, which would defeat `mininterval`.
    """

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except AttributeError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def interactive_stderr() -> bool:
    """True when progress can be drawn live: stderr is a terminal, or a notebook runs us.

    Example:
        >>> isinstance(interactive_stderr(), bool)
        True
    """
    try:
        tty = bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        tty = False
    return tty or _in_notebook()


def progress_bar(
    total: int | None = None,
    desc: str | None = None,
    enabled: bool = True,
    **options: Any,
) -> tqdm:
    """A tqdm bar for a long loop: live on a terminal, rare when stderr is not one.

    Args:
        total: expected number of updates (None when unknown).
        desc: label shown before the bar.
        enabled: False gives a disabled bar (silent; its methods do nothing).
        **options: further tqdm options (`unit`, `initial`, `leave`, `mininterval`, ...);
            `mininterval`, `maxinterval` and `delay` are raised to `QUIET_INTERVAL` when stderr
            is not a terminal.

    Returns:
        A tqdm object: use `update`, `set_postfix`, `close` or it as a context manager.

    Example:
        >>> bar = progress_bar(10, "fit", enabled=False, unit="epoch")
        >>> bar.update(2); bar.close(); bar.disable
        True
    """
    options.setdefault("leave", False)
    if not enabled:
        return tqdm(total=total, desc=desc, disable=True, **options)
    if not interactive_stderr():
        options["mininterval"] = max(float(options.get("mininterval", 0.0)), QUIET_INTERVAL)
        options["delay"] = max(float(options.get("delay", 0.0)), QUIET_INTERVAL)
        # tqdm's monitor thread forces a refresh after `maxinterval` seconds without one.
        options["maxinterval"] = max(float(options.get("maxinterval", 0.0)), QUIET_INTERVAL)
        options["leave"] = True
        options.setdefault("ascii", True)
        return _RareTqdm(total=total, desc=desc, **options)
    return tqdm(total=total, desc=desc, **options)
