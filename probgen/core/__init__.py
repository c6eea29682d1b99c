"""The foundation every family builds on: the density contract, errors, input checks, save/load.

`probgen.core` imports nothing else in probgen; every other package may import it.

Example:
    >>> from probgen.core import LogProbKind
    >>> LogProbKind.LOWER_BOUND.value
    'lower_bound'
"""

from __future__ import annotations

from probgen.core.contract import Density, LogProbKind, Model, seeded_initialisation
from probgen.core.data import Sequences
from probgen.core.errors import (
    ConvergenceWarning,
    DataError,
    FitError,
    ModelFileError,
    NoDensityError,
    NotFittedError,
    ProbgenError,
)
from probgen.core.io import load, save_model

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "Density",
    "FitError",
    "LogProbKind",
    "Model",
    "ModelFileError",
    "NoDensityError",
    "NotFittedError",
    "ProbgenError",
    "Sequences",
    "load",
    "save_model",
    "seeded_initialisation",
]
