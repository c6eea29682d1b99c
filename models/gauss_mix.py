"""Two-component 1-D Gaussian mixture with ordered means (posteriordb low_dim_gauss_mix).

mu (ordered) with mu[k] ~ Normal(0, 2), sigma[k] ~ HalfNormal(2), theta ~ Beta(5, 5),
y[n] ~ theta Normal(mu[1], sigma[1]) + (1 - theta) Normal(mu[2], sigma[2]), N = 1000; the
component labels are summed out. Posterior ``low_dim_gauss_mix-low_dim_gauss_mix``.

`build()` returns the posterior as a `PyroDensity` (kind ``unnormalized``) over the 5
unconstrained coordinates; `data(split)` gives reference draws in them, `observed()` the data
(N, y), and `build(observed=...)` conditions on other data in that layout.

Example:
    >>> from probgen.recipes import gauss_mix
    >>> gauss_mix.build().site_names  # doctest: +SKIP
    ['mu', 'sigma', 'theta']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from probgen.recipes._posteriordb_recipe import PosteriorRecipe, element_columns, recipe_functions
from pyro.distributions import constraints

FAMILY = "posterior"
POSTERIOR = "low_dim_gauss_mix-low_dim_gauss_mix"
SMOKE: dict[str, Any] = {"build": {}, "data": {}, "fit": {}}
CONTRACT = {"check_sampling": False}
REFERENCE = {"posterior": POSTERIOR, "source": "posteriordb reference draws (Stan NUTS)"}


class GaussMix(PosteriorRecipe):
    """The two-component mixture posterior (see the module docstring)."""

    posterior_name = POSTERIOR
    observed_names = ("y",)

    @staticmethod
    def pyro_model(y: torch.Tensor) -> None:
        mu = pyro.sample(
            "mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)).to_event(0)
        )
        # Stan's `mu ~ normal(0, 2)` on an ordered vector: the prior density on the elements.
        pyro.factor("mu_prior", dist.Normal(y.new_tensor(0.0), 2.0).log_prob(mu).sum(-1))
        sigma = pyro.sample("sigma", dist.HalfNormal(y.new_tensor(2.0)).expand([2]).to_event(1))
        theta = pyro.sample("theta", dist.Beta(y.new_tensor(5.0), 5.0))
        components = dist.Normal(mu[..., None, :], sigma[..., None, :]).log_prob(y[:, None])
        weights = torch.stack([theta.log(), torch.log1p(-theta)], -1)[..., None, :]
        pyro.factor("y", torch.logsumexp(components + weights, -1).sum(-1))

    @staticmethod
    def reference_to_sites(draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "mu": element_columns(draws, "mu", 2),
            "sigma": element_columns(draws, "sigma", 2),
            "theta": draws["theta"],
        }


build, observed, data = recipe_functions(GaussMix)
