"""The gradient loop's public names, from where they used to live (a thin re-export).

The loop was split by job: `probgen.fitting.loop` (`fit_model`, `fit_with_model_settings`),
`batching`, `optimizers` (`Step`), `checkpoint`, `elbo` (`pyro_elbo_loss`) and `settings`.
Import from those; this module keeps `from probgen.fitting.training import fit_model` working.

Example:
    >>> from probgen.fitting.training import fit_model
    >>> fit_model.__module__
    'probgen.fitting.loop'
"""

from __future__ import annotations

from probgen.fitting.batching import first_tensor
from probgen.fitting.checkpoint import CHECKPOINT_NAME, load_checkpoint
from probgen.fitting.elbo import pyro_elbo_loss
from probgen.fitting.loop import fit_model, fit_with_model_settings
from probgen.fitting.optimizers import LossFn, Step
from probgen.fitting.settings import MODEL_SETTINGS

__all__ = [
    "CHECKPOINT_NAME",
    "MODEL_SETTINGS",
    "LossFn",
    "Step",
    "first_tensor",
    "fit_model",
    "fit_with_model_settings",
    "load_checkpoint",
    "pyro_elbo_loss",
]
