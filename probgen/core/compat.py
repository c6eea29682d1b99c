"""Old import paths kept as thin aliases that warn, for one release after a module moved.

Example:
    >>> import importlib, sys, warnings
    >>> _ = sys.modules.pop("probgen.graphical.hmm", None)  # it warns when first imported
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     old = importlib.import_module("probgen.graphical.hmm")
    ...     cls = old.HMM
    >>> cls.__name__, caught[0].category.__name__
    ('HMM', 'DeprecationWarning')
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved(old: str, *new: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level `__getattr__` and `__dir__` for a deprecated module `old` whose names now
    live in the modules `new` (searched in order). Warns once, when `old` is imported.

    Args:
        old: the deprecated module's name (pass ``__name__``).
        *new: the modules that hold its names now.

    Returns:
        ``(__getattr__, __dir__)`` to assign at the top of the deprecated module.
    """
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; import from "
        f"{new[0]} instead",
        DeprecationWarning,
        stacklevel=3,
    )

    def __getattr__(name: str) -> Any:
        for module_name in new:
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        names: set[str] = set()
        for module_name in new:
            names.update(dir(importlib.import_module(module_name)))
        return sorted(names)

    return __getattr__, __dir__
