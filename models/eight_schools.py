"""Eight schools, non-centered: hierarchical normal model of coaching effects (posteriordb).

mu ~ Normal(0, 5), tau ~ HalfCauchy(5), theta_trans[j] ~ Normal(0, 1),
theta[j] = mu + tau * theta_trans[j], y[j] ~ Normal(theta[j], sigma[j]); posterior
``eight_schools-eight_schools_noncentered`` of posteriordb (Rubin 1981; Gelman et al. 2013).

`build()` returns the posterior as a `PyroDensity` (kind ``unnormalized``) over its 10
unconstrained coordinates (mu, log tau, theta_trans); `theta` is recorded as a deterministic
site. `data(split)` gives the reference posterior draws in those coordinates (what the density
contract scores); `observed()` gives the schools' data (J, y: the effects, sigma: their
standard errors), and `build(observed=...)` conditions on other data in that layout. `fit` is a
no-op (nothing to fit).
`sample(n, seed=)` runs a short vectorised MH chain; the contract's sampling checks are off
(`CONTRACT`) to keep the default test run short.

Example:
    >>> from probgen.recipes import eight_schools
    >>> posterior = eight_schools.build()  # doctest: +SKIP
    >>> posterior.site_names  # doctest: +SKIP
    ['mu', 'tau', 'theta_trans']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from probgen.recipes._posteriordb_recipe import PosteriorRecipe, element_columns, recipe_functions

FAMILY = "posterior"
POSTERIOR = "eight_schools-eight_schools_noncentered"
SMOKE: dict[str, Any] = {"build": {}, "data": {}, "fit": {}}
CONTRACT = {"check_sampling": False}
REFERENCE = {
    "posterior": POSTERIOR,
    "source": "posteriordb reference draws (Stan NUTS, 10 chains x 1000 draws)",
}


class EightSchools(PosteriorRecipe):
    """The non-centered eight schools posterior (see the module docstring)."""

    posterior_name = POSTERIOR
    observed_names = ("y", "sigma")

    @staticmethod
    def pyro_model(y: torch.Tensor, sigma: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(y.new_tensor(5.0)))
        with pyro.plate("schools", y.shape[-1]):
            theta_trans = pyro.sample("theta_trans", dist.Normal(y.new_tensor(0.0), 1.0))
            theta = pyro.deterministic("theta", mu + tau * theta_trans)
            pyro.sample("y", dist.Normal(theta, sigma), obs=y)

    @staticmethod
    def reference_to_sites(draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        theta = element_columns(draws, "theta", 8)
        mu, tau = draws["mu"], draws["tau"]
        return {"mu": mu, "tau": tau, "theta_trans": (theta - mu[:, None]) / tau[:, None]}


build, observed, data = recipe_functions(EightSchools)
