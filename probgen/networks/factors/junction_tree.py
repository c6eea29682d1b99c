"""Junction trees built from an elimination order, and their clique potentials.

Example:
    >>> from probgen.networks.factors.junction_tree import build_junction_tree
    >>> tree = build_junction_tree([(0,), (0, 1), (1, 2)], {0: 2, 1: 2, 2: 2})
    >>> len(tree.cliques) >= 1
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from probgen.networks.factors.algebra import Factor, contract
from probgen.networks.factors.orders import min_fill_order, moral_adjacency


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
