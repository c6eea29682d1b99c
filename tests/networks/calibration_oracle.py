"""The older message-passing junction-tree calibration, kept as a test oracle.

The library calibrates with `probgen.networks.factors.calibration.calibrate_dense`; this
factor-by-factor Shafer-Shenoy version computes the same messages another way, so tests compare
the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.networks.factors.algebra import Factor, _normalise, contract
from probgen.networks.factors.junction_tree import JunctionTree


@dataclass
class Calibration:
    """Messages of a calibrated junction tree for a batch of evidence sets.

    Attributes:
        upward: message from each clique to its parent (normalised per batch row).
        downward: message from each clique's parent to it.
        log_evidence: log probability (or log partition function) of each row's evidence.
        evidence: the evidence factors entered at each clique.
        batch_size: number of evidence rows.
    """

    upward: list[Factor | None]
    downward: list[Factor | None]
    log_evidence: Tensor
    evidence: list[list[Factor]]
    batch_size: int


def calibrate(
    tree: JunctionTree,
    potentials: Sequence[Factor | None],
    evidence: Mapping[int, Factor] | None = None,
    *,
    batch_size: int = 1,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Calibration:
    """Two-pass sum-product message passing on a junction tree, batched over evidence sets.

    Shafer-Shenoy messages, each one einsum over the clique's factors (clique tables are never
    materialised). `calibrate_dense` (Hugin, dense clique tables) is faster for the batched
    queries of moderate networks and is what `BayesianNetwork` uses.

    Args:
        tree: from `build_junction_tree`.
        potentials: from `clique_potentials` (reused across calls; evidence never touches them).
        evidence: variable id -> batched indicator or likelihood factor (batch, card).
        batch_size: number of evidence rows (taken from `evidence` when it is given).
        dtype: dtype of the log evidence.
        device: device of the log evidence.

    Returns:
        The messages and each row's log evidence (`-inf` for evidence of probability zero).
    """
    evidence = dict(evidence or {})
    if evidence:
        batch_size = next(iter(evidence.values())).values.shape[0]
    per_clique: list[list[Factor]] = [[] for _ in tree.cliques]
    for variable, factor in evidence.items():
        per_clique[tree.variable_clique[variable]].append(factor)
    count = len(tree.cliques)
    upward: list[Factor | None] = [None] * count
    downward: list[Factor | None] = [None] * count
    if device is None:
        device = next((p.values.device for p in potentials if p is not None), "cpu")
    log_evidence = torch.zeros(batch_size, dtype=dtype, device=device)

    def local(index: int, skip_child: int | None, with_parent: bool) -> list[Factor]:
        operands = list(per_clique[index])
        if potentials[index] is not None:
            operands.append(potentials[index])
        for child in tree.children[index]:
            if child != skip_child and upward[child] is not None:
                operands.append(upward[child])
        if with_parent and downward[index] is not None:
            operands.append(downward[index])
        return operands

    def ones_over(variables: tuple[int, ...]) -> Factor:
        shape = (batch_size, *(tree.cardinalities[v] for v in variables))
        return Factor(variables, torch.ones(shape, dtype=dtype, device=device), True)

    for index in tree.collect_order:
        operands = local(index, None, False)
        keep = tree.separators[index] if tree.parent[index] >= 0 else ()
        if not operands:
            operands = [ones_over(tree.cliques[index])]
        message, log_total = _normalise(contract(operands, keep, batch_size=batch_size))
        log_evidence = log_evidence + log_total.to(dtype)
        if tree.parent[index] >= 0:
            upward[index] = message
    for index in reversed(tree.collect_order):
        for child in tree.children[index]:
            operands = local(index, child, True)
            if not operands:
                operands = [ones_over(tree.separators[child])]
            keep = tree.separators[child]
            missing = [v for v in keep if not any(v in f.variables for f in operands)]
            if missing:
                operands.append(ones_over(tuple(missing)))
            downward[child], _ = _normalise(contract(operands, keep, batch_size=batch_size))
    return Calibration(upward, downward, log_evidence, per_clique, batch_size)


def clique_marginal(
    tree: JunctionTree,
    potentials: Sequence[Factor | None],
    calibration: Calibration,
    clique: int,
    keep: Sequence[int],
) -> Factor:
    """Posterior over `keep` (a subset of one clique's variables), normalised per batch row."""
    operands = list(calibration.evidence[clique])
    if potentials[clique] is not None:
        operands.append(potentials[clique])
    operands.extend(calibration.upward[c] for c in tree.children[clique])
    if calibration.downward[clique] is not None:
        operands.append(calibration.downward[clique])
    operands = [f for f in operands if f is not None]
    missing = [v for v in keep if not any(v in f.variables for f in operands)]
    for v in missing:
        ones = torch.ones(tree.cardinalities[v], dtype=torch.float64)
        if operands:
            ones = ones.to(operands[0].values.device)
        operands.append(Factor((v,), ones))
    marginal, _ = _normalise(contract(operands, tuple(keep), batch_size=calibration.batch_size))
    return marginal
