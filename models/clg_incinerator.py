"""A waste incinerator as a conditional linear Gaussian (CLG) network, simulated.

The structure is Lauritzen's (1992) waste incinerator, the textbook hybrid network: three
discrete causes, burning regime (stable/unstable), filter state (intact/defect) and waste type
(industrial/household), drive six continuous measurements through linear Gaussians: filter
efficiency (given filter and waste), dust emission (given regime, waste and efficiency), CO2
concentration (given regime), light penetrability (given dust), metal in the waste (given waste)
and metal emission (given dust and metal in the waste). The numbers (`TABLES`,
`LINEAR_GAUSSIANS`, variances scaled up so the data are well conditioned) are the generating
parameters of the simulated data; they are the known answer `fit` recovers (`REFERENCE`).
`true_model()` is that network, `build()` the structure with parameters to fit.

Given the 8 discrete configurations the six measurements are jointly Gaussian, so every query
has a closed form per configuration (`benchmarks/clg_vs_mvn.py` checks inference against it).

Example:
    >>> from probgen.recipes import clg_incinerator
    >>> clg_incinerator.data(n=4).shape
    torch.Size([4, 9])
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.data import check_positive_int
from probgen.core.errors import DataError
from probgen.networks.hybrid import HybridBayesianNetwork

FAMILY = "bn"
DISCRETE = {
    "burning_regime": ["stable", "unstable"],
    "filter_state": ["intact", "defect"],
    "waste_type": ["industrial", "household"],
}
CONTINUOUS = ["filter_efficiency", "dust_emission", "co2_concentration",
              "light_penetrability", "metal_in_waste", "metal_emission"]
EDGES = [
    ("filter_state", "filter_efficiency"), ("waste_type", "filter_efficiency"),
    ("burning_regime", "dust_emission"), ("waste_type", "dust_emission"),
    ("filter_efficiency", "dust_emission"),
    ("burning_regime", "co2_concentration"),
    ("dust_emission", "light_penetrability"),
    ("waste_type", "metal_in_waste"),
    ("dust_emission", "metal_emission"), ("metal_in_waste", "metal_emission"),
]
TABLES = {
    "burning_regime": [0.85, 0.15],
    "filter_state": [0.95, 0.05],
    "waste_type": [2 / 7, 5 / 7],
}
# variable -> (coefficients (*discrete parent configs, intercept + continuous weights),
#              variances (*discrete parent configs))
LINEAR_GAUSSIANS: dict[str, tuple[Any, Any]] = {
    # axes (filter_state, waste_type)
    "filter_efficiency": ([[[-3.2], [-0.5]], [[-3.9], [-0.4]]], [[0.02, 0.05], [0.02, 0.05]]),
    # axes (burning_regime, waste_type); weights: intercept, filter_efficiency
    "dust_emission": ([[[6.5, 1.0], [6.0, 1.0]], [[7.5, 1.0], [7.0, 1.0]]],
                      [[0.03, 0.04], [0.1, 0.1]]),
    "co2_concentration": ([[-2.0], [-1.0]], [0.1, 0.3]),
    "light_penetrability": ([3.0, -0.5], 0.25),
    "metal_in_waste": ([[0.5], [-0.5]], [0.01, 0.05]),
    # intercept, dust_emission, metal_in_waste
    "metal_emission": ([0.0, 1.0, 1.0], 0.02),
}
REFERENCE = {
    "tables": TABLES,
    "linear_gaussians": LINEAR_GAUSSIANS,
    "source": "generating parameters of the simulated data (structure after Lauritzen 1992, "
    "'Propagation of probabilities, means and variances in mixed graphical association "
    "models', JASA 87, the waste incinerator); fit recovers them",
}
SMOKE: dict[str, Any] = {"data": {"n": 300}}
# log_prob mixes a probability (discrete part) with a density (continuous part): there is no
# single grid to integrate over, as in the hybrid network's own tests
CONTRACT: dict[str, Any] = {"check_normalization": False}


def true_model() -> HybridBayesianNetwork:
    """The generating network."""
    return HybridBayesianNetwork(
        DISCRETE, CONTINUOUS, EDGES, tables=TABLES, linear_gaussians=LINEAR_GAUSSIANS
    )


def build(**overrides: Any) -> HybridBayesianNetwork:
    """The structure with parameters to fit (`overrides`: HybridBayesianNetwork settings)."""
    return HybridBayesianNetwork(DISCRETE, CONTINUOUS, EDGES, **overrides)


def data(split: str = "train", seed: int = 0, *, n: int = 2000) -> torch.Tensor:
    """Rows (n, 9) float64: the three discrete state indices, then the six measurements."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    n = check_positive_int(n, "n")
    return true_model().sample(n, seed=2 * seed + (split == "test"))
