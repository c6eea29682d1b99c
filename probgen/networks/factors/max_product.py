"""Max-product calibration of a junction tree: every variable's max-marginal, batched.

The max-marginal of variable v at state s is the largest value of the (unnormalised) product
of factors over the assignments with v = s. Two passes of max-product messages over the
junction tree (collect to the roots, distribute back) give all of them at the cost of two
eliminations; tables are kept as logs so that products of many factors neither underflow nor
turn 0 x inf into NaN. Evidence enters as (batch, n_states) indicator or likelihood tables,
so a batch of evidence rows is one pass.

Example:
    >>> import torch
    >>> from probgen.networks.factors import Factor, build_junction_tree
    >>> from probgen.networks.factors.max_product import max_calibrate
    >>> pair = Factor((0, 1), torch.tensor([[4.0, 1.0], [2.0, 3.0]], dtype=torch.float64))
    >>> tree = build_junction_tree([(0, 1)], {0: 2, 1: 2})
    >>> found, log_max = max_calibrate(tree, [pair])
    >>> [round(v, 6) for v in found[1].exp()[0].tolist()], round(float(log_max.exp()), 6)
    ([4.0, 3.0], 4.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from probgen.networks.factors.algebra import Factor
from probgen.networks.factors.junction_tree import JunctionTree, clique_potentials

__all__ = ["max_calibrate"]


def _aligned(values: Tensor, variables: Sequence[int], target: Sequence[int]) -> Tensor:
    """A (batch, *variables) table viewed on the axes of `target` (a superset), size-1 gaps."""
    order = sorted(range(len(variables)), key=lambda i: target.index(variables[i]))
    moved = values.permute(0, *(1 + i for i in order))
    present = set(variables)
    shape = [moved.shape[0]]
    sizes = iter(moved.shape[1:])
    for variable in target:
        shape.append(next(sizes) if variable in present else 1)
    return moved.reshape(shape)


def _max_onto(values: Tensor, variables: Sequence[int], keep: Sequence[int]) -> Tensor:
    """Max out of a (batch, *variables) table every axis not in `keep` (kept in table order)."""
    dims = tuple(1 + i for i, v in enumerate(variables) if v not in keep)
    return values.amax(dim=dims) if dims else values


def max_calibrate(
    tree: JunctionTree,
    factors: Sequence[Factor],
    evidence: Mapping[int, Tensor] | None = None,
    *,
    batch_size: int = 1,
) -> tuple[dict[int, Tensor], Tensor]:
    """Max-product calibration: the log max-marginal of every variable, and the log maximum.

    Args:
        tree: a junction tree of the factors' scopes (`build_junction_tree`).
        factors: unbatched non-negative factors, in the order the tree was built from.
        evidence: variable id -> (batch, n_states) indicator or likelihood (non-negative).
        batch_size: number of rows when `evidence` is empty.

    Returns:
        (log_max_marginals, log_max): variable id -> (batch, n_states) log of the largest
        unnormalised product over the assignments with that state (its maximum over states is
        `log_max`), and (batch,) log of the largest product overall (-inf where the evidence
        rules everything out).
    """
    evidence = dict(evidence or {})
    if evidence:
        batch_size = next(iter(evidence.values())).shape[0]
    potentials = clique_potentials(tree, factors)
    device = next(f.values.device for f in factors)
    cliques = tree.cliques
    tables: list[Tensor] = []
    for clique, potential in zip(cliques, potentials):
        shape = (batch_size, *(tree.cardinalities[v] for v in clique))
        table = torch.zeros(shape, dtype=torch.float64, device=device)
        if potential is not None:
            logs = torch.log(potential.values.to(torch.float64)).unsqueeze(0)
            table = table + _aligned(logs, potential.variables, clique)
        tables.append(table)
    for variable, values in evidence.items():
        clique = tree.variable_clique[variable]
        logs = torch.log(values.to(device, torch.float64))
        tables[clique] = tables[clique] + _aligned(logs, (variable,), cliques[clique])
    # collect: each clique sends the max of (its table + its children's messages) to its parent
    up: dict[int, Tensor] = {}
    collected: dict[int, Tensor] = {}
    for node in tree.collect_order:
        belief = tables[node]
        for child in tree.children[node]:
            belief = belief + _aligned(up[child], tree.separators[child], cliques[node])
        collected[node] = belief
        if tree.parent[node] >= 0:
            up[node] = _max_onto(belief, cliques[node], tree.separators[node])
    # distribute: a child receives its parent's belief without the child's own message (the
    # message is left out of the sum rather than subtracted, which -inf would turn into NaN)
    full: dict[int, Tensor] = {}
    down: dict[int, Tensor] = {}
    root_of: dict[int, int] = {}
    for node in reversed(tree.collect_order):
        parent = tree.parent[node]
        root_of[node] = node if parent < 0 else root_of[parent]
        if parent < 0:
            full[node] = collected[node]
        for child in tree.children[node]:
            base = tables[node]
            if parent >= 0:
                base = base + down[node]
            for other in tree.children[node]:
                if other != child:
                    base = base + _aligned(up[other], tree.separators[other], cliques[node])
            message = _max_onto(base, cliques[node], tree.separators[child])
            separator = tuple(v for v in cliques[node] if v in tree.separators[child])
            down[child] = _aligned(message, separator, cliques[child])
            full[child] = collected[child] + down[child]
    # a forest multiplies independent trees: a variable's max-marginal is its own tree's
    # max-marginal times the other trees' maxima
    roots = [node for node in tree.collect_order if tree.parent[node] < 0]
    root_max = {r: collected[r].reshape(batch_size, -1).amax(dim=1) for r in roots}
    log_max = torch.stack(list(root_max.values())).sum(dim=0)
    result: dict[int, Tensor] = {}
    for variable, clique in tree.variable_clique.items():
        own = _max_onto(full[clique], cliques[clique], (variable,))
        others = log_max - root_max[root_of[clique]]
        others = torch.where(torch.isfinite(log_max), others, log_max)
        result[variable] = own + others[:, None]
    return result, log_max
