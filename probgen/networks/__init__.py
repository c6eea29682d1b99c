"""Bayesian and Markov networks: exact and approximate queries, parameter and structure learning.

Example:
    >>> from probgen.networks import BayesianNetwork
    >>> BayesianNetwork([("rain", "wet")]).variables
    ['rain', 'wet']
"""

from __future__ import annotations

from probgen.networks.bayesnet import BayesianNetwork, read_bif
from probgen.networks.dynamic import DynamicBayesianNetwork
from probgen.networks.dynamic_structure import learn_dbn_structure
from probgen.networks.hybrid import HybridBayesianNetwork
from probgen.networks.markovnet import MarkovNetwork
from probgen.networks.structure import learn_structure

__all__ = [
    "BayesianNetwork",
    "DynamicBayesianNetwork",
    "HybridBayesianNetwork",
    "MarkovNetwork",
    "learn_dbn_structure",
    "learn_structure",
    "read_bif",
]
