"""Every `Model` subclass, by the dotted name that model files record.

`Model.__init_subclass__` fills it, so that loading a file needs no import of the contract
module (which itself saves through `probgen.core.io`) and only accepts real probgen models.

Example:
    >>> from probgen.core.registry import model_class
    >>> import probgen.hmm
    >>> model_class("probgen.hmm.model.HMM").__name__
    'HMM'
"""

from __future__ import annotations

_CLASSES: dict[str, type] = {}


def class_path(cls: type) -> str:
    """The dotted name a model file records for `cls` (``module.qualname``)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_model_class(cls: type) -> None:
    """Record `cls` (called by `Model.__init_subclass__`)."""
    _CLASSES[class_path(cls)] = cls


def model_class(path: str) -> type | None:
    """The registered model class recorded as `path`, or None."""
    return _CLASSES.get(path)


def is_model_class(cls: object) -> bool:
    """Whether `cls` is a registered model class."""
    return isinstance(cls, type) and _CLASSES.get(class_path(cls)) is cls
