"""`build_emission`: the emission module for an HMM's `emission` argument.

Example:
    >>> from probgen.hmm.emissions.build import build_emission
    >>> type(build_emission("poisson", 2, n_symbols=None, n_features=3, covariance="diag",
    ...                     n_mix=1, pseudocount=0.0, covariance_prior=0.01,
    ...                     covariance_floor=1e-6)).__name__
    'PoissonEmission'
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.hmm.emissions.base import (
    Emission,
)
from probgen.hmm.emissions.categorical import CategoricalEmission
from probgen.hmm.emissions.gaussian import GaussianEmission
from probgen.hmm.emissions.gmm import GaussianMixtureEmission
from probgen.hmm.emissions.multinomial import MultinomialEmission
from probgen.hmm.emissions.poisson import PoissonEmission
from probgen.hmm.emissions.torch_distribution import TorchDistributionEmission


def build_emission(
    emission: str | torch.distributions.Distribution | dict[str, Any],
    n_states: int,
    *,
    n_symbols: int | None,
    n_features: int | None,
    covariance: str,
    n_mix: int,
    pseudocount: float,
    covariance_prior: float,
    covariance_floor: float,
    n_trials: int | None = None,
) -> Emission | None:
    """Build the emission module, or None when its size is only known from data."""
    if isinstance(emission, torch.distributions.Distribution):
        built = TorchDistributionEmission.from_distribution(emission)
        if built.n_states != n_states:
            raise DataError(
                f"emission distribution has batch shape ({built.n_states},) but n_states={n_states}"
            )
        return built
    if isinstance(emission, dict):
        return TorchDistributionEmission(
            n_states,
            emission["torch_distribution"],
            emission["parameter_shapes"],
            emission.get("event_shape", []),
        )
    if emission == "categorical":
        if n_symbols is None:
            return None
        return CategoricalEmission(n_states, n_symbols, pseudocount)
    if n_features is None:
        return None
    if emission == "gaussian":
        return GaussianEmission(
            n_states, n_features, covariance, covariance_prior, covariance_floor
        )
    if emission == "gmm":
        return GaussianMixtureEmission(
            n_states, n_features, n_mix, covariance, covariance_prior, covariance_floor, pseudocount
        )
    if emission == "poisson":
        return PoissonEmission(n_states, n_features)
    if emission == "multinomial":
        return MultinomialEmission(n_states, n_features, n_trials, pseudocount)
    raise DataError(
        "emission must be 'categorical', 'gaussian', 'gmm', 'poisson', 'multinomial' or a torch "
        f"distribution batched over states; got {emission!r}"
    )
