"""Structure learning of a dynamic Bayesian network's transition slice from sequences.

Every transition (slice t-1, slice t) of every sequence is one row of 2N columns: the previous
slice (N columns, kept as roots) and the current one. Tabu hill climbing over that table
(`probgen.networks.structure`, with its cached decomposable BIC / BDeu / K2 scores) may add
inter-slice edges (previous -> current) and intra-slice edges (current -> current, kept
acyclic) but no edge into the previous slice. The prior slice copies the intra-slice edges or
is learned on its own from the first steps. The result is a fitted `DynamicBayesianNetwork`.

Example:
    >>> import torch
    >>> from probgen.networks.dynamic import DynamicBayesianNetwork
    >>> truth = DynamicBayesianNetwork(
    ...     {"a": 2, "b": 2}, inter_edges=[("a", "a"), ("a", "b")],
    ...     prior_tables={"a": [0.5, 0.5], "b": [0.5, 0.5]},
    ...     transition_tables={"a": [[0.9, 0.1], [0.1, 0.9]], "b": [[0.8, 0.2], [0.2, 0.8]]})
    >>> learned = learn_dbn_structure(truth.sample(50, length=20, seed=0), states=truth.states)
    >>> sorted(learned.inter_edges)
    [('a', 'a'), ('a', 'b')]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from probgen.core.data import as_sequences, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.networks.dynamic import DynamicBayesianNetwork
from probgen.networks.structure import LocalScore, _hill_climb

__all__ = ["learn_dbn_structure"]


def _sequence_codes(
    sequences: Any, states: Mapping[str, Sequence[Any] | int] | None
) -> tuple[DynamicBayesianNetwork, torch.Tensor, torch.Tensor]:
    """An edgeless network over the variables, the codes (n, T, N) and the lengths."""
    if states is None:
        batch = as_sequences(sequences, "sequences", integer=True, min_value=0)
        if batch.values.dim() != 3:
            raise DataError("sequences must have shape (n_sequences, length, n_variables)")
        largest = batch.values.reshape(-1, batch.values.shape[-1]).max(dim=0).values
        states = {f"x{i}": int(m) + 1 for i, m in enumerate(largest.tolist())}
    shell = DynamicBayesianNetwork(states)
    codes, lengths = shell.encode(sequences)
    live = torch.arange(codes.shape[1])[None, :] < lengths[:, None]
    missing = (codes < 0) & live[..., None]
    if missing.any():
        row = int(missing.flatten(1).any(1).nonzero()[0])
        raise DataError(
            f"sequences[{row}] has a missing value; structure learning needs complete data"
        )
    return shell, codes, lengths


def learn_dbn_structure(
    sequences: Any,
    states: Mapping[str, Sequence[Any] | int] | None = None,
    *,
    score: str = "bic",
    intra: bool = True,
    prior: str = "intra",
    max_indegree: int | None = None,
    tabu_length: int = 100,
    patience: int = 10,
    max_iter: int = 100_000,
    epsilon: float = 1e-4,
    equivalent_sample_size: float = 10.0,
    fit_options: Mapping[str, Any] | None = None,
) -> DynamicBayesianNetwork:
    """Learn a DBN's transition slice (and prior slice) by score-based hill climbing.

    Args:
        sequences: complete sequences in any form `DynamicBayesianNetwork.encode` takes.
        states: variable -> state names or counts (default: x0, x1, ... with the states seen).
        score: "bic", "bdeu" or "k2".
        intra: whether intra-slice edges may be learned (False: inter-slice edges only).
        prior: "intra" (the prior slice gets the learned intra-slice edges) or "learn" (hill
            climbing on the first step of each sequence).
        max_indegree: most parents per variable, counting both slices (None: no limit).
        tabu_length: how many recent moves may not be undone.
        patience: non-improving tabu moves allowed from a local optimum.
        max_iter: most search steps.
        epsilon: smallest score improvement that counts.
        equivalent_sample_size: BDeu's equivalent sample size.
        fit_options: further `DynamicBayesianNetwork` settings (e.g. ``pseudocount``).

    Returns:
        A fitted `DynamicBayesianNetwork`; `structure_score_` is the transition slice's score
        and `structure_history_` the score after each search step.

    Raises:
        DataError: missing values, sequences of length 1 only, a bad option.
    """
    check_choice(score, "score", ("bic", "bdeu", "k2"))
    check_choice(prior, "prior", ("intra", "learn"))
    if max_indegree is not None:
        max_indegree = check_positive_int(max_indegree, "max_indegree", minimum=0)
    shell, codes, lengths = _sequence_codes(sequences, states)
    variables, width = shell.variables, len(shell.variables)
    cards = shell.cardinalities
    pairs = [
        torch.cat([codes[i, : n - 1], codes[i, 1:n]], dim=1)
        for i, n in enumerate(lengths.tolist()) if n > 1
    ]
    if not pairs:
        raise DataError("sequences are all of length 1; a transition slice needs longer ones")
    transitions = torch.cat(pairs).cpu().numpy().astype(np.int64)
    forbidden = {(u, v) for u in range(2 * width) for v in range(width) if u != v}
    if not intra:
        forbidden |= {(width + u, width + v) for u in range(width) for v in range(width)}
    scorer = LocalScore(transitions, cards * 2, score, equivalent_sample_size)
    search = dict(
        tabu_length=check_positive_int(tabu_length, "tabu_length", minimum=0),
        max_indegree=max_indegree,
        max_iter=check_positive_int(max_iter, "max_iter", minimum=0),
        epsilon=float(epsilon),
        patience=check_positive_int(patience, "patience", minimum=0),
    )
    adjacency, history = _hill_climb(scorer, 2 * width, set(), forbidden, **search)
    inter_edges = [(variables[u], variables[c]) for c in range(width) for u in range(width)
                   if adjacency[u, width + c]]
    intra_edges = [(variables[u], variables[c]) for c in range(width) for u in range(width)
                   if adjacency[width + u, width + c]]
    if prior == "intra":
        prior_edges = list(intra_edges)
    else:
        first = codes[:, 0].cpu().numpy().astype(np.int64)
        banned = set() if intra else {(u, v) for u in range(width) for v in range(width)}
        prior_scorer = LocalScore(first, cards, score, equivalent_sample_size)
        prior_adjacency, _ = _hill_climb(prior_scorer, width, set(), banned, **search)
        prior_edges = [(variables[u], variables[c]) for c in range(width) for u in range(width)
                       if prior_adjacency[u, c]]
    model = DynamicBayesianNetwork(shell.states, intra_edges, inter_edges,
                                   prior_edges=prior_edges, **dict(fit_options or {}))
    model.fit([codes[i, :n] for i, n in enumerate(lengths.tolist())])
    model.structure_score_ = float(
        sum(scorer(width + c, np.flatnonzero(adjacency[:, width + c]).tolist())
            for c in range(width))
    )
    model.structure_history_ = history
    return model
