"""One spelling per training setting: `n_epochs` and `learning_rate`, with the old names kept.

The neural models and `fit_model` used to say `epochs` and `lr` where the other families say
`n_epochs` and `learning_rate`. The old names still work for one release, with a
`DeprecationWarning` naming the new one; model files saved with the old names load silently
(`RenamedSettings.from_config`), since the user cannot change what an old file holds.

Example:
    >>> import warnings
    >>> from probgen.fitting.settings import renamed_options
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed_options("fit", {"epochs": 3, "batch_size": 8})
    {'batch_size': 8, 'n_epochs': 3}
    >>> str(caught[0].message)
    "fit: 'epochs' is deprecated; use 'n_epochs' (the value still applies)"
"""

from __future__ import annotations

import warnings
from typing import Any

from probgen.core.errors import DataError

__all__ = [
    "MODEL_SETTINGS",
    "RENAMED_SETTINGS",
    "RenamedSettings",
    "renamed_arguments",
    "renamed_options",
]

# Old name -> current name.
RENAMED_SETTINGS = {"epochs": "n_epochs", "lr": "learning_rate"}

# The model attributes that `fit_with_model_settings` passes to `fit_model` by default.
MODEL_SETTINGS = ("n_epochs", "batch_size", "learning_rate", "seed")


def _warn(owner: str, old: str, stacklevel: int) -> None:
    warnings.warn(
        f"{owner}: {old!r} is deprecated; use {RENAMED_SETTINGS[old]!r} (the value still "
        "applies)",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def renamed_options(owner: str, options: dict[str, Any], stacklevel: int = 2) -> dict[str, Any]:
    """`options` with each deprecated setting name replaced by its current name, warning once.

    Args:
        owner: what received the options, for the warning (e.g. "VAE.fit").
        options: keyword settings, possibly with old names.
        stacklevel: as for `warnings.warn`, counted from the caller of this function.

    Raises:
        DataError: a setting is given under both its old and its new name.
    """
    result = {key: value for key, value in options.items() if key not in RENAMED_SETTINGS}
    for old, new in RENAMED_SETTINGS.items():
        if old in options:
            if new in options:
                raise DataError(f"{owner}: give {new!r} only, not also its old name {old!r}")
            _warn(owner, old, stacklevel)
            result[new] = options[old]
    return result


def renamed_arguments(
    owner: str, deprecated: dict[str, Any], **current: Any
) -> dict[str, Any]:
    """The current settings of a constructor, with values given under old names applied.

    For a constructor that takes the old names through `**deprecated` (so that they stay out
    of its signature, and so out of `get_config`).

    Args:
        owner: the class name, for the messages.
        deprecated: the constructor's extra keyword arguments.
        **current: the current-name arguments as received.

    Raises:
        TypeError: an extra keyword argument is not an old setting name (as Python would).
    """
    for key in deprecated:
        if key not in RENAMED_SETTINGS or RENAMED_SETTINGS[key] not in current:
            raise TypeError(f"{owner}() got an unexpected keyword argument {key!r}")
    for old, value in deprecated.items():
        _warn(owner, old, 3)
        current[RENAMED_SETTINGS[old]] = value
    return current


class RenamedSettings:
    """Mixin for models whose saved configs may hold the old setting names.

    Put it before `Model` in the bases: `from_config` renames old keys silently, so that files
    saved before the rename load without a warning.
    """

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """Build an unfitted model from a config, old setting names included."""
        config = {RENAMED_SETTINGS.get(key, key): value for key, value in config.items()}
        return super().from_config(config)  # type: ignore[misc]
