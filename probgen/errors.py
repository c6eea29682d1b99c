"""probgen's exceptions and warnings (defined in `probgen.core.errors`).

Example:
    >>> from probgen.errors import DataError
    >>> issubclass(DataError, ValueError)
    True
"""

from probgen.core.errors import (
    ConvergenceWarning,
    DataError,
    FitError,
    ModelFileError,
    NoDensityError,
    NotFittedError,
    ProbgenError,
)

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "FitError",
    "ModelFileError",
    "NoDensityError",
    "NotFittedError",
    "ProbgenError",
]
