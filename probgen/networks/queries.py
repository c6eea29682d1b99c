"""Batched exact queries of a `BayesianNetwork`: variable elimination, junction tree, MAP.

`QueriesMixin` gives `BayesianNetwork` its exact inference: `query` (variable elimination, a
DataFrame of evidence is one batched contraction), `marginals` (a calibrated junction tree,
cached per tables), `map_query` (max-product elimination) and the log-evidence used by
`log_prob` for rows with missing values.

Example:
    >>> import probgen
    >>> asia = probgen.BayesianNetwork.from_example("asia")
    >>> table = asia.query("lung", {"smoke": "yes"})
    >>> table.variables, [round(float(v), 6) for v in table.values]
    (['lung'], [0.1, 0.9])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import probgen.networks.factors as ops
from probgen.core.errors import DataError
from probgen.core.threads import small_op_loop
from probgen.networks.evidence import (
    encode_likelihoods,
    likelihood_factors,
    reject_observed,
    with_rows,
)


def query_work(model: Any, *args: Any, **kwargs: Any) -> int:
    """Per-step work of a batched query (`probgen.core.threads`): rows x the largest table."""
    rows = max(
        (
            len(a)
            for a in (*args, *kwargs.values())
            if hasattr(a, "columns") or (isinstance(a, Tensor) and a.dim() == 2)
        ),
        default=1,
    )
    cards = model.cardinalities
    parents = getattr(model, "parents", None)
    if parents is None:
        largest = max((int(p.numel()) for p in model.log_potentials), default=1)
    else:
        position = {v: i for i, v in enumerate(model.variables)}
        largest = max(
            (
                math.prod(cards[position[p]] for p in parents[v]) * cards[i]
                for i, v in enumerate(model.variables)
            ),
            default=1,
        )
    return rows * largest


@dataclass
class Table:
    """A posterior table returned by `BayesianNetwork.query`.

    Attributes:
        variables: the query variables (the table's axes after the optional batch axis).
        states: state names of each query variable.
        values: probabilities, shape (*n_states) or (n_queries, *n_states) for a batch.
    """

    variables: list[str]
    states: dict[str, list[str]]
    values: Tensor

    def to_frame(self) -> Any:
        """The table as a pandas DataFrame: one row per joint state (and query, if batched)."""
        import pandas as pd

        batched = self.values.dim() == len(self.variables) + 1
        values = self.values if batched else self.values.unsqueeze(0)
        rows = []
        for query in range(values.shape[0]):
            for index in itertools.product(*(range(len(self.states[v])) for v in self.variables)):
                row = {v: self.states[v][i] for v, i in zip(self.variables, index)}
                if batched:
                    row = {"query": query, **row}
                row["probability"] = float(values[(query, *index)])
                rows.append(row)
        return pd.DataFrame(rows)


class QueriesMixin:
    """Exact inference of `BayesianNetwork` (a mixin: it uses the network's tables and codec)."""

    def _factors(self) -> list[ops.Factor]:
        return [
            ops.Factor((*(self._position[p] for p in self.parents[v]), i), self.table(v))
            for i, v in enumerate(self.variables)
        ]

    def _junction_tree(self) -> tuple[ops.JunctionTree, list[ops.Factor | None]]:
        key = self._tables_key()
        cached = self._cache.get("junction_tree")
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        tree = self._cache.get("tree")
        if tree is None:
            scopes = [
                (*(self._position[p] for p in self.parents[v]), i)
                for i, v in enumerate(self.variables)
            ]
            tree = ops.build_junction_tree(scopes, dict(enumerate(self.cardinalities)))
            self._cache["tree"] = tree
        potentials = ops.clique_potentials(tree, self._factors())
        self._cache["junction_tree"] = (key, tree, potentials)
        return tree, potentials

    def _dense_tree(self) -> ops.DenseTree:
        """The junction tree compiled for dense batched calibration (cached per tables)."""
        key = self._tables_key()
        cached = self._cache.get("dense")
        if cached is not None and cached[0] == key:
            return cached[1]
        tree, potentials = self._junction_tree()
        plan = ops.compile_dense(tree, potentials)
        self._cache["dense"] = (key, plan)
        return plan

    def _calibrate(
        self,
        codes: Tensor,
        *,
        collect_only: bool = False,
        likelihoods: dict[int, Tensor] | None = None,
    ) -> Iterable[tuple[slice, list[Tensor | None], Tensor, dict[int, Tensor]]]:
        """Calibrate the junction tree on evidence rows (-1 = unobserved), in chunks.

        `likelihoods` (column -> (rows, n_states)) is soft evidence, multiplied in with the
        indicators.
        """
        plan = self._dense_tree()
        total = sum(p.numel() for p in plan.potentials)
        chunk = max(1, (1 << 24) // max(total, 1))
        # reuse clique-table memory across calls only for moderate sizes (<= 32 MiB)
        workspace = (
            self._cache.setdefault("workspace", {})
            if total * min(chunk, codes.shape[0]) <= (1 << 22)
            else None
        )
        cards = self.cardinalities
        states = torch.arange(max(cards), device=codes.device)
        for start in range(0, codes.shape[0], chunk):
            rows = codes[start : start + chunk]
            # indicator of each row's observed state (all ones where unobserved), built for all
            # columns at once and sliced per observed column
            indicators = ((rows[:, :, None] == states) | (rows[:, :, None] < 0)).to(torch.float64)
            observed = (rows >= 0).any(dim=0).tolist()
            evidence = {
                j: indicators[:, j, : cards[j]] for j in range(rows.shape[1]) if observed[j]
            }
            for j, weights in (likelihoods or {}).items():
                part = weights[start : start + chunk]
                evidence[j] = evidence[j] * part if j in evidence else part
            # the workspace keeps the clique tables' memory for the next call (the beliefs
            # yielded are overwritten by the next chunk or call: use them before that)
            beliefs, log_evidence, marginals = ops.calibrate_dense(
                plan,
                evidence,
                batch_size=rows.shape[0],
                collect_only=collect_only,
                workspace=workspace,
            )
            yield slice(start, start + rows.shape[0]), beliefs, log_evidence, marginals

    def _log_evidence(self, codes: Tensor) -> Tensor:
        """log P(observed part) of each row of `codes` (-1 = unobserved), by a JT collect pass."""
        parts = [log for _, _, log, _ in self._calibrate(codes, collect_only=True)]
        return torch.cat(parts)

    # ---- exact inference ---------------------------------------------------------------------
    def _relevant(self, names: Iterable[str]) -> list[int]:
        """Indices of `names` and their ancestors (the rest sums to one and is skipped)."""
        # walk the parent lists directly: building a networkx graph per call cost more than
        # the walk itself
        parents = self.parents
        keep = set(names)
        stack = list(keep)
        while stack:
            for parent in parents[stack.pop()]:
                if parent not in keep:
                    keep.add(parent)
                    stack.append(parent)
        return sorted(self._position[v] for v in keep)

    def _variables_argument(self, variables: Any, name: str) -> list[str]:
        if isinstance(variables, str):
            variables = [variables]
        if not isinstance(variables, (list, tuple)) and not hasattr(variables, "__iter__"):
            raise DataError(f"{name} must be a variable name or a list of names, got {variables!r}")
        variables = list(variables)
        if not variables:
            raise DataError(f"{name} must name at least one variable")
        for variable in variables:
            self._index_of(variable, name)
        if len(set(variables)) != len(variables):
            raise DataError(f"{name} names a variable twice")
        return variables

    def _soft_evidence(
        self, codes: Tensor, batched: bool, virtual_evidence: Any
    ) -> tuple[Tensor, bool, dict[int, Tensor]]:
        """Encode `virtual_evidence`; per-row likelihoods make a single evidence row a batch."""
        likelihoods, rows = encode_likelihoods(
            self._codec, virtual_evidence, codes.shape[0], device=codes.device
        )
        return with_rows(codes, rows), batched or rows != codes.shape[0], likelihoods

    def _check_possible(self, codes: Tensor, evidence: Any, impossible: Tensor) -> None:
        """Raise `DataError` for rows whose (hard and soft) evidence has probability zero."""
        if impossible.any():
            self._check_evidence_possible(codes, evidence)
            row = int(impossible.nonzero()[0])
            where = f" (row {row})" if codes.shape[0] > 1 else ""
            raise DataError(f"evidence{where} with the virtual evidence has probability zero")

    @small_op_loop(query_work)
    def query(
        self,
        variables: str | Sequence[str],
        evidence: Any = None,
        *,
        virtual_evidence: Any = None,
    ) -> Table:
        """Exact posterior table of `variables` given `evidence`, by variable elimination.

        Args:
            variables: a variable name or a list of them (their joint posterior is returned);
                none of them may be observed in `evidence`.
            evidence: dict {variable: state} or a DataFrame with one query per row (NaN/None
                where a row has no evidence on that column); a DataFrame runs as one batched
                contraction.
            virtual_evidence: soft evidence, dict {variable: likelihood} with one non-negative
                weight per state, shape (n_states,) for every row or (n_rows, n_states) per
                row (a batch even with dict evidence), or a list of pgmpy `TabularCPD`s as
                pgmpy's `virtual_evidence`. Queried variables may carry soft evidence.

        Returns:
            `Table` whose values have shape (*n_states) or (n_queries, *n_states).

        Raises:
            DataError: unknown variables or states, a queried variable that is observed,
                evidence of probability zero, malformed virtual evidence.
        """
        self.check_fitted("query")
        variables = self._variables_argument(variables, "variables")
        codes, batched = self._encode_evidence(evidence)
        reject_observed(codes, variables, self._position)
        codes, batched, likelihoods = self._soft_evidence(codes, batched, virtual_evidence)
        observed = [j for j in range(codes.shape[1]) if bool((codes[:, j] >= 0).any())]
        conditioned = [self.variables[j] for j in {*observed, *likelihoods}]
        relevant = self._relevant(variables + conditioned)
        factors = self._factors()
        operands = [factors[i] for i in relevant]
        cards = dict(enumerate(self.cardinalities))
        operands += list(ops.evidence_factors(codes[:, observed], observed, cards).values())
        operands += likelihood_factors(likelihoods)
        keep = tuple(self._position[v] for v in variables)
        table, _ = ops.eliminate(operands, keep)
        values = table.values
        totals = values.reshape(values.shape[0], -1).sum(dim=1)
        self._check_possible(codes, evidence, totals <= 0)
        values = values / totals.reshape(-1, *([1] * len(keep)))
        if not batched:
            values = values[0]
        return Table(variables, {v: list(self._states_of(v)) for v in variables}, values)

    @small_op_loop(query_work)
    def marginals(
        self,
        evidence: Any = None,
        variables: Sequence[str] | None = None,
        *,
        virtual_evidence: Any = None,
    ) -> dict[str, Tensor]:
        """Posterior marginal of every variable, through a calibrated junction tree.

        The junction tree and its clique potentials are built once and reused; evidence enters
        as indicator vectors, so a DataFrame of evidence sets is one batched calibration.

        Args:
            evidence: dict {variable: state} or a DataFrame (one evidence set per row).
            variables: which marginals to return (default all, observed ones included as
                their indicators); variables named here may not be observed.
            virtual_evidence: soft evidence, as in `query`.

        Returns:
            variable -> tensor (n_states,) or (n_queries, n_states).

        Raises:
            DataError: a named variable that is observed, evidence of probability zero.
        """
        self.check_fitted("marginals")
        names = (
            self.variables
            if variables is None
            else self._variables_argument(variables, "variables")
        )
        codes, batched = self._encode_evidence(evidence)
        if variables is not None:
            reject_observed(codes, names, self._position)
        codes, batched, likelihoods = self._soft_evidence(codes, batched, virtual_evidence)
        pieces: dict[str, list[Tensor]] = {name: [] for name in names}
        for _, _, log_evidence, found in self._calibrate(codes, likelihoods=likelihoods):
            self._check_possible(codes, evidence, torch.isinf(log_evidence))
            for name in names:
                pieces[name].append(found[self._position[name]])
        result = {name: torch.cat(parts) for name, parts in pieces.items()}
        return result if batched else {name: values[0] for name, values in result.items()}

    @small_op_loop(query_work)
    def map_query(
        self,
        variables: Sequence[str] | None = None,
        evidence: Any = None,
        *,
        virtual_evidence: Any = None,
    ) -> Any:
        """Most probable joint state of `variables` given `evidence` (MPE when None).

        Args:
            variables: the variables whose jointly most probable state is wanted (the others
                are summed out); default every variable not observed in all rows. Variables
                named here may not be observed.
            evidence: dict {variable: state} or a DataFrame (one query per row).
            virtual_evidence: soft evidence, as in `query`.

        Returns:
            dict {variable: state name} for dict evidence, or a DataFrame (one row per query)
            for DataFrame evidence or per-row virtual evidence.

        Raises:
            DataError: a named variable that is observed, evidence of probability zero.
        """
        self.check_fitted("map_query")
        codes, batched = self._encode_evidence(evidence)
        if variables is None:
            variables = [
                self.variables[j]
                for j in range(codes.shape[1])
                if not bool((codes[:, j] >= 0).all())
            ]
        else:
            variables = self._variables_argument(variables, "variables")
            reject_observed(codes, variables, self._position)
        self._check_evidence_possible(codes, evidence)
        codes, batched, likelihoods = self._soft_evidence(codes, batched, virtual_evidence)
        observed = [j for j in range(codes.shape[1]) if bool((codes[:, j] >= 0).any())]
        conditioned = [self.variables[j] for j in {*observed, *likelihoods}]
        relevant = self._relevant(list(variables) + conditioned)
        factors = self._factors()
        cards = dict(enumerate(self.cardinalities))
        operands = [factors[i] for i in relevant]
        operands += list(ops.evidence_factors(codes[:, observed], observed, cards).values())
        operands += likelihood_factors(likelihoods)
        assignment, log_value = ops.max_eliminate(
            operands, [self._position[v] for v in variables]
        )
        self._check_possible(codes, evidence, torch.isneginf(log_value))
        labels = [
            {v: self._states_of(v)[int(s)] for v, s in zip(variables, row)}
            for row in assignment.tolist()
        ]
        if batched:
            import pandas as pd

            return pd.DataFrame(labels, columns=list(variables))
        return labels[0]
