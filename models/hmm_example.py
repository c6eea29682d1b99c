"""Two-state Gaussian HMM with ordered means, states summed out by the forward algorithm.

theta[i] (transition rows) ~ uniform on the simplex, mu positive and ordered with
mu[1] ~ Normal(3, 1), mu[2] ~ Normal(10, 1), y[t] ~ Normal(mu[z_t], 1), N = 100; the hidden
states are summed out with probgen's differentiable forward algorithm
(`probgen.hmm.inference.hmm_log_likelihood`, batched over chains), which equals the log_prob
of probgen's `HMM` and of its `as_pyro()` at the same parameters. Posterior
``hmm_example-hmm_example`` of posteriordb (Stan's example models).

`build()` returns the posterior as a `PyroDensity` (kind ``unnormalized``) over 4 unconstrained
coordinates (one stick-breaking coordinate per transition row, two for the ordered means);
`data(split)` gives reference draws in them, `observed()` the series.

Example:
    >>> from probgen.recipes import hmm_example
    >>> hmm_example.build().site_names  # doctest: +SKIP
    ['theta', 'mu']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from probgen.recipes import _shared_data
from probgen.recipes._posteriordb_recipe import PosteriorRecipe, element_columns, reference_points
from pyro.distributions import constraints

from probgen.hmm.inference import hmm_log_likelihood

FAMILY = "posterior"
POSTERIOR = "hmm_example-hmm_example"
SMOKE: dict[str, Any] = {"build": {}, "data": {}, "fit": {}}
CONTRACT = {"check_sampling": False}
REFERENCE = {"posterior": POSTERIOR, "source": "posteriordb reference draws (Stan NUTS)"}


class HMMExample(PosteriorRecipe):
    """The two-state Gaussian HMM posterior (see the module docstring)."""

    posterior_name = POSTERIOR

    @staticmethod
    def pyro_model(y: torch.Tensor, n_states: int = 2) -> None:
        ones = y.new_ones(n_states, n_states)
        theta = pyro.sample("theta", dist.Dirichlet(ones).to_event(1))
        mu = pyro.sample(
            "mu",
            dist.ImproperUniform(constraints.positive_ordered_vector, (), (n_states,)).to_event(0),
        )
        prior_means = y.new_tensor([3.0, 10.0])
        pyro.factor("mu_prior", dist.Normal(prior_means, 1.0).log_prob(mu).sum(-1))
        emission = dist.Normal(mu[..., None, :], 1.0).log_prob(y[:, None])
        # Uniform initial logits: Stan's forward pass starts from the first emission alone;
        # the two differ by the constant log(n_states).
        initial_logits = y.new_zeros(n_states)
        log_likelihood = hmm_log_likelihood(initial_logits, theta.log(), emission)
        pyro.factor("y", log_likelihood)

    @staticmethod
    def arguments(observed: dict[str, Any]) -> dict[str, Any]:
        return {"y": torch.as_tensor(observed["y"], dtype=torch.float64), "n_states": 2}

    @staticmethod
    def element_name(site: str, index: tuple[int, ...]) -> str:
        if site == "theta":  # Stan's array of simplexes theta[i][j] is named theta{i}[{j}]
            return f"theta{index[0] + 1}[{index[1] + 1}]"
        return f"{site}[{','.join(str(i + 1) for i in index)}]"

    @staticmethod
    def reference_to_sites(draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        theta = np.stack(
            [element_columns(draws, "theta1", 2), element_columns(draws, "theta2", 2)], axis=1
        )
        return {"theta": theta, "mu": element_columns(draws, "mu", 2)}


def build(**overrides: Any) -> HMMExample:
    """The posterior (`observed=` replaces the posteriordb data: N, K, y)."""
    return HMMExample(**overrides)


def observed() -> dict[str, Any]:
    """The series: N, K (= 2 states), y."""
    return _shared_data.posteriordb_data(POSTERIOR)


def data(split: str = "train", seed: int = 0, **options: Any) -> torch.Tensor:
    """Reference posterior draws as unconstrained vectors (n, 4)."""
    return reference_points(HMMExample, split)
