"""Emission families of hidden Markov models, each batched over the hidden states.

An emission is an `nn.Module` holding one set of parameters per state and offering what the HMM
needs: `log_prob(values) -> (..., n_states)` as one tensor op over every step of every
sequence, additive sufficient `statistics(values, weights)` for the EM e-step and `m_step`
from them, data-driven `initialize`, `sample(states)`, `distribution()` (the equivalent
torch distribution batched over states) and `n_parameters()` for AIC/BIC.

The e-step works in the state-major layout (max_length, n_states, n_sequences) of the
time-step loops: `prepare` turns time-major values into what a family needs once per e-step,
`scaled_probs` gives the per-step scaled emission probabilities in that layout and
`posterior_statistics` the sufficient statistics under state-major posteriors. The defaults go
through `log_prob` and `statistics`; families override them where a layout-aware version is
faster (categorical: a gather from a per-symbol table; diagonal Gaussians: one matrix product
with quadratic features for both, over all steps at once, with the arrays stored state-outer:
see `state_outer` and `probgen.hmm.inference.state_major_empty`).

Built-in families: `CategoricalEmission`, `GaussianEmission` (diag, full, spherical, tied
covariances), `GaussianMixtureEmission`, `PoissonEmission`, `MultinomialEmission`;
`TorchDistributionEmission` wraps any torch distribution batched over states and is fitted by
gradient ascent.

Modules: `base` (the `Emission` protocol and shared helpers), `categorical`, `components`
(Gaussian components and covariance types), `gaussian`, `gmm`, `multinomial`, `poisson`,
`torch_distribution` and `build` (`build_emission`); every name is re-exported here. The
k-means used to initialise the Gaussian and Poisson families is `probgen.core.kmeans`.

Example:
    >>> import torch
    >>> from probgen.hmm.emissions import GaussianEmission
    >>> emission = GaussianEmission(n_states=2, n_features=1)
    >>> emission.log_prob(torch.zeros(5, 1)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

from probgen.core.kmeans import kmeans
from probgen.hmm.emissions.base import COVARIANCE_TYPES, Emission
from probgen.hmm.emissions.build import build_emission
from probgen.hmm.emissions.categorical import CategoricalEmission
from probgen.hmm.emissions.components import GaussianComponents, QuadraticFeatures
from probgen.hmm.emissions.gaussian import GaussianEmission
from probgen.hmm.emissions.gmm import GaussianMixtureEmission
from probgen.hmm.emissions.multinomial import MultinomialEmission
from probgen.hmm.emissions.poisson import PoissonEmission
from probgen.hmm.emissions.torch_distribution import TorchDistributionEmission

__all__ = [
    "COVARIANCE_TYPES",
    "CategoricalEmission",
    "Emission",
    "GaussianComponents",
    "GaussianEmission",
    "GaussianMixtureEmission",
    "MultinomialEmission",
    "PoissonEmission",
    "QuadraticFeatures",
    "TorchDistributionEmission",
    "build_emission",
    "kmeans",
]
