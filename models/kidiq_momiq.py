"""Kid IQ on mother's IQ: linear regression with flat priors on the coefficients (posteriordb).

kid_score ~ Normal(beta[1] + beta[2] * mom_iq, sigma), flat (improper) priors on beta,
sigma ~ HalfCauchy(2.5); posterior ``kidiq-kidscore_momiq`` of posteriordb (Gelman & Hill 2006,
ch. 3). The two coefficients are strongly correlated (mom_iq is not centred), which a
random walk with an adapted dense covariance handles well.

`build()` returns the posterior as a `PyroDensity` (kind ``unnormalized``) over (beta, log
sigma); `data(split)` gives reference draws in those coordinates, `observed()` the data (N,
kid_score, mom_iq, mom_hs, ...), and `build(observed=...)` conditions on other data in that layout.

Example:
    >>> from probgen.recipes import kidiq_momiq
    >>> kidiq_momiq.build().site_names  # doctest: +SKIP
    ['beta', 'sigma']
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
POSTERIOR = "kidiq-kidscore_momiq"
SMOKE: dict[str, Any] = {"build": {}, "data": {}, "fit": {}}
CONTRACT = {"check_sampling": False}
REFERENCE = {"posterior": POSTERIOR, "source": "posteriordb reference draws (Stan NUTS)"}


class KidiqMomiq(PosteriorRecipe):
    """The kid-score-on-mom-IQ regression posterior (see the module docstring)."""

    posterior_name = POSTERIOR
    observed_names = ("kid_score", "mom_iq")

    @staticmethod
    def pyro_model(kid_score: torch.Tensor, mom_iq: torch.Tensor) -> None:
        beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)).to_event(0))
        sigma = pyro.sample("sigma", dist.HalfCauchy(kid_score.new_tensor(2.5)))
        mean = beta[..., :1] + beta[..., 1:] * mom_iq
        pyro.sample("kid_score", dist.Normal(mean, sigma[..., None]).to_event(1), obs=kid_score)

    @staticmethod
    def reference_to_sites(draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"beta": element_columns(draws, "beta", 2), "sigma": draws["sigma"]}


build, observed, data = recipe_functions(KidiqMomiq)
