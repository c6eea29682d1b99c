"""Exceptions and warnings raised by probgen.

Every public entry point fails with one of these, with a message that names the argument
and what was wrong, rather than a NaN result or a stack trace from deep inside torch.

Example:
    >>> from probgen.core.errors import DataError
    >>> try:
    ...     raise DataError("sequences[3] has 5 features, the model has 4")
    ... except ValueError as error:
    ...     print(error)
    sequences[3] has 5 features, the model has 4
"""

from __future__ import annotations


class ProbgenError(Exception):
    """Base class of every probgen error."""


class DataError(ProbgenError, ValueError):
    """Input data or an argument is malformed: wrong shape, dtype, NaN, empty, out of range."""


class NotFittedError(ProbgenError, ValueError, AttributeError):
    """A method that needs fitted parameters was called before `fit`."""


class NoDensityError(ProbgenError, NotImplementedError):
    """The model has no tractable density (a GAN, say); the message says what to use instead."""


class ModelFileError(ProbgenError, ValueError):
    """A model file is corrupt, truncated, of a newer format, or not a probgen file."""


class FitError(ProbgenError, RuntimeError):
    """A fit diverged (NaN or infinite loss); the model keeps its last good parameters."""


class ConvergenceWarning(UserWarning):
    """A fit stopped at `max_iter` before meeting its tolerance."""


class LikelihoodDecreaseWarning(UserWarning):
    """An EM iteration decreased the log-likelihood (a sign of numerical trouble)."""
