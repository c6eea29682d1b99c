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
    "Density": "probgen.core.contract",
    "LogProbKind": "probgen.core.contract",
    "Model": "probgen.core.contract",
    "Sequences": "probgen.core.data",
    "load": "probgen.core.io",
    "DataError": "probgen.core.errors",
    "NotFittedError": "probgen.core.errors",
    "NoDensityError": "probgen.core.errors",
    "ModelFileError": "probgen.core.errors",
    "FitError": "probgen.core.errors",
    "ConvergenceWarning": "probgen.core.errors",
    "check_density": "probgen.core.testing",
    "set_num_threads": "probgen.core.threads",
    "evaluate": "probgen.evaluation",
    # explicit-likelihood models
    "HMM": "probgen.hmm",
    "HSMM": "probgen.hmm",
    "BayesianNetwork": "probgen.networks",
    "MarkovNetwork": "probgen.networks",
    "DynamicBayesianNetwork": "probgen.networks",
    "HybridBayesianNetwork": "probgen.networks",
    "learn_structure": "probgen.networks",
    "learn_dbn_structure": "probgen.networks",
    "read_bif": "probgen.networks",
    "RBM": "probgen.boltzmann",
    "BoltzmannMachine": "probgen.boltzmann",
    "DBN": "probgen.boltzmann",
    "GaussianMixture": "probgen.mixture",
    # samplers
    "sample_chains": "probgen.samplers.chains",
    "Samples": "probgen.samplers.chains",
    "as_pyro": "probgen.samplers.pyro_distribution",
    "PyroDensity": "probgen.samplers.pyro_density",
    # neural models
    "VAE": "probgen.deep.vae",
    "Diffusion": "probgen.diffusion",
    "Flow": "probgen.deep.flows",
    "MADE": "probgen.deep.autoregressive",
    "PixelCNN": "probgen.deep.autoregressive",
    "PixelRNN": "probgen.deep.pixelrnn",
    "SequenceModel": "probgen.deep.autoregressive",
    "WaveNet": "probgen.deep.wavenet",
    "CycleGAN": "probgen.gan.cyclegan",
    "GAN": "probgen.gan.model",
    "StyleGAN": "probgen.gan.stylegan",
    "VAEGAN": "probgen.gan.vaegan",
    "WaveGAN": "probgen.gan.wavegan",
    # anomaly detection
    "DensityDetector": "probgen.anomaly",
    "VAEDetector": "probgen.anomaly",
    "AutoencoderDetector": "probgen.anomaly",
    "DeepSVDD": "probgen.anomaly",
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
