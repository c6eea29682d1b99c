"""Discrete factor algebra: products, marginalisation, variable elimination, junction trees, BP.

Pure tensor functions over `Factor`s (a table whose axes are integer variable ids, optionally
with one leading batch axis). Every contraction is one `torch.einsum` call (opt_einsum picks the
pairwise order), so a batch of evidence sets (one row per query) is one tensor contraction and
runs on the tables' device. Tables hold probabilities (not logs); running products are rescaled
and the scales returned as logs so that long eliminations do not underflow.

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

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "Factor",
    "JunctionTree",
    "Calibration",
    "contract",
    "evidence_factors",
    "moral_adjacency",
    "min_fill_order",
    "max_clique_size",
    "eliminate",
    "max_eliminate",
    "build_junction_tree",
    "clique_potentials",
    "calibrate",
    "clique_marginal",
    "loopy_belief_propagation",
    "sample_by_elimination",
    "DenseTree",
    "compile_dense",
    "calibrate_dense",
    "belief_marginal",
]


@dataclass(frozen=True)
class Factor:
    """A table over integer variable ids.

    Attributes:
        variables: the variable id of each table axis (after the batch axis when `batched`).
        values: tensor of shape (*cardinalities) or, when `batched`, (batch, *cardinalities).
        batched: whether `values` has a leading batch axis.
    """

    variables: tuple[int, ...]
    values: Tensor
    batched: bool = False

    def __post_init__(self) -> None:
        expected = len(self.variables) + int(self.batched)
        if self.values.dim() != expected:
            raise ValueError(
                f"Factor over {self.variables} (batched={self.batched}) needs {expected} "
                f"dimensions, got shape {tuple(self.values.shape)}"
            )


# ---- contraction ----------------------------------------------------------------------------
def contract(
    factors: Sequence[Factor], keep: Sequence[int], *, batch_size: int | None = None
) -> Factor:
    """Multiply `factors` and sum out every variable not in `keep`, as one einsum.

    Args:
        factors: the factors to multiply (batched ones share the batch size).
        keep: variable ids of the result's axes, in order.
        batch_size: batch size of the result when no factor is batched but a batched result is
            wanted (the result is broadcast); None keeps it unbatched.

    Returns:
        The product factor over `keep` (batched when any input is).
    """
    keep = tuple(keep)
    if not factors:
        raise ValueError("contract needs at least one factor")
    index: dict[int, int] = {}
    for factor in factors:
        for variable in factor.variables:
            index.setdefault(variable, len(index))
    for variable in keep:
        if variable not in index:
            raise ValueError(f"variable {variable} to keep is in no factor")
    batch_axis = len(index)
    if batch_axis >= 52:
        raise ValueError("contract supports at most 51 distinct variables per call")
    operands: list = []
    batched = False
    for factor in factors:
        axes = [index[v] for v in factor.variables]
        if factor.batched:
            axes = [batch_axis, *axes]
            batched = True
        operands.extend([factor.values, axes])
    output = [index[v] for v in keep]
    if batched:
        output = [batch_axis, *output]
    values = torch.einsum(*operands, output)
    if not batched and batch_size is not None:
        values = values.unsqueeze(0).expand(batch_size, *values.shape)
        batched = True
    return Factor(keep, values, batched)


def evidence_factors(
    observed: Tensor, variables: Sequence[int], cardinalities: Mapping[int, int] | Sequence[int]
) -> dict[int, Factor]:
    """Indicator factors for a batch of (partial) evidence.

    Args:
        observed: long tensor (batch, len(variables)); -1 marks "no evidence" in that row.
        variables: the variable id of each column.
        cardinalities: number of states of each variable id.

    Returns:
        Mapping variable id -> batched Factor of 0/1 (all ones where that row has no evidence).
    """
    result: dict[int, Factor] = {}
    for column, variable in enumerate(variables):
        states = observed[:, column]
        card = int(cardinalities[variable])
        hits = torch.arange(card, device=observed.device)[None, :] == states[:, None]
        indicator = torch.where((states < 0)[:, None], torch.ones_like(hits), hits)
        result[variable] = Factor((variable,), indicator.to(torch.float64), True)
    return result


# ---- graphs and elimination orders ----------------------------------------------------------
def moral_adjacency(
    scopes: Iterable[Sequence[int]], variables: Iterable[int] = ()
) -> dict[int, set[int]]:
    """Interaction graph of factor scopes (each scope becomes a clique)."""
    adjacency: dict[int, set[int]] = {v: set() for v in variables}
    for scope in scopes:
        for v in scope:
            adjacency.setdefault(v, set()).update(u for u in scope if u != v)
    return adjacency


def min_fill_order(
    adjacency: Mapping[int, set[int]],
    cardinalities: Mapping[int, int] | Sequence[int],
    *,
    eliminate: Iterable[int] | None = None,
    weighted: bool = True,
) -> list[int]:
    """Greedy (weighted) min-fill elimination order.

    Each step eliminates the variable whose elimination adds the fewest fill edges (weighted:
    the smallest sum of products of the cardinalities of the pairs joined), ties broken by the
    size of the table it creates. Scores are updated only around the eliminated variable.

    Args:
        adjacency: interaction graph (variable -> neighbours).
        cardinalities: number of states of each variable.
        eliminate: the variables to order (default all); the others are never eliminated but
            their edges count.
        weighted: weight fill edges by cardinality products (else count them).

    Returns:
        The elimination order of `eliminate`.
    """
    graph = {v: set(n) for v, n in adjacency.items()}
    remaining = set(graph) if eliminate is None else set(eliminate)

    def score(v: int) -> tuple[float, float]:
        neighbours = list(graph[v])
        fill = 0.0
        for i, a in enumerate(neighbours):
            links = graph[a]
            for b in neighbours[i + 1 :]:
                if b not in links:
                    fill += cardinalities[a] * cardinalities[b] if weighted else 1.0
        size = math.log(cardinalities[v]) + sum(math.log(cardinalities[u]) for u in neighbours)
        return fill, size

    scores = {v: score(v) for v in remaining}
    order: list[int] = []
    while remaining:
        best = min(remaining, key=lambda v: (scores[v], v))
        neighbours = graph.pop(best)
        for a in neighbours:
            graph[a].discard(best)
            graph[a].update(u for u in neighbours if u != a)
        remaining.discard(best)
        order.append(best)
        affected = set(neighbours)
        for a in neighbours:
            affected.update(graph[a])
        for v in affected & remaining:
            scores[v] = score(v)
        del scores[best]
    return order


def max_clique_size(
    adjacency: Mapping[int, set[int]],
    cardinalities: Mapping[int, int] | Sequence[int],
    order: Sequence[int],
) -> int:
    """Number of entries of the largest table created by eliminating in `order`."""
    graph = {v: set(n) for v, n in adjacency.items()}
    largest = 1
    for v in order:
        neighbours = graph.pop(v)
        size = cardinalities[v]
        for u in neighbours:
            size *= cardinalities[u]
            graph[u].discard(v)
            graph[u].update(w for w in neighbours if w != u)
        largest = max(largest, size)
    return int(largest)


# ---- variable elimination -------------------------------------------------------------------
def _rescale(factor: Factor) -> tuple[Factor, Tensor]:
    """Divide a factor by its largest entry (per batch row); return the log of that scale."""
    values = factor.values
    if factor.batched:
        scale = values.reshape(values.shape[0], -1).amax(dim=1) if values.dim() > 1 else values
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        shaped = safe.reshape(-1, *([1] * (values.dim() - 1)))
        return Factor(factor.variables, values / shaped, True), torch.log(scale)
    scale = values.amax() if values.numel() else values.new_tensor(1.0)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return Factor(factor.variables, values / safe, False), torch.log(scale).reshape(1)


def _sum_out(
    factors: Sequence[Factor], variables: Iterable[int], order: Sequence[int] | None
) -> tuple[list[Factor], Tensor, dict[int, int], int]:
    """Sum `variables` out of a pool of factors; return the pool, log scale, cards, batch."""
    cards: dict[int, int] = {}
    for factor in factors:
        for axis, variable in enumerate(factor.variables):
            cards[variable] = factor.values.shape[axis + int(factor.batched)]
    variables = set(variables)
    if order is None:
        adjacency = moral_adjacency((f.variables for f in factors), cards)
        order = min_fill_order(adjacency, cards, eliminate=variables & set(cards))
    pool = list(factors)
    batch = max((f.values.shape[0] for f in factors if f.batched), default=1)
    log_scale = torch.zeros(batch, dtype=torch.float64, device=factors[0].values.device)
    for variable in order:
        involved = [f for f in pool if variable in f.variables]
        if not involved:
            continue
        pool = [f for f in pool if variable not in f.variables]
        scope: list[int] = []
        for f in involved:
            scope.extend(u for u in f.variables if u != variable and u not in scope)
        product, scale = _rescale(contract(involved, scope))
        log_scale = log_scale + scale.to(log_scale.dtype)
        pool.append(product)
    return pool, log_scale, cards, batch


def eliminate(
    factors: Sequence[Factor],
    keep: Sequence[int] = (),
    *,
    order: Sequence[int] | None = None,
) -> tuple[Factor, Tensor]:
    """Sum-product variable elimination: sum out every variable not in `keep`.

    Args:
        factors: the factors (some may be batched; all batched ones share one batch size).
        keep: the variables of the result, in order.
        order: elimination order of the summed-out variables (default weighted min-fill).

    Returns:
        (table, log_scale): a batched factor over `keep` with shape (batch, *cards) (batch 1
        when no input is batched) and the log of the scale it was divided by, shape (batch,);
        the true result is `table.values * exp(log_scale)`.
    """
    keep = tuple(keep)
    every = {v for f in factors for v in f.variables}
    pool, log_scale, cards, batch = _sum_out(factors, every - set(keep), order)
    for variable in keep:
        if not any(variable in f.variables for f in pool):
            raise ValueError(f"variable {variable} to keep is in no factor")
    if not pool:
        pool = [Factor((), factors[0].values.new_ones(()))]
    result, scale = _rescale(contract(pool, keep, batch_size=batch))
    return result, log_scale + scale.to(log_scale.dtype)


def max_eliminate(
    factors: Sequence[Factor],
    maximise: Sequence[int],
    *,
    order: Sequence[int] | None = None,
    sum_order: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """MAP by elimination: sum out the variables not in `maximise`, then max out `maximise`.

    With `maximise` holding every variable this is the most probable explanation (MPE).

    Args:
        factors: the factors (some may be batched).
        maximise: the variables whose jointly most probable assignment is wanted.
        order: elimination order of `maximise` (default weighted min-fill).
        sum_order: elimination order of the summed-out variables (default weighted min-fill).

    Returns:
        (assignment, log_value): long tensor (batch, len(maximise)) of the best states, and the
        log of the (unnormalised) maximal value per batch row.
    """
    maximise = tuple(maximise)
    every = {v for f in factors for v in f.variables}
    pool, log_scale, cards, batch = _sum_out(factors, every - set(maximise), sum_order)
    if order is None:
        adjacency = moral_adjacency((f.variables for f in pool), maximise)
        order = min_fill_order(adjacency, cards, eliminate=maximise)
    # Max out the MAP variables one by one, keeping argmax tables for the traceback.
    traceback: list[tuple[int, Factor]] = []
    for variable in order:
        involved = [f for f in pool if variable in f.variables]
        pool = [f for f in pool if variable not in f.variables]
        scope: list[int] = []
        for f in involved:
            scope.extend(u for u in f.variables if u != variable and u not in scope)
        joint = contract(involved, (variable, *scope), batch_size=batch)
        best, best_state = joint.values.max(dim=1)
        traceback.append((variable, Factor(tuple(scope), best_state, True)))
        reduced, scale = _rescale(Factor(tuple(scope), best, True))
        log_scale = log_scale + scale
        pool.append(reduced)
    final = torch.ones(batch, dtype=log_scale.dtype, device=log_scale.device)
    for f in pool:
        final = final * f.values.reshape(-1).to(final.dtype).expand(batch)
    log_value = log_scale + torch.log(final)
    chosen: dict[int, Tensor] = {}
    rows = torch.arange(batch, device=log_scale.device)
    for variable, argmax in reversed(traceback):
        index = [rows] + [chosen[u] for u in argmax.variables]
        chosen[variable] = argmax.values[tuple(index)]
    assignment = torch.stack([chosen[v] for v in maximise], dim=1)
    return assignment, log_value


# ---- junction trees -------------------------------------------------------------------------
@dataclass
class JunctionTree:
    """A junction tree (forest) built from an elimination order.

    Attributes:
        cliques: variables of each clique.
        parent: parent clique index (-1 for a root).
        children: child clique indices of each clique.
        separators: variables shared with the parent.
        collect_order: cliques with every child before its parent.
        factor_clique: the clique each input factor is assigned to.
        variable_clique: a smallest clique containing each variable.
        cardinalities: number of states of each variable.
    """

    cliques: list[tuple[int, ...]]
    parent: list[int]
    children: list[list[int]]
    separators: list[tuple[int, ...]]
    collect_order: list[int]
    factor_clique: list[int]
    variable_clique: dict[int, int]
    cardinalities: dict[int, int]
    max_clique_entries: int = 0
    potentials: list[Factor | None] = field(default_factory=list)


def build_junction_tree(
    scopes: Sequence[Sequence[int]],
    cardinalities: Mapping[int, int],
    *,
    order: Sequence[int] | None = None,
    weighted: bool = True,
) -> JunctionTree:
    """Junction tree of the factors with these scopes, from a (weighted) min-fill order.

    The elimination cliques form a tree (each clique's parent is the clique of the first of its
    other variables to be eliminated); cliques contained in a neighbour are merged away.

    Args:
        scopes: the variable ids of each factor.
        cardinalities: number of states of each variable id.
        order: elimination order of all variables (default weighted min-fill).
        weighted: use weighted min-fill for the default order.
    """
    cards = {int(v): int(c) for v, c in cardinalities.items()}
    adjacency = moral_adjacency(scopes, cards)
    if order is None:
        order = min_fill_order(adjacency, cards, weighted=weighted)
    position = {v: i for i, v in enumerate(order)}
    graph = {v: set(n) for v, n in adjacency.items()}
    cliques: list[tuple[int, ...]] = []
    parent: list[int] = []
    for v in order:
        neighbours = graph.pop(v)
        for u in neighbours:
            graph[u].discard(v)
            graph[u].update(w for w in neighbours if w != u)
        rest = sorted(neighbours, key=position.__getitem__)
        cliques.append((v, *rest))
        parent.append(position[rest[0]] if rest else -1)
    count = len(cliques)
    children: list[list[int]] = [[] for _ in range(count)]
    for i, p in enumerate(parent):
        if p >= 0:
            children[p].append(i)
    alias = list(range(count))
    alive = [True] * count
    # Children have smaller indices than parents, so a clique's children are final when it is
    # visited; a clique contained in one of its children is merged into that child.
    for j in range(count):
        contained = set(cliques[j])
        absorber = next((i for i in children[j] if contained <= set(cliques[i])), None)
        if absorber is None:
            continue
        alive[j] = False
        alias[j] = absorber
        for k in children[j]:
            if k != absorber:
                parent[k] = absorber
                children[absorber].append(k)
        parent[absorber] = parent[j]
        if parent[j] >= 0:
            siblings = children[parent[j]]
            siblings[siblings.index(j)] = absorber
        children[j] = []

    def resolve(i: int) -> int:
        while alias[i] != i:
            i = alias[i]
        return i

    kept = [i for i in range(count) if alive[i]]
    new_index = {old: new for new, old in enumerate(kept)}
    new_cliques = [cliques[i] for i in kept]
    new_parent = [new_index[parent[i]] if parent[i] >= 0 else -1 for i in kept]
    new_children = [[new_index[c] for c in children[i]] for i in kept]
    separators = [
        tuple(v for v in new_cliques[i] if p >= 0 and v in set(new_cliques[p]))
        for i, p in enumerate(new_parent)
    ]
    collect: list[int] = []
    for root in (i for i, p in enumerate(new_parent) if p < 0):
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                collect.append(node)
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in new_children[node])
    factor_clique = []
    for scope in scopes:
        if scope:
            first = min(scope, key=position.__getitem__)
            factor_clique.append(new_index[resolve(position[first])])
        else:
            factor_clique.append(collect[-1] if collect else 0)
    variable_clique: dict[int, int] = {}
    sizes = [math.prod(cards[v] for v in c) for c in new_cliques]
    for index, clique in enumerate(new_cliques):
        for v in clique:
            best = variable_clique.get(v)
            if best is None or sizes[index] < sizes[best]:
                variable_clique[v] = index
    return JunctionTree(
        cliques=new_cliques,
        parent=new_parent,
        children=new_children,
        separators=separators,
        collect_order=collect,
        factor_clique=factor_clique,
        variable_clique=variable_clique,
        cardinalities=cards,
        max_clique_entries=max(sizes, default=1),
    )


def clique_potentials(tree: JunctionTree, factors: Sequence[Factor]) -> list[Factor | None]:
    """Product of the factors assigned to each clique, over the clique's variables.

    Cliques with no factor get None (a table of ones that is never built).
    """
    assigned: list[list[Factor]] = [[] for _ in tree.cliques]
    for factor, clique in zip(factors, tree.factor_clique):
        assigned[clique].append(factor)
    potentials: list[Factor | None] = []
    for clique, members in zip(tree.cliques, assigned):
        if not members:
            potentials.append(None)
            continue
        keep = tuple(v for v in clique if any(v in f.variables for f in members))
        potentials.append(contract(members, keep))
    return potentials


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


def _normalise(factor: Factor) -> tuple[Factor, Tensor]:
    values = factor.values
    total = values.reshape(values.shape[0], -1).sum(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    shaped = safe.reshape(-1, *([1] * (values.dim() - 1)))
    return Factor(factor.variables, values / shaped, True), torch.log(total)


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


# ---- loopy belief propagation ---------------------------------------------------------------
def loopy_belief_propagation(
    factors: Sequence[Factor],
    cardinalities: Mapping[int, int],
    evidence: Mapping[int, Factor] | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-8,
    damping: float = 0.0,
) -> tuple[dict[int, Tensor], dict[str, float | int | bool]]:
    """Synchronous (flooding) sum-product on the factor graph, batched over evidence rows.

    Args:
        factors: unbatched factors.
        cardinalities: number of states of each variable.
        evidence: variable id -> batched indicator factor (batch, card).
        max_iter: most message-passing iterations.
        tol: stop when no message changes by more than this (max absolute difference).
        damping: weight of the old message in each update (0 = none).

    Returns:
        (marginals, info): variable id -> approximate posterior (batch, card); info has
        `n_iter`, `converged` and `max_change` (the last iteration's largest message change).
    """
    evidence = dict(evidence or {})
    batch = next(iter(evidence.values())).values.shape[0] if evidence else 1
    device = factors[0].values.device if factors else "cpu"
    dtype = torch.float64
    variables = sorted(cardinalities)
    to_factor: dict[tuple[int, int], Tensor] = {}
    to_variable: dict[tuple[int, int], Tensor] = {}
    neighbours: dict[int, list[int]] = {v: [] for v in variables}
    for index, factor in enumerate(factors):
        for v in factor.variables:
            neighbours[v].append(index)
            uniform = torch.full((batch, cardinalities[v]), 1.0 / cardinalities[v], dtype=dtype)
            to_factor[(v, index)] = uniform.to(device)
            to_variable[(index, v)] = uniform.to(device)
    local = {
        v: (
            evidence[v].values.to(dtype)
            if v in evidence
            else torch.ones(batch, cardinalities[v], dtype=dtype, device=device)
        )
        for v in variables
    }
    converged = False
    change = float("inf")
    n_iter = 0
    for step in range(1, max_iter + 1):
        n_iter = step
        change = 0.0
        new_to_variable = {}
        for index, factor in enumerate(factors):
            for v in factor.variables:
                operands = [factor] + [
                    Factor((u,), to_factor[(u, index)], True) for u in factor.variables if u != v
                ]
                message, _ = _normalise(contract(operands, (v,), batch_size=batch))
                old = to_variable[(index, v)]
                updated = (1 - damping) * message.values + damping * old
                change = max(change, float((updated - old).abs().max()))
                new_to_variable[(index, v)] = updated
        to_variable = new_to_variable
        for v in variables:
            for index in neighbours[v]:
                product = local[v].clone()
                for other in neighbours[v]:
                    if other != index:
                        product = product * to_variable[(other, v)]
                total = product.sum(dim=1, keepdim=True)
                product = product / torch.where(total > 0, total, torch.ones_like(total))
                change = max(change, float((product - to_factor[(v, index)]).abs().max()))
                to_factor[(v, index)] = product
        if change < tol:
            converged = True
            break
    marginals: dict[int, Tensor] = {}
    for v in variables:
        belief = local[v].clone()
        for index in neighbours[v]:
            belief = belief * to_variable[(index, v)]
        total = belief.sum(dim=1, keepdim=True)
        marginals[v] = belief / torch.where(total > 0, total, torch.ones_like(total))
    info = {"n_iter": n_iter, "converged": converged, "max_change": change}
    return marginals, info


# ---- exact sampling -------------------------------------------------------------------------
def sample_by_elimination(
    factors: Sequence[Factor],
    cardinalities: Mapping[int, int],
    n: int,
    *,
    generator: torch.Generator | None = None,
    order: Sequence[int] | None = None,
) -> tuple[dict[int, Tensor], Tensor]:
    """Exact samples from the normalised product of `factors` (backward sampling after VE).

    Sum-product elimination keeps each step's product table; sampling then runs the order
    backwards, drawing each variable from its table given the variables drawn after it.

    Args:
        factors: unbatched non-negative factors.
        cardinalities: number of states of each variable.
        n: number of samples.
        generator: source of randomness.
        order: elimination order (default weighted min-fill).

    Returns:
        (samples, log_partition): variable id -> long tensor (n,), and log of the normaliser.
    """
    cards = dict(cardinalities)
    adjacency = moral_adjacency((f.variables for f in factors), cards)
    if order is None:
        order = min_fill_order(adjacency, cards)
    pool = list(factors)
    steps: list[tuple[int, Factor]] = []
    log_partition = torch.zeros((), dtype=torch.float64)
    for variable in order:
        involved = [f for f in pool if variable in f.variables]
        pool = [f for f in pool if variable not in f.variables]
        if not involved:
            device = factors[0].values.device if factors else "cpu"
            involved = [Factor((variable,), torch.ones(cards[variable], device=device))]
        scope = []
        for f in involved:
            scope.extend(u for u in f.variables if u != variable and u not in scope)
        joint = contract(involved, (*scope, variable))
        steps.append((variable, joint))
        reduced, scale = _rescale(Factor(tuple(scope), joint.values.sum(dim=-1)))
        log_partition = log_partition + scale.reshape(()).cpu()
        pool.append(reduced)
    for f in pool:
        log_partition = log_partition + torch.log(f.values.reshape(()).cpu())
    drawn: dict[int, Tensor] = {}
    for variable, joint in reversed(steps):
        index = tuple(drawn[u] for u in joint.variables[:-1])
        rows = joint.values[index] if index else joint.values.expand(n, -1)
        cumulative = rows.cumsum(dim=-1)
        uniform = (
            torch.rand(n, 1, generator=generator, device=rows.device, dtype=cumulative.dtype)
            * cumulative[:, -1:]
        )
        state = (uniform >= cumulative).sum(dim=-1).clamp_max(rows.shape[-1] - 1)
        drawn[variable] = state
    return drawn, log_partition


# ---- dense (Hugin) calibration --------------------------------------------------------------
_MAX_PROJECTION_ENTRIES = 1 << 21
# A projection matrix costs 2 * width flops per clique entry and row, a chain of axis sums about
# one memory pass per entry: on CPU the matrix product wins only for narrow targets (single
# variables, small separators), so wider targets are summed axis by axis instead.
_MAX_PROJECTED_WIDTH = 16


@dataclass
class DenseTree:
    """A junction tree compiled for dense, batched Hugin message passing.

    Every clique keeps a dense potential over its variables (in `tree.cliques` order). Sums of
    a clique table onto a separator (or onto one variable) are matrix products with 0/1
    projection matrices built here, so each clique costs one matrix product per pass plus a
    few elementwise kernels, whatever the batch size; wide targets and cliques too large for
    a projection matrix use tensor reductions instead (`down_projected[c][t]` says which
    targets of clique c the projection covers).
    """

    tree: JunctionTree
    potentials: list[Tensor]
    parent_view: list[tuple[int, ...]]
    evidence_axis: dict[int, tuple[int, int]]
    up_projection: list[Tensor | None]
    down_projection: list[Tensor | None]
    down_targets: list[list[tuple[str, int]]]
    down_projected: list[list[bool]]
    # Fixed per-clique plans, worked out once here rather than on every calibration (the
    # Python bookkeeping cost more than the products for batches of a few hundred rows):
    # the separator to the parent in the parent's axis order and in this clique's order, the
    # variable list of each downward target (clique order) and the widths of projected lists.
    up_separator: list[list[int]] = field(default_factory=list)
    up_kept: list[list[int]] = field(default_factory=list)
    up_widths: list[list[int]] = field(default_factory=list)
    down_lists: list[list[list[int]]] = field(default_factory=list)
    down_widths: list[list[int]] = field(default_factory=list)
    # per clique: its separator variables in its own order and the broadcast shape of a
    # downward message over its axes
    child_order: list[list[int]] = field(default_factory=list)
    child_shape: list[list[int]] = field(default_factory=list)


def _projection(
    clique: Sequence[int], cards: Mapping[int, int], targets: Sequence[Sequence[int]], device
) -> Tensor:
    """0/1 matrix (clique entries, sum of target sizes): entry -> configuration of each target
    variable list (row-major in that list's order)."""
    size = math.prod(cards[v] for v in clique)
    flat = torch.arange(size, device=device)
    states = {}
    for v in reversed(clique):
        states[v] = flat % cards[v]
        flat = flat // cards[v]
    blocks = []
    for target in targets:
        config = torch.zeros(size, dtype=torch.long, device=device)
        for v in target:
            config = config * cards[v] + states[v]
        width = math.prod(cards[v] for v in target)
        blocks.append(torch.nn.functional.one_hot(config, width).to(torch.float64))
    return torch.cat(blocks, dim=1)


def compile_dense(tree: JunctionTree, potentials: Sequence[Factor | None]) -> DenseTree:
    """Dense clique potentials, message plans and projection matrices for `calibrate_dense`."""
    cards = tree.cardinalities
    device = next((p.values.device for p in potentials if p is not None), torch.device("cpu"))
    dense: list[Tensor] = []
    views: list[tuple[int, ...]] = []
    up: list[Tensor | None] = []
    down: list[Tensor | None] = []
    down_targets: list[list[tuple[str, int]]] = []
    down_projected: list[list[bool]] = []
    marginal_variables: dict[int, list[int]] = {}
    for v, c in tree.variable_clique.items():
        marginal_variables.setdefault(c, []).append(v)
    for index, clique in enumerate(tree.cliques):
        potential = potentials[index]
        shape = [cards[v] for v in clique]
        if potential is None:
            values = torch.ones(shape, dtype=torch.float64, device=device)
        else:
            padding = [
                Factor((v,), torch.ones(cards[v], dtype=potential.values.dtype, device=device))
                for v in clique
                if v not in potential.variables
            ]
            values = contract([potential, *padding], clique).values
        dense.append(values)
        size = values.numel()
        parent = tree.parent[index]
        if parent < 0:
            views.append(())
            separator_in_parent: list[int] = []
        else:
            shared = set(tree.separators[index])
            parent_clique = tree.cliques[parent]
            views.append(tuple(cards[v] if v in shared else 1 for v in parent_clique))
            separator_in_parent = [v for v in parent_clique if v in shared]
        width = math.prod(cards[v] for v in separator_in_parent)
        up.append(
            _projection(clique, cards, [separator_in_parent], device)
            if width <= _MAX_PROJECTED_WIDTH and size * width <= _MAX_PROJECTION_ENTRIES
            else None
        )
        targets: list[tuple[str, int]] = [("child", c) for c in tree.children[index]]
        targets += [("variable", v) for v in marginal_variables.get(index, [])]
        lists = [
            [v for v in clique if v in set(tree.separators[c])] if kind == "child" else [c]
            for kind, c in targets
        ]
        widths = [math.prod(cards[v] for v in members) for members in lists]
        projected = [w <= _MAX_PROJECTED_WIDTH for w in widths]
        total = sum(w for w, chosen in zip(widths, projected) if chosen)
        if total == 0 or size * total > _MAX_PROJECTION_ENTRIES:
            projected = [False] * len(lists)
        chosen_lists = [members for members, chosen in zip(lists, projected) if chosen]
        down.append(_projection(clique, cards, chosen_lists, device) if chosen_lists else None)
        down_targets.append(targets)
        down_projected.append(projected)
    evidence_axis = {v: (c, tree.cliques[c].index(v)) for v, c in tree.variable_clique.items()}
    plan = DenseTree(tree, dense, views, evidence_axis, up, down, down_targets, down_projected)
    for index, clique in enumerate(tree.cliques):
        parent = tree.parent[index]
        shared = set(tree.separators[index]) if parent >= 0 else set()
        separator = [v for v in tree.cliques[parent] if v in shared] if parent >= 0 else []
        plan.up_separator.append(separator)
        plan.up_kept.append([v for v in clique if v in shared])
        plan.up_widths.append([math.prod(cards[v] for v in separator)])
        plan.child_order.append([v for v in clique if v in shared])
        plan.child_shape.append([cards[v] if v in shared else 1 for v in clique])
        lists = [
            [v for v in clique if v in set(tree.separators[item])] if kind == "child" else [item]
            for kind, item in plan.down_targets[index]
        ]
        plan.down_lists.append(lists)
        plan.down_widths.append(
            [
                math.prod(cards[v] for v in members)
                for members, chosen in zip(lists, plan.down_projected[index])
                if chosen
            ]
        )
    return plan


def _sum_dims(values: Tensor, dims: Sequence[int], keepdim: bool = False) -> Tensor:
    """Sum over several axes one at a time, last first (several times faster than a single
    multi-axis reduction over non-contiguous axes on CPU)."""
    for dim in sorted(dims, reverse=True):
        values = values.sum(dim=dim, keepdim=keepdim)
    return values


def _normalise_rows(values: Tensor) -> tuple[Tensor, Tensor]:
    total = values.reshape(values.shape[0], -1).sum(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return values / safe.reshape(-1, *([1] * (values.dim() - 1))), total


# The dense calibration keeps the batch as the LAST axis: (*clique cardinalities, batch). Every
# elementwise product then runs over a contiguous innermost axis of length `batch`, whereas a
# leading batch axis leaves innermost loops as short as a binary variable's two states (and
# broadcasts with stride 0), which made the products several times slower on CPU. A table
# whose batch axis has length 1 does not depend on the evidence (e.g. a subtree without
# observed variables) and is broadcast rather than copied.


def _evidence_view(values: Tensor, axis: int, rank: int) -> Tensor:
    """(batch, card) -> (1, ..., card, ..., 1, batch) with `card` at clique axis `axis`."""
    shape = [1] * rank + [values.shape[0]]
    shape[axis] = values.shape[1]
    return values.T.reshape(shape)


def _normalise_columns(values: Tensor, in_place: bool = False) -> tuple[Tensor, Tensor]:
    """Divide each batch column of (*axes, batch) by its sum (zero sums left as they are);
    `in_place` for a fresh temporary (a new large tensor costs page faults on CPU)."""
    total = values.reshape(-1, values.shape[-1]).sum(dim=0)
    divisor = torch.where(total > 0, total, 1.0)
    return (values.div_(divisor) if in_place else values / divisor), total


def _sum_onto(plan: DenseTree, belief: Tensor, clique: int, members: Sequence[int]) -> Tensor:
    """Sum a clique table (*clique, batch) onto `members` (kept in clique order), flattened to
    (configurations, batch); used for wide targets and cliques too large for a projection."""
    keep = set(members)
    drop = [a for a, v in enumerate(plan.tree.cliques[clique]) if v not in keep]
    return _sum_dims(belief, drop).reshape(-1, belief.shape[-1])


def _project(
    plan: DenseTree,
    projection: Tensor | None,
    belief: Tensor,
    clique: int,
    lists: list[list[int]],
    projected: list[bool] | None = None,
    widths: list[int] | None = None,
) -> list[Tensor]:
    """Sums of a clique table (*clique, batch) onto each variable list in `lists` (clique
    order), each (configurations, batch): one matrix product for the lists the projection
    covers (`projected`, default all when there is a projection), axis sums for the rest
    (`widths`: the configuration counts of the projected lists, when known)."""
    if projected is None:
        projected = [projection is not None] * len(lists)
    if projection is None:
        return [_sum_onto(plan, belief, clique, members) for members in lists]
    sums = projection.T @ belief.reshape(-1, belief.shape[-1])
    if len(lists) == 1:
        return [sums]
    if widths is None:
        cards = plan.tree.cardinalities
        widths = [
            math.prod(cards[v] for v in members)
            for members, chosen in zip(lists, projected)
            if chosen
        ]
    pieces = iter(torch.split(sums, widths, dim=0))
    return [
        next(pieces) if chosen else _sum_onto(plan, belief, clique, members)
        for members, chosen in zip(lists, projected)
    ]


def _reorder(
    values: Tensor, cards: Mapping[int, int], order: list[int], target: list[int]
) -> Tensor:
    """(configurations over `order`, batch) -> (*cards over `target`, batch)."""
    batch = values.shape[-1]
    values = values.reshape(*(cards[v] for v in order), batch)
    if order != target:
        values = values.permute(*(order.index(v) for v in target), len(order))
    return values


def _broadcast_shape(*shapes: Sequence[int]) -> tuple[int, ...]:
    """The broadcast of shapes known to be compatible (`torch.broadcast_shapes` checks and
    traces symbolic sizes, which costs more than the small products it is asked about)."""
    rank = max(len(shape) for shape in shapes)
    result = [1] * rank
    for shape in shapes:
        offset = rank - len(shape)
        for axis, size in enumerate(shape):
            if size != 1:
                result[offset + axis] = size
    return tuple(result)


def _times(table: Tensor, factors: list[Tensor], out: Tensor | None = None) -> Tensor:
    """`table` times all `factors` (broadcasting), as a new tensor (or written into `out`, a
    flat buffer with room for the result).

    Factors are multiplied together first while their product stays small (evidence vectors,
    separator messages), then into one full-size table, then the rest in place: every
    full-size pass and every allocation (page faults on CPU) is paid only once.
    """
    factors = sorted(factors, key=lambda t: t.numel())
    shape = _broadcast_shape(table.shape, *(f.shape for f in factors))
    small, rest = factors[0], factors[1:]
    while rest and math.prod(_broadcast_shape(small.shape, rest[0].shape)) * 4 <= (
        math.prod(shape)
    ):
        small = small * rest.pop(0)
    if out is None:
        result = table.expand(shape) * small
    else:
        result = torch.mul(table.expand(shape), small, out=out[: math.prod(shape)].view(shape))
    for factor in rest:
        result.mul_(factor)
    return result


def _workspace(
    plan: DenseTree, workspace: dict | None, batch_size: int, device
) -> list[Tensor | None]:
    """Per clique a flat float64 buffer of (clique entries * batch_size), carved from one
    tensor kept in `workspace` and reused by later calls with the same batch size (None per
    clique without a workspace). Reuse matters on CPU: writing freshly allocated tables costs
    page faults that took longer than the products written into them."""
    if workspace is None:
        return [None] * len(plan.potentials)
    sizes = [p.numel() * batch_size for p in plan.potentials]
    key = (batch_size, str(device), sum(sizes))
    buffer = workspace.get(key)
    if buffer is None:
        workspace.clear()  # keep one buffer only: the memory is reused, never accumulated
        buffer = workspace[key] = torch.empty(sum(sizes), dtype=torch.float64, device=device)
    return list(torch.split(buffer, sizes))


def calibrate_dense(
    plan: DenseTree,
    evidence: Mapping[int, Tensor] | None = None,
    *,
    batch_size: int = 1,
    collect_only: bool = False,
    workspace: dict | None = None,
) -> tuple[list[Tensor | None], Tensor, dict[int, Tensor]]:
    """Batched Hugin calibration: clique beliefs, log evidence and every variable's marginal.

    Args:
        plan: from `compile_dense`.
        evidence: variable id -> (batch, card) indicator or likelihood tensor.
        batch_size: number of rows (taken from `evidence` when given).
        collect_only: stop after the upward pass (enough for the log evidence).
        workspace: a dict owned by the caller in which the clique tables are kept and reused
            by the next call with the same batch size; the beliefs returned are then views of
            it, overwritten by that next call (marginals and log evidence are not).

    Returns:
        (beliefs, log_evidence, marginals): per clique an unnormalised belief (batch, *clique
        cardinalities) (None with `collect_only`; normalise with `belief_marginal`), log
        P(evidence) per row (-inf if zero), and variable id -> normalised marginal
        (batch, card) (empty with `collect_only`).
    """
    tree = plan.tree
    cards = tree.cardinalities
    evidence = dict(evidence or {})
    if evidence:
        batch_size = next(iter(evidence.values())).shape[0]
    count = len(tree.cliques)
    # Evidence and messages are broadcast views (1, .., card, .., 1, batch): multiplying the
    # small ones together first leaves one full-size product per clique.
    extra: list[list[Tensor]] = [[] for _ in range(count)]
    for variable, values in evidence.items():
        clique, axis = plan.evidence_axis[variable]
        rank = len(tree.cliques[clique])
        extra[clique].append(_evidence_view(values.to(torch.float64), axis, rank))
    plan_views = [p.unsqueeze(-1) for p in plan.potentials]
    buffers = _workspace(plan, workspace, batch_size, plan_views[0].device)
    local: list[Tensor] = list(plan_views)
    upward: list[Tensor | None] = [None] * count
    device = local[0].device
    totals: list[Tensor] = []
    for index in tree.collect_order:
        factors = extra[index] + [upward[child] for child in tree.children[index]]
        if factors:
            local[index] = _times(local[index], factors, buffers[index])
        separator = plan.up_separator[index]
        (message,) = _project(
            plan,
            plan.up_projection[index],
            local[index],
            index,
            [separator],
            widths=plan.up_widths[index],
        )
        if plan.up_projection[index] is None and separator:
            # the reduction keeps this clique's axis order; the parent wants its own
            message = _reorder(message, cards, plan.up_kept[index], separator)
            message = message.reshape(-1, message.shape[-1])
        # the message is a fresh tensor unless it is a view of the clique table itself
        fresh = message.untyped_storage().data_ptr() != local[index].untyped_storage().data_ptr()
        message, total = _normalise_columns(message, in_place=fresh)
        totals.append(total.expand(batch_size))
        if tree.parent[index] >= 0:
            upward[index] = message.reshape(*plan.parent_view[index], message.shape[-1])
    # one logarithm and one sum for all cliques rather than two small kernels per clique
    log_evidence = (
        torch.log(torch.stack(totals)).sum(dim=0)
        if totals
        else torch.zeros(batch_size, dtype=torch.float64, device=device)
    )
    if collect_only:
        return [None] * count, log_evidence, {}
    variable_pieces: list[Tensor] = []
    variable_order: list[int] = []
    for index in reversed(tree.collect_order):
        targets = plan.down_targets[index]
        if not targets:
            continue
        lists = plan.down_lists[index]
        pieces = _project(
            plan,
            plan.down_projection[index],
            local[index],
            index,
            lists,
            plan.down_projected[index],
            plan.down_widths[index],
        )
        for (kind, item), members, piece in zip(targets, lists, pieces):
            if kind == "variable":
                variable_pieces.append(piece.expand(-1, batch_size))
                variable_order.append(item)
                continue
            # Hugin update: the child's new message is the parent's belief on the separator
            # divided by what the child sent up (0/0 counts as 0: the child's mass there is 0).
            # (piece is a sum of terms that each carry the factor `sent`, so sent = 0 gives
            # exactly 0/0 = NaN there and never x/0 = inf)
            sent = upward[item].reshape(-1, upward[item].shape[-1])
            ratio = torch.nan_to_num_(piece / sent, nan=0.0)
            ratio, _ = _normalise_columns(ratio, in_place=True)
            ratio = _reorder(ratio, cards, members, plan.child_order[item])
            ratio = ratio.reshape(*plan.child_shape[item], ratio.shape[-1])
            if local[item].shape[-1] == ratio.shape[-1] and local[item] is not plan_views[item]:
                local[item].mul_(ratio)  # in place: a fresh table costs page faults on CPU
            else:
                local[item] = local[item] * ratio
    beliefs = [b.movedim(-1, 0).expand(batch_size, *b.shape[:-1]) for b in local]
    return list(beliefs), log_evidence, _variable_marginals(variable_pieces, variable_order)


def _variable_marginals(pieces: list[Tensor], variables: list[int]) -> dict[int, Tensor]:
    """Normalise every variable's summed belief (card, batch) and turn it to (batch, card), in
    a few kernels for all variables together (one set per variable cost more than the sums).

    Each variable's total is its own sum (rows are added in order, as a column sum does);
    the marginals returned are transposed views (batch, card) of one (sum of cards, batch)
    table, not contiguous (callers that keep them copy them anyway)."""
    if not pieces:
        return {}
    stacked = torch.cat(pieces)
    sizes = [piece.shape[0] for piece in pieces]
    owner = torch.repeat_interleave(
        torch.arange(len(pieces), device=stacked.device),
        torch.tensor(sizes, device=stacked.device),
    )
    totals = torch.zeros(len(pieces), stacked.shape[1], dtype=stacked.dtype, device=stacked.device)
    totals.index_add_(0, owner, stacked)
    totals = torch.where(totals > 0, totals, 1.0)
    stacked.div_(totals.index_select(0, owner))
    return {v: piece.T for v, piece in zip(variables, torch.split(stacked, sizes, dim=0))}


def belief_marginal(
    plan: DenseTree, beliefs: Sequence[Tensor | None], clique: int, keep: Sequence[int]
) -> Tensor:
    """Normalised marginal of a calibrated clique belief over `keep` (in that order),
    shape (batch, *cardinalities); rows of zero evidence stay zero."""
    clique_variables = plan.tree.cliques[clique]
    belief = beliefs[clique]
    drop = tuple(1 + a for a, v in enumerate(clique_variables) if v not in keep)
    reduced = _sum_dims(belief, drop)
    remaining = [v for v in clique_variables if v in keep]
    reduced = reduced.permute(0, *(1 + remaining.index(v) for v in keep))
    reduced, _ = _normalise_rows(reduced)
    return reduced
