"""Interaction graphs and elimination orders (weighted min-fill) with their largest clique.

Example:
    >>> from probgen.networks.factors.orders import min_fill_order, moral_adjacency
    >>> adjacency = moral_adjacency([(0, 1), (1, 2)])
    >>> sorted(min_fill_order(adjacency, {0: 2, 1: 2, 2: 2}))
    [0, 1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


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
