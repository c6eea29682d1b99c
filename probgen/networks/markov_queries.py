"""MAP (most probable explanation) queries and max-marginals of a `MarkovNetwork`.

`MaxProductMixin` gives `MarkovNetwork` its max-product inference, exact by elimination where
the treewidth allows (the same `max_exact_size` bound as the partition function):

- `map_query(variables, evidence)`: the jointly most probable state of `variables` given the
  evidence, the other unobserved variables summed out (max-product variable elimination with a
  traceback; with every variable, the most probable explanation);
- `max_marginals(evidence)`: for every variable and state, the probability of the most
  probable full assignment with that state, given the evidence (max-product junction tree).

A DataFrame of evidence (one query per row) runs as one batched elimination or calibration.

Example:
    >>> import torch
    >>> from probgen.networks.markovnet import MarkovNetwork
    >>> coupling = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    >>> chain = MarkovNetwork([(["a", "b"], coupling), (["b", "c"], coupling)])
    >>> chain.map_query()
    {'a': '0', 'b': '0', 'c': '0'}
    >>> [round(v, 4) for v in chain.max_marginals()["b"].tolist()]
    [0.36, 0.16]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

import probgen.networks.factors as ops
from probgen.core.errors import DataError
from probgen.networks.evidence import reject_observed


def _remaining_graph(adjacency: Mapping[int, set[int]], order: Sequence[int]) -> dict[int, set]:
    """The interaction graph left after eliminating `order` (its fill edges added)."""
    graph = {v: set(n) for v, n in adjacency.items()}
    for v in order:
        neighbours = graph.pop(v)
        for u in neighbours:
            graph[u].discard(v)
            graph[u].update(w for w in neighbours if w != u)
    return graph


class MaxProductMixin:
    """Max-product queries of `MarkovNetwork` (a mixin over its factors and codec)."""

    def _named(self, variables: Any, codes: Tensor) -> list[str]:
        """The queried variables: checked, or by default those not observed in every row."""
        if variables is None:
            return [v for j, v in enumerate(self.variables) if not bool((codes[:, j] >= 0).all())]
        names = [variables] if isinstance(variables, str) else list(variables)
        for name in names:
            self._codec.index_of(name, "variables")
        if len(set(names)) != len(names):
            raise DataError("variables names a variable twice")
        reject_observed(codes, names, self._position)
        return names

    def _evidence_operands(self, codes: Tensor) -> tuple[list[ops.Factor], Tensor]:
        """The network's factors with the evidence indicators, and log P(evidence) per row.

        Raises:
            DataError: a row's evidence has probability zero.
        """
        log_evidence = self._log_evidence(codes) - self._log_partition()
        if torch.isneginf(log_evidence).any():
            row = int(torch.isneginf(log_evidence).nonzero()[0])
            where = f" (row {row})" if codes.shape[0] > 1 else ""
            raise DataError(f"evidence{where} has probability zero")
        observed = [j for j in range(codes.shape[1]) if bool((codes[:, j] >= 0).any())]
        cards = dict(enumerate(self.cardinalities))
        indicators = ops.evidence_factors(codes[:, observed], observed, cards)
        return self._factors() + list(indicators.values()), log_evidence

    def map_query(self, variables: Sequence[str] | None = None, evidence: Any = None) -> Any:
        """Most probable joint state of `variables` given `evidence` (the MPE by default).

        The unobserved variables not in `variables` are summed out first (a marginal MAP, as
        pgmpy's `VariableElimination.map_query`), then `variables` are maxed out; ties go to
        the lower state index.

        Args:
            variables: the variables whose jointly most probable state is wanted; default every
                variable not observed in all rows. Variables named here may not be observed.
            evidence: dict {variable: state} or a DataFrame (one query per row).

        Returns:
            dict {variable: state name}, or a DataFrame (one row per query) for DataFrame
            evidence.

        Raises:
            DataError: exact elimination (summing before maximising) would build a table of
                more than `max_exact_size` entries, a named variable that is observed,
                evidence of probability zero.
        """
        self.check_fitted("map_query")
        codes, batched = self._evidence_codes(evidence)
        names = self._named(variables, codes)
        self._require_exact("map_query")
        maximise = [self._position[v] for v in names]
        cards = dict(enumerate(self.cardinalities))
        adjacency = ops.moral_adjacency(self._ids, range(len(self.variables)))
        summed = set(cards) - set(maximise)
        sum_order = ops.min_fill_order(adjacency, cards, eliminate=summed)
        max_order = ops.min_fill_order(_remaining_graph(adjacency, sum_order), cards)
        largest = ops.max_clique_size(adjacency, cards, sum_order + max_order)
        if largest > self.max_exact_size:
            raise DataError(
                f"map_query of {len(names)} variables would build a table of {largest} entries "
                f"(max_exact_size={self.max_exact_size}); query fewer variables or the MPE"
            )
        with torch.no_grad():
            operands, _ = self._evidence_operands(codes)
            if maximise:
                assignment, _ = ops.max_eliminate(
                    operands, maximise, order=max_order, sum_order=sum_order
                )
            else:
                assignment = torch.zeros(codes.shape[0], 0, dtype=torch.long)
        labels = [
            {v: self.states[v][int(s)] for v, s in zip(names, row)} for row in assignment.tolist()
        ]
        if batched:
            import pandas as pd

            return pd.DataFrame(labels, columns=names)
        return labels[0]

    def max_marginals(
        self, evidence: Any = None, variables: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Max-marginals: max over the other variables of p(x | evidence), per variable state.

        Entry s of variable v is the probability (given the evidence) of the most probable
        full assignment with v = s; every variable's largest entry is the probability of the
        most probable explanation. Computed by max-product calibration of the junction tree.

        Args:
            evidence: dict {variable: state} or a DataFrame (one evidence set per row).
            variables: which variables (default all; observed ones have zeros off their
                observed state). Variables named here may not be observed.

        Returns:
            variable -> tensor (n_states,) or (n_queries, n_states).

        Raises:
            DataError: the treewidth is too large for exact inference, a named variable that
                is observed, evidence of probability zero.
        """
        self.check_fitted("max_marginals")
        codes, batched = self._evidence_codes(evidence)
        names = list(self.variables) if variables is None else self._named(variables, codes)
        self._require_exact("max_marginals")
        cards = dict(enumerate(self.cardinalities))
        with torch.no_grad():
            _, log_evidence = self._evidence_operands(codes)
            observed = [j for j in range(codes.shape[1]) if bool((codes[:, j] >= 0).any())]
            indicators = ops.evidence_factors(codes[:, observed], observed, cards)
            tree = ops.build_junction_tree(self._ids, cards, order=self._order)
            found, _ = ops.max_calibrate(
                tree,
                self._factors(),
                {v: f.values for v, f in indicators.items()},
                batch_size=codes.shape[0],
            )
            # p(x | e) = product / (Z P(e)): log P(e) above is already relative to Z
            shift = (log_evidence + self._log_partition())[:, None]
            result = {v: (found[self._position[v]] - shift).exp() for v in names}
        return result if batched else {v: values[0] for v, values in result.items()}
