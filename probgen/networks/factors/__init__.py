"""Discrete factor algebra: products, marginalisation, variable elimination, junction trees, BP.

Pure tensor functions over `Factor`s (a table whose axes are integer variable ids, optionally
with one leading batch axis). Every contraction is one `torch.einsum` call (opt_einsum picks the
pairwise order), so a batch of evidence sets (one row per query) is one tensor contraction and
runs on the tables' device. Tables hold probabilities (not logs); running products are rescaled
and the scales returned as logs so that long eliminations do not underflow.

Modules: `algebra` (the factor table, products, evidence), `orders` (elimination orders),
`elimination` (variable elimination, backward sampling), `junction_tree` (tree and clique
potentials), `calibration` (dense batched junction-tree calibration), `loopy` (loopy BP),
`max_product` (max-product calibration: max-marginals).

Example:
    >>> import torch
    >>> from probgen.networks.factors import Factor, eliminate
    >>> prior = Factor((0,), torch.tensor([0.3, 0.7], dtype=torch.float64))
    >>> likelihood = Factor((0, 1), torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64))
    >>> table, log_scale = eliminate([prior, likelihood], keep=(1,))
    >>> (table.values * log_scale.exp()).squeeze(0).tolist()
    [0.41, 0.59]
"""

from __future__ import annotations

from probgen.networks.factors.algebra import Factor, contract, evidence_factors
from probgen.networks.factors.calibration import (
    DenseTree,
    belief_marginal,
    calibrate_dense,
    compile_dense,
)
from probgen.networks.factors.elimination import eliminate, max_eliminate, sample_by_elimination
from probgen.networks.factors.junction_tree import (
    JunctionTree,
    build_junction_tree,
    clique_potentials,
)
from probgen.networks.factors.loopy import loopy_belief_propagation
from probgen.networks.factors.max_product import max_calibrate
from probgen.networks.factors.orders import max_clique_size, min_fill_order, moral_adjacency

__all__ = [
    "Factor",
    "JunctionTree",
    "contract",
    "evidence_factors",
    "moral_adjacency",
    "min_fill_order",
    "max_clique_size",
    "eliminate",
    "max_eliminate",
    "build_junction_tree",
    "clique_potentials",
    "loopy_belief_propagation",
    "max_calibrate",
    "sample_by_elimination",
    "DenseTree",
    "compile_dense",
    "calibrate_dense",
    "belief_marginal",
]
