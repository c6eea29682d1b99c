"""Structure learning for discrete Bayesian networks: tabu hill climbing and Chow-Liu trees.

`learn_structure(data, method="hill_climb", score="bic")` searches DAGs by adding, deleting and
reversing single edges, scoring with a decomposable score (BIC, BDeu or K2) whose local terms
are cached per (variable, parent set), so each step rescores only the candidates whose family
changed. Required and forbidden edges, a maximum in-degree and a tabu list (recently undone
moves are barred) are honoured. `method="chow_liu"` returns the maximum mutual-information
spanning tree. The result is a fitted `BayesianNetwork`.

Example:
    >>> import probgen
    >>> truth = probgen.BayesianNetwork.from_example("asia")
    >>> learned = learn_structure(truth.sample(3000, seed=0, as_frame=True), score="bic")
    >>> structural_hamming_distance(learned, truth) <= 4
    True
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import gammaln

from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.networks.bayesnet import BayesianNetwork
from probgen.networks.codec import state_key

__all__ = ["learn_structure", "LocalScore", "structural_hamming_distance"]


def _encode(
    data: Any, states: Mapping[str, Sequence[Any]] | None
) -> tuple[list[str], dict[str, list[str]], np.ndarray]:
    """Column names, state names and a complete integer code matrix (n, n_variables)."""
    import pandas as pd

    if not hasattr(data, "columns"):
        array = np.asarray(data)
        if array.ndim != 2:
            raise DataError(f"data must be a DataFrame or a 2-D array, got shape {array.shape}")
        data = pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])
    if len(data) == 0:
        raise DataError("data is empty")
    variables = [str(c) for c in data.columns]
    if len(set(variables)) != len(variables):
        raise DataError("data has duplicate column names")
    labels: dict[str, list[str]] = {}
    codes = np.empty((len(data), len(variables)), dtype=np.int64)
    for index, column in enumerate(data.columns):
        values = data[column]
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(
                f"data column {column!r} has a missing value (row {row}); structure learning "
                "needs complete data"
            )
        keys = values.map(state_key) if values.dtype != object else values.astype(str)
        if states is not None and str(column) in states:
            known = [str(s) for s in states[str(column)]]
        else:
            uniques = list(pd.unique(values))
            try:
                uniques = sorted(uniques)
            except TypeError:
                uniques = sorted(uniques, key=str)
            known = [state_key(u) for u in uniques]
        lookup = pd.Index(known)
        positions = lookup.get_indexer(keys.to_numpy())
        if (positions < 0).any():
            bad = keys.to_numpy()[positions < 0][0]
            raise DataError(
                f"data column {column!r} has state {bad!r}, which is not among states {known}"
            )
        codes[:, index] = positions
        labels[str(column)] = known
    return variables, labels, codes


class LocalScore:
    """Cached decomposable score of a (variable, parent set) family.

    Args:
        codes: complete integer data (n, n_variables).
        cardinalities: number of states of each column.
        score: "bic", "bdeu" or "k2".
        equivalent_sample_size: BDeu's equivalent sample size.
    """

    def __init__(
        self,
        codes: np.ndarray,
        cardinalities: Sequence[int],
        score: str = "bic",
        equivalent_sample_size: float = 10.0,
    ) -> None:
        self.codes = codes
        self.cardinalities = [int(c) for c in cardinalities]
        self.score = score
        self.equivalent_sample_size = float(equivalent_sample_size)
        self.n_rows = codes.shape[0]
        self._cache: dict[tuple[int, tuple[int, ...]], float] = {}

    def counts(self, child: int, parents: Sequence[int]) -> tuple[np.ndarray, int]:
        """Counts (observed parent configurations, child states) and the number of configs."""
        r = self.cardinalities[child]
        q = 1
        config = np.zeros(self.n_rows, dtype=np.int64)
        for p in parents:
            config = config * self.cardinalities[p] + self.codes[:, p]
            q *= self.cardinalities[p]
        if q * r <= 1 << 20:
            table = np.bincount(config * r + self.codes[:, child], minlength=q * r).reshape(q, r)
            return table[table.sum(axis=1) > 0], q
        seen, inverse = np.unique(config, return_inverse=True)
        table = np.zeros((seen.size, r), dtype=np.int64)
        np.add.at(table, (inverse.reshape(-1), self.codes[:, child]), 1)
        return table, q

    def __call__(self, child: int, parents: Iterable[int]) -> float:
        key = (child, tuple(sorted(parents)))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        table, q = self.counts(child, key[1])
        r = self.cardinalities[child]
        row_totals = table.sum(axis=1)
        if self.score == "bic":
            nonzero = table > 0
            loglik = float(
                (
                    table[nonzero]
                    * np.log(
                        table[nonzero] / np.repeat(row_totals, r).reshape(table.shape)[nonzero]
                    )
                ).sum()
            )
            value = loglik - 0.5 * np.log(self.n_rows) * q * (r - 1)
        else:
            if self.score == "bdeu":
                row_prior = self.equivalent_sample_size / q
                cell_prior = row_prior / r
            else:  # k2
                row_prior, cell_prior = float(r), 1.0
            value = float(
                (gammaln(row_prior) - gammaln(row_prior + row_totals)).sum()
                + (gammaln(cell_prior + table) - gammaln(cell_prior)).sum()
            )
        self._cache[key] = value
        return value


def _reachability(adjacency: np.ndarray) -> np.ndarray:
    """reach[a, b]: a directed path of length >= 1 leads from a to b."""
    reach = adjacency.copy()
    while True:
        extended = reach | ((reach.astype(np.int32) @ reach.astype(np.int32)) > 0)
        if (extended == reach).all():
            return reach
        reach = extended


def _has_other_path(adjacency: np.ndarray, source: int, target: int) -> bool:
    """Whether a directed path source -> target exists that avoids the edge source -> target."""
    frontier = [c for c in np.flatnonzero(adjacency[source]) if c != target]
    seen = set(frontier)
    while frontier:
        node = frontier.pop()
        if node == target:
            return True
        for child in np.flatnonzero(adjacency[node]):
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return False


def _hill_climb(
    scorer: LocalScore,
    n_variables: int,
    required: set[tuple[int, int]],
    forbidden: set[tuple[int, int]],
    tabu_length: int,
    max_indegree: int | None,
    max_iter: int,
    epsilon: float,
    patience: int = 0,
) -> tuple[np.ndarray, list[float]]:
    adjacency = np.zeros((n_variables, n_variables), dtype=bool)
    for u, v in required:
        adjacency[u, v] = True
    if not (_reachability(adjacency).diagonal() == 0).all():
        raise DataError("required_edges form a cycle")
    parents = [set(np.flatnonzero(adjacency[:, v]).tolist()) for v in range(n_variables)]
    current = [scorer(v, parents[v]) for v in range(n_variables)]
    tabu: deque = deque(maxlen=max(0, int(tabu_length)))
    history = [float(sum(current))]
    limit = n_variables if max_indegree is None else max_indegree
    best_total, best_adjacency, stalled = history[0], adjacency.copy(), 0
    for _ in range(max_iter):
        reach = _reachability(adjacency)
        best_delta, best_move = -np.inf, None
        for u in range(n_variables):
            for v in range(n_variables):
                if u == v:
                    continue
                if adjacency[u, v]:
                    if (u, v) in required:
                        continue
                    move = ("-", u, v)
                    if move not in tabu:
                        delta = scorer(v, parents[v] - {u}) - current[v]
                        if delta > best_delta:
                            best_delta, best_move = delta, move
                    move = ("flip", u, v)
                    if move not in tabu and (v, u) not in forbidden and len(parents[u]) < limit:
                        delta = (
                            scorer(v, parents[v] - {u})
                            - current[v]
                            + scorer(u, parents[u] | {v})
                            - current[u]
                        )
                        if delta > best_delta and not _has_other_path(adjacency, u, v):
                            best_delta, best_move = delta, move
                elif not adjacency[v, u]:
                    move = ("+", u, v)
                    if (
                        move in tabu
                        or (u, v) in forbidden
                        or len(parents[v]) >= limit
                        or reach[v, u]
                    ):
                        continue
                    delta = scorer(v, parents[v] | {u}) - current[v]
                    if delta > best_delta:
                        best_delta, best_move = delta, move
        if best_move is None:
            break
        if best_delta < epsilon:
            # Stuck at a local optimum: tabu search takes the best non-tabu move anyway, up to
            # `patience` times without finding a better network than the best so far.
            if stalled >= patience:
                break
            stalled += 1
        kind, u, v = best_move
        if kind == "+":
            adjacency[u, v] = True
            parents[v].add(u)
            tabu.append(("-", u, v))
        elif kind == "-":
            adjacency[u, v] = False
            parents[v].discard(u)
            tabu.append(("+", u, v))
        else:
            adjacency[u, v] = False
            adjacency[v, u] = True
            parents[v].discard(u)
            parents[u].add(v)
            tabu.append(("flip", v, u))
        current[u] = scorer(u, parents[u])
        current[v] = scorer(v, parents[v])
        total = float(sum(current))
        history.append(total)
        if total > best_total + epsilon:
            best_total, best_adjacency, stalled = total, adjacency.copy(), 0
    return best_adjacency, history


def _chow_liu(codes: np.ndarray, cardinalities: Sequence[int], root: int) -> np.ndarray:
    import networkx as nx

    n_rows, width = codes.shape
    graph = nx.Graph()
    graph.add_nodes_from(range(width))
    for a in range(width):
        for b in range(a + 1, width):
            joint = (
                np.bincount(
                    codes[:, a] * cardinalities[b] + codes[:, b],
                    minlength=cardinalities[a] * cardinalities[b],
                ).reshape(cardinalities[a], cardinalities[b])
                / n_rows
            )
            outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
            nonzero = joint > 0
            information = float((joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])).sum())
            graph.add_edge(a, b, weight=information)
    tree = nx.maximum_spanning_tree(graph)
    adjacency = np.zeros((width, width), dtype=bool)
    for component in nx.connected_components(tree):
        start = root if root in component else min(component)
        for parent, child in nx.bfs_edges(tree, start):
            adjacency[parent, child] = True
    return adjacency


def learn_structure(
    data: Any,
    method: str = "hill_climb",
    score: str = "bic",
    *,
    required_edges: Iterable[tuple[str, str]] = (),
    forbidden_edges: Iterable[tuple[str, str]] = (),
    tabu_length: int = 100,
    patience: int = 10,
    max_indegree: int | None = None,
    max_iter: int = 100_000,
    epsilon: float = 1e-4,
    equivalent_sample_size: float = 10.0,
    root: str | None = None,
    states: Mapping[str, Sequence[Any]] | None = None,
    fit_options: Mapping[str, Any] | None = None,
) -> Any:
    """Learn a Bayesian network's structure from complete discrete data, then fit its tables.

    Args:
        data: DataFrame (one column per variable, state names as values) or integer array.
        method: "hill_climb" (greedy search with a tabu list) or "chow_liu" (tree).
        score: "bic", "bdeu" or "k2" (hill climbing).
        required_edges: (parent, child) pairs that must be present.
        forbidden_edges: (parent, child) pairs that must be absent.
        tabu_length: how many recent moves may not be undone.
        patience: how many non-improving moves tabu search may take from a local optimum
            before it stops (0: plain greedy hill climbing, like pgmpy's HillClimbSearch); the
            best network seen is returned.
        max_indegree: most parents per variable (None: no limit).
        max_iter: most search steps.
        epsilon: smallest score improvement that counts.
        equivalent_sample_size: BDeu's equivalent sample size.
        root: Chow-Liu root (default the first column).
        states: variable -> state names (default: the sorted values seen in the data).
        fit_options: the fitted network's settings, `BayesianNetwork` constructor arguments
            such as ``method``, ``prior`` (default maximum likelihood).

    Returns:
        A fitted `BayesianNetwork`; `structure_score_` is the final score and
        `structure_history_` the score after each search step.

    Raises:
        DataError: missing values, unknown variables in edge constraints, a bad method/score.
    """
    check_choice(method, "method", ("hill_climb", "chow_liu"))
    check_choice(score, "score", ("bic", "bdeu", "k2"))
    tabu_length = check_positive_int(tabu_length, "tabu_length", minimum=0)
    if max_indegree is not None:
        max_indegree = check_positive_int(max_indegree, "max_indegree", minimum=0)
    variables, labels, codes = _encode(data, states)
    position = {v: i for i, v in enumerate(variables)}

    def edge_ids(edges: Iterable[tuple[str, str]], name: str) -> set[tuple[int, int]]:
        result = set()
        for edge in edges:
            if not isinstance(edge, (tuple, list)) or len(edge) != 2:
                raise DataError(f"{name}: each edge must be a (parent, child) pair, got {edge!r}")
            for variable in edge:
                if variable not in position:
                    raise DataError(f"{name}: unknown variable {variable!r}")
            result.add((position[edge[0]], position[edge[1]]))
        return result

    required = edge_ids(required_edges, "required_edges")
    forbidden = edge_ids(forbidden_edges, "forbidden_edges")
    clash = required & forbidden
    if clash:
        u, v = next(iter(clash))
        raise DataError(f"edge ({variables[u]!r}, {variables[v]!r}) is both required and forbidden")
    cardinalities = [len(labels[v]) for v in variables]
    scorer = LocalScore(codes, cardinalities, score, equivalent_sample_size)
    if method == "hill_climb":
        adjacency, history = _hill_climb(
            scorer,
            len(variables),
            required,
            forbidden,
            tabu_length,
            max_indegree,
            check_positive_int(max_iter, "max_iter", minimum=0),
            float(epsilon),
            check_positive_int(patience, "patience", minimum=0),
        )
    else:
        if required or forbidden:
            raise DataError("method='chow_liu' does not take required_edges or forbidden_edges")
        if root is not None and root not in position:
            raise DataError(f"root: unknown variable {root!r}")
        adjacency = _chow_liu(codes, cardinalities, position.get(root, 0) if root else 0)
        history = []
    parents = {
        v: [variables[p] for p in np.flatnonzero(adjacency[:, i])] for i, v in enumerate(variables)
    }
    network = BayesianNetwork(
        parents=parents, states=labels, variables=variables, **dict(fit_options or {})
    )
    network.fit(codes)
    network.structure_score_ = float(
        sum(scorer(i, np.flatnonzero(adjacency[:, i]).tolist()) for i in range(len(variables)))
    )
    network.structure_history_ = history
    return network


def _edge_set(graph: Any) -> set[tuple[Any, Any]]:
    import networkx as nx

    if isinstance(graph, nx.Graph):
        return set(graph.edges())
    edges = getattr(graph, "edges", graph)
    edges = edges() if callable(edges) else edges
    return {(u, v) for u, v in edges}


def structural_hamming_distance(learned: Any, truth: Any) -> int:
    """Edges missing, extra or reversed in `learned` relative to `truth`.

    Args:
        learned: a BayesianNetwork, a networkx DiGraph (or pgmpy DAG), or (parent, child) pairs.
        truth: the same kinds.

    Returns:
        The structural Hamming distance (a reversed edge counts once).
    """
    first, second = _edge_set(learned), _edge_set(truth)
    undirected_first = {frozenset(e) for e in first}
    undirected_second = {frozenset(e) for e in second}
    distance = len(undirected_first ^ undirected_second)
    distance += sum(1 for e in first if frozenset(e) in undirected_second and e not in second)
    return distance
