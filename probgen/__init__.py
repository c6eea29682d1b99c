"""probgen: generative models behind one density contract (`fit`, `log_prob`, `sample`).

Names are imported lazily so that `import probgen` stays fast and side-effect free.

Example:
    >>> import probgen
    >>> probgen.LogProbKind.EXACT.value
    'exact'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # foundation
    "Density": "probgen.density",
    "LogProbKind": "probgen.density",
    "Model": "probgen.density",
    "Sequences": "probgen.data",
    "load": "probgen.io",
    "DataError": "probgen.errors",
    "NotFittedError": "probgen.errors",
    "NoDensityError": "probgen.errors",
    "ModelFileError": "probgen.errors",
    "FitError": "probgen.errors",
    "ConvergenceWarning": "probgen.errors",
    "check_density": "probgen.testing",
    # explicit-likelihood models
    "HMM": "probgen.graphical.hmm",
    "BayesianNetwork": "probgen.graphical.bayesnet",
    "MarkovNetwork": "probgen.graphical.markovnet",
    "learn_structure": "probgen.graphical.structure",
    "read_bif": "probgen.graphical.bayesnet",
    "RBM": "probgen.graphical.boltzmann",
    "BoltzmannMachine": "probgen.graphical.boltzmann",
    "DBN": "probgen.graphical.boltzmann",
    "GaussianMixture": "probgen.graphical.mixture",
    # samplers
    "sample_chains": "probgen.samplers.chains",
    "Samples": "probgen.samplers.chains",
    "as_pyro": "probgen.pyro_bridge",
    "PyroDensity": "probgen.pyro_bridge",
    # neural models
    "VAE": "probgen.deep.vae",
    "Flow": "probgen.deep.flows",
    "MADE": "probgen.deep.autoregressive",
    "PixelCNN": "probgen.deep.autoregressive",
    "SequenceModel": "probgen.deep.autoregressive",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'probgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
