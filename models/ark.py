"""AR(5) time series: y[t] ~ Normal(alpha + sum_k beta[k] y[t-k], sigma) (posteriordb arK).

alpha ~ Normal(0, 10), beta[k] ~ Normal(0, 10), sigma ~ HalfCauchy(2.5), T = 200 simulated
observations; posterior ``arK-arK`` of posteriordb (Stan benchmark models).

`build()` returns the posterior as a `PyroDensity` (kind ``unnormalized``) over (alpha, beta,
log sigma); `data(split)` gives reference draws in those coordinates (n, 7), `observed()` the
series (K: the order, T: the length, y), and `build(observed=...)` conditions on another series
in that layout.

Example:
    >>> from probgen.recipes import ark
    >>> ark.build().event_shape  # doctest: +SKIP
    torch.Size([7])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from probgen.recipes._posteriordb_recipe import PosteriorRecipe, element_columns, recipe_functions

FAMILY = "posterior"
POSTERIOR = "arK-arK"
SMOKE: dict[str, Any] = {"build": {}, "data": {}, "fit": {}}
CONTRACT = {"check_sampling": False}
REFERENCE = {"posterior": POSTERIOR, "source": "posteriordb reference draws (Stan NUTS)"}


class ARK(PosteriorRecipe):
    """The AR(K) posterior (see the module docstring)."""

    posterior_name = POSTERIOR

    @staticmethod
    def pyro_model(targets: torch.Tensor, lags: torch.Tensor) -> None:
        order = lags.shape[-1]
        zero = targets.new_tensor(0.0)
        alpha = pyro.sample("alpha", dist.Normal(zero, 10.0))
        beta = pyro.sample("beta", dist.Normal(zero, 10.0).expand([order]).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfCauchy(targets.new_tensor(2.5)))
        mean = alpha[..., None] + (beta[..., None, :] * lags).sum(-1)
        pyro.sample("y", dist.Normal(mean, sigma[..., None]).to_event(1), obs=targets)

    @staticmethod
    def arguments(observed: dict[str, Any]) -> dict[str, Any]:
        series = torch.as_tensor(observed["y"], dtype=torch.float64)
        order = int(observed["K"])
        steps = series.shape[0]
        # lags[t, k] = y[t - k - 1] for the targets y[order:].
        lags = torch.stack([series[order - k - 1 : steps - k - 1] for k in range(order)], -1)
        return {"targets": series[order:], "lags": lags}

    @staticmethod
    def reference_to_sites(draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "alpha": draws["alpha"],
            "beta": element_columns(draws, "beta", 5),
            "sigma": draws["sigma"],
        }


build, observed, data = recipe_functions(ARK)
