"""The public contract suite, `check_density(model, data)` (defined in `probgen.core.testing`).

Example:
    >>> from probgen.testing import check_density
    >>> callable(check_density)
    True
"""

from probgen.core.testing import check_density

__all__ = ["check_density"]
