"""The shared fitting core: one gradient loop (and its checkpoints) for every neural model.

Example:
    >>> from probgen.fitting import fit_model
    >>> callable(fit_model)
    True
"""

from __future__ import annotations

from probgen.fitting.loop import fit_model
from probgen.fitting.optimizers import Step

__all__ = ["Step", "fit_model"]
