"""Discrete Bayesian networks: exact and approximate inference, sampling, learning, interop.

`BayesianNetwork` holds a DAG over named discrete variables (`.graph`, a `networkx.DiGraph`)
and one conditional probability table per variable, shaped (*parent_cardinalities, n_states)
(the variable's own states along the last axis). Inference is batched tensor code from
`probgen.networks.factors`: a DataFrame of evidence (one query per row) is one contraction;
`marginals` reuses a calibrated junction tree across evidence sets.

Example:
    >>> import probgen
    >>> asia = probgen.BayesianNetwork.from_example("asia")
    >>> round(float(asia.query("lung", {"smoke": "yes"}).values[0]), 6)
    0.1
    >>> asia.sample(3, seed=0).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor

import probgen.networks.bif as bif_format
import probgen.networks.factors as ops
from probgen.core.contract import LogProbKind, Model
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import ConvergenceWarning, DataError
from probgen.networks.codec import (
    check_chain_state,
    clamp_chains,
    draw_states,
    enumerate_assignments,
)

__all__ = ["BayesianNetwork", "Table", "read_bif"]

_NORMALISATION_TOLERANCE = 1e-4


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


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(isinstance(value, float) and math.isnan(value))
    except TypeError:
        return False


class BayesianNetwork(Model):
    """A discrete Bayesian network.

    Args:
        edges: (parent, child) pairs; parents of a variable are ordered as they first appear.
        tables: variable -> conditional probability table, array-like of shape
            (*parent_cardinalities, n_states) in the order of the variable's parents, each last
            axis summing to one. A root's table has shape (n_states,).
        states: variable -> list of state names (default "0", "1", ... read from the tables,
            or from the data at `fit`).
        parents: variable -> ordered list of parents (instead of `edges`).
        variables: the variables in column order (default: order of first appearance).
        name: the network's name (used by `write_bif`).

    Attributes:
        variables: variable names, the column order of `sample` and integer `log_prob` input.
        states: state names of each variable.
        parents: parents of each variable, in table-axis order.
        graph: the DAG as a `networkx.DiGraph`.

    Raises:
        DataError: a cycle, an unknown variable, a table of the wrong shape or one that does
            not sum to one (each message names the variable).

    Example:
        >>> net = BayesianNetwork(
        ...     edges=[("rain", "wet")],
        ...     tables={"rain": [0.8, 0.2], "wet": [[0.9, 0.1], [0.2, 0.8]]},
        ...     states={"rain": ["no", "yes"], "wet": ["no", "yes"]},
        ... )
        >>> net.query("rain", {"wet": "yes"}).values.tolist()
        [0.3333333333333333, 0.6666666666666666]
    """

    log_prob_kind = LogProbKind.EXACT
    fitted_attributes = ("history_", "n_iter_", "converged_")

    def __init__(
        self,
        edges: Iterable[tuple[str, str]] | None = None,
        tables: Mapping[str, Any] | None = None,
        *,
        states: Mapping[str, Sequence[Any]] | None = None,
        parents: Mapping[str, Sequence[str]] | None = None,
        variables: Sequence[str] | None = None,
        name: str = "network",
    ) -> None:
        super().__init__()
        self.name = str(name)
        tables = dict(tables or {})
        order: list[str] = []

        def note(variable: Any, where: str) -> str:
            if not isinstance(variable, str) or not variable:
                raise DataError(
                    f"{where}: variable names must be non-empty strings, got {variable!r}"
                )
            if variable not in order:
                order.append(variable)
            return variable

        for variable in variables or ():
            note(variable, "variables")
        parent_lists: dict[str, list[str]] = {}
        if parents is not None:
            if edges is not None:
                raise DataError("give either edges or parents, not both")
            for child, given in parents.items():
                note(child, "parents")
                parent_lists[child] = [note(p, f"parents[{child!r}]") for p in given]
        for edge in edges or ():
            if not isinstance(edge, (tuple, list)) or len(edge) != 2:
                raise DataError(f"edges: each edge must be a (parent, child) pair, got {edge!r}")
            parent, child = note(edge[0], "edges"), note(edge[1], "edges")
            if parent == child:
                raise DataError(f"edges: variable {parent!r} cannot be its own parent")
            parent_lists.setdefault(child, [])
            if parent in parent_lists[child]:
                raise DataError(f"edges: edge ({parent!r}, {child!r}) is listed twice")
            parent_lists[child].append(parent)
        for variable in list(tables) + list(states or {}):
            if variables is not None and variable not in order:
                raise DataError(f"tables/states name unknown variable {variable!r}")
            note(variable, "tables")
        if not order:
            raise DataError("a BayesianNetwork needs at least one variable")
        self.variables: list[str] = order
        self.parents: dict[str, list[str]] = {v: list(parent_lists.get(v, [])) for v in order}
        for child, given in self.parents.items():
            if len(set(given)) != len(given):
                raise DataError(f"parents[{child!r}] lists a parent twice")
        graph = self._build_graph()
        if not nx.is_directed_acyclic_graph(graph):
            cycle = nx.find_cycle(graph)
            path = " -> ".join([cycle[0][0]] + [edge[1] for edge in cycle])
            raise DataError(f"edges form a cycle: {path}; a Bayesian network must be a DAG")
        self.states: dict[str, list[str] | None] = {v: None for v in order}
        for variable, labels in (states or {}).items():
            labels = [str(s) for s in labels]
            if not labels or len(set(labels)) != len(labels):
                raise DataError(f"states[{variable!r}] must be a non-empty list of unique names")
            self.states[variable] = labels
        for variable, table in tables.items():
            if self.states[variable] is None:
                array = np.asarray(table)
                if array.ndim == 0:
                    raise DataError(f"tables[{variable!r}] must be an array, got a scalar")
                self.states[variable] = [str(i) for i in range(array.shape[-1])]
        self.event_shape = torch.Size([len(order)])
        self._position = {v: i for i, v in enumerate(order)}
        self._cache: dict[str, Any] = {}
        for index, variable in enumerate(order):
            self.register_buffer(f"table_{index}", self._uniform_table(variable))
        for variable, table in tables.items():
            self._set_table(variable, table)
        if order and all(v in tables for v in order):
            self._mark_fitted()

    # ---- structure ---------------------------------------------------------------------------
    def _build_graph(self) -> nx.DiGraph:
        graph = nx.DiGraph()
        graph.add_nodes_from(self.variables)
        graph.add_edges_from((p, c) for c, given in self.parents.items() for p in given)
        return graph

    @property
    def graph(self) -> nx.DiGraph:
        """The DAG (a fresh `networkx.DiGraph`; editing it does not change the network)."""
        return self._build_graph()

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) pairs."""
        return [(p, c) for c in self.variables for p in self.parents[c]]

    @property
    def cardinalities(self) -> list[int]:
        """Number of states of each variable (in `variables` order)."""
        return [len(self._states_of(v)) for v in self.variables]

    def _states_of(self, variable: str) -> list[str]:
        labels = self.states[variable]
        if labels is None:
            raise DataError(f"variable {variable!r} has no states yet; give states= or fit on data")
        return labels

    def _table_shape(self, variable: str) -> tuple[int, ...] | None:
        if any(self.states[v] is None for v in [*self.parents[variable], variable]):
            return None
        return (*(len(self.states[p]) for p in self.parents[variable]), len(self.states[variable]))

    def _uniform_table(self, variable: str) -> Tensor:
        shape = self._table_shape(variable)
        if shape is None:
            return torch.zeros(0, dtype=torch.float64)
        return torch.full(shape, 1.0 / shape[-1], dtype=torch.float64)

    def table(self, variable: str) -> Tensor:
        """Conditional table of `variable`, shape (*parent_cardinalities, n_states)."""
        return getattr(self, f"table_{self._index_of(variable, 'variable')}")

    @property
    def tables(self) -> dict[str, Tensor]:
        """Every conditional table, by variable."""
        return {v: self.table(v) for v in self.variables}

    def _set_table(self, variable: str, table: Any) -> None:
        shape = self._table_shape(variable)
        try:
            values = torch.as_tensor(
                np.asarray(table, dtype=np.float64)
                if not isinstance(table, Tensor)
                else table.detach(),
                dtype=torch.float64,
            )
        except (TypeError, ValueError) as error:
            raise DataError(f"tables[{variable!r}] is not an array of numbers: {error}") from error
        if shape is None:
            raise DataError(f"tables[{variable!r}]: the states of its parents are unknown")
        if tuple(values.shape) != shape:
            given = ", ".join(self.parents[variable]) or "no parents"
            raise DataError(
                f"tables[{variable!r}] has shape {tuple(values.shape)}; expected {shape} "
                f"(parents: {given}; the variable's {shape[-1]} states along the last axis)"
            )
        if not torch.isfinite(values).all() or (values < 0).any():
            raise DataError(f"tables[{variable!r}] has negative, NaN or infinite entries")
        sums = values.sum(dim=-1)
        worst = (sums - 1).abs()
        if worst.numel() and float(worst.max()) > _NORMALISATION_TOLERANCE:
            where = np.unravel_index(int(worst.argmax()), tuple(sums.shape)) if sums.dim() else ()
            config = ", ".join(
                f"{p}={self.states[p][i]}" for p, i in zip(self.parents[variable], where)
            )
            raise DataError(
                f"tables[{variable!r}] does not sum to one over the variable's states"
                + (f" for parents {config}" if config else "")
                + f" (sum {float(sums.reshape(-1)[int(worst.argmax())]):.6g})"
            )
        values = values / sums.unsqueeze(-1)
        buffer_name = f"table_{self._position[variable]}"
        device = getattr(self, buffer_name).device
        self._buffers[buffer_name] = values.to(device)

    def _index_of(self, variable: Any, argument: str) -> int:
        if variable not in self._position:
            raise DataError(
                f"{argument}: unknown variable {variable!r}; the network has "
                f"{', '.join(self.variables[:10])}{'...' if len(self.variables) > 10 else ''}"
            )
        return self._position[variable]

    def get_config(self) -> dict[str, Any]:
        return {
            "parents": {v: list(p) for v, p in self.parents.items()},
            "states": {v: list(s) for v, s in self.states.items() if s is not None},
            "variables": list(self.variables),
            "name": self.name,
        }

    def set_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().set_tensors(tensors)
        self._cache.clear()

    # ---- interop -----------------------------------------------------------------------------
    @classmethod
    def from_pgmpy(cls, model: Any) -> BayesianNetwork:
        """Build from a pgmpy `DiscreteBayesianNetwork` (its CPDs and state names).

        Raises:
            DataError: the model has a variable without a CPD.
        """
        variables = [str(v) for v in model.nodes()]
        parents: dict[str, list[str]] = {}
        states: dict[str, list[str]] = {}
        tables: dict[str, np.ndarray] = {}
        for variable in model.nodes():
            cpd = model.get_cpds(variable)
            if cpd is None:
                raise DataError(f"model: variable {variable!r} has no CPD")
            given = [str(p) for p in cpd.variables[1:]]
            parents[str(variable)] = given
            for name in cpd.variables:
                states[str(name)] = [str(s) for s in cpd.state_names[name]]
            tables[str(variable)] = np.moveaxis(np.asarray(cpd.values, dtype=np.float64), 0, -1)
        return cls(parents=parents, tables=tables, states=states, variables=variables)

    def to_pgmpy(self) -> Any:
        """The network as a pgmpy `DiscreteBayesianNetwork` with `TabularCPD`s."""
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork

        self.check_fitted("to_pgmpy")
        model = DiscreteBayesianNetwork(self.edges)
        model.add_nodes_from(self.variables)
        cpds = []
        for variable in self.variables:
            given = self.parents[variable]
            values = self.table(variable).detach().cpu().numpy()
            card = values.shape[-1]
            values = np.moveaxis(values, -1, 0).reshape(card, -1)
            names = {v: list(self._states_of(v)) for v in [variable, *given]}
            cpds.append(
                TabularCPD(
                    variable,
                    card,
                    values,
                    evidence=given or None,
                    evidence_card=[len(self._states_of(p)) for p in given] or None,
                    state_names=names,
                )
            )
        model.add_cpds(*cpds)
        return model

    @classmethod
    def read_bif(cls, path: str | Path) -> BayesianNetwork:
        """Read a BIF file (`.bif` or `.bif.gz`)."""
        parsed = bif_format.read_bif_file(path)
        return cls(
            parents=parsed.parents,
            tables=parsed.tables,
            states=parsed.states,
            variables=parsed.variables,
            name=parsed.name,
        )

    @classmethod
    def from_example(cls, name: str) -> BayesianNetwork:
        """A bnlearn network bundled inside pgmpy ("asia", "alarm", "hepar2", ...), offline."""
        return cls.read_bif(bif_format.pgmpy_example_path(name))

    def write_bif(self, path: str | Path) -> None:
        """Write the network as BIF text (gzip-compressed when `path` ends in `.gz`)."""
        self.check_fitted("write_bif")
        text = bif_format.format_bif(
            self.name,
            self.variables,
            {v: self._states_of(v) for v in self.variables},
            self.parents,
            {v: self.table(v).detach().cpu().numpy() for v in self.variables},
        )
        path = Path(path)
        if not path.parent.exists():
            raise DataError(f"path: folder {str(path.parent)!r} does not exist")
        data = text.encode("utf-8")
        if path.suffix == ".gz":
            import gzip

            data = gzip.compress(data)
        path.write_bytes(data)

    def to_markov(self) -> Any:
        """The moralised network as a `MarkovNetwork` (one factor per table, Z = 1)."""
        from probgen.networks.markovnet import MarkovNetwork

        self.check_fitted("to_markov")
        factors = [([*self.parents[v], v], self.table(v)) for v in self.variables]
        return MarkovNetwork(
            factors,
            states={v: self._states_of(v) for v in self.variables},
            variables=self.variables,
        )

    # ---- encoding ----------------------------------------------------------------------------
    def encode(self, data: Any, name: str = "data", *, allow_missing: bool = True) -> Tensor:
        """State indices of `data` as a long tensor (n, n_variables), -1 where missing.

        Args:
            data: a DataFrame with (some of) the variables as columns, holding state names
                (NaN/None for missing; absent columns are missing), or an integer array or
                tensor (n, n_variables) of state indices (a float array may use NaN).
            name: the argument's name for error messages.
            allow_missing: whether missing entries are allowed.

        Raises:
            DataError: an unknown column, a state the variable does not have, a wrong shape.
        """
        if hasattr(data, "columns") and hasattr(data, "iloc"):
            return self._encode_frame(data, name, allow_missing)
        if isinstance(data, Tensor):
            tensor = data.detach()
        else:
            try:
                array = np.asarray(data)
                if array.dtype == object:
                    array = array.astype(np.float64)
                tensor = torch.from_numpy(np.ascontiguousarray(array))
            except (TypeError, ValueError) as error:
                raise DataError(f"{name} could not be read as an array of state indices") from error
        width = len(self.variables)
        if tensor.dim() < 1 or tensor.shape[-1] != width:
            raise DataError(
                f"{name} has shape {tuple(tensor.shape)}; its last dimension must be {width} "
                "(one column per variable)"
            )
        if tensor.numel() == 0:
            raise DataError(f"{name} is empty")
        tensor = tensor.reshape(-1, width)
        if tensor.is_floating_point():
            missing = torch.isnan(tensor)
            filled = torch.where(missing, torch.zeros_like(tensor), tensor)
            if not torch.equal(filled, filled.round()):
                raise DataError(f"{name} must hold whole numbers (state indices)")
            codes = torch.where(missing, torch.full_like(filled, -1), filled).long()
        elif tensor.dtype == torch.bool or tensor.dtype.is_complex:
            raise DataError(f"{name} must hold integer state indices, got {tensor.dtype}")
        else:
            codes = tensor.long()
            missing = torch.zeros_like(codes, dtype=torch.bool)
        cards = torch.tensor(self.cardinalities)
        bad = (~missing) & ((codes < 0) | (codes >= cards))
        if bad.any():
            row, column = (int(i) for i in bad.nonzero()[0])
            variable = self.variables[column]
            raise DataError(
                f"{name}[{row}] has state index {int(codes[row, column])} for variable "
                f"{variable!r}, which has {int(cards[column])} states"
            )
        if not allow_missing and missing.any():
            column = int(missing.nonzero()[0, 1])
            raise DataError(f"{name} has missing values for variable {self.variables[column]!r}")
        return codes.to(self.device)

    def _encode_frame(self, frame: Any, name: str, allow_missing: bool) -> Tensor:
        for column in frame.columns:
            if column not in self._position:
                raise DataError(f"{name} has column {column!r}, which is not a network variable")
        if len(frame) == 0:
            raise DataError(f"{name} is empty")
        import pandas as pd

        codes = self._encode_string_frame(frame)
        if codes is not None:
            if not allow_missing and (codes < 0).any():
                column = int(np.argwhere(codes < 0)[0, 1])
                raise DataError(
                    f"{name} has missing values for variable {self.variables[column]!r}"
                )
            return torch.from_numpy(codes).to(self.device)
        codes = np.full((len(frame), len(self.variables)), -1, dtype=np.int64)
        for column in frame.columns:
            labels = self._states_of(column)
            lookup = {label: i for i, label in enumerate(labels)}
            positions, uniques = pd.factorize(frame[column], use_na_sentinel=True)
            unique_codes = np.empty(len(uniques) + 1, dtype=np.int64)
            unique_codes[-1] = -1  # factorize marks missing values with -1
            for position, unique in enumerate(uniques):
                if _is_missing(unique):
                    unique_codes[position] = -1
                    continue
                key = _state_key(unique)
                if key not in lookup:
                    raise DataError(
                        f"{name} column {column!r} has state {unique!r}, which variable "
                        f"{column!r} does not have (states: {labels})"
                    )
                unique_codes[position] = lookup[key]
            codes[:, self._position[column]] = unique_codes[positions]
        if not allow_missing and (codes < 0).any():
            column = int(np.argwhere(codes < 0)[0, 1])
            raise DataError(f"{name} has missing values for variable {self.variables[column]!r}")
        return torch.from_numpy(codes).to(self.device)

    def _encode_string_frame(self, frame: Any) -> np.ndarray | None:
        """State indices of a frame that holds only state-name strings and missing values,
        in one pass over the whole frame (or None: another kind of frame, or a value that is
        not a state, which the column-by-column path in `_encode_frame` reports).

        Batched queries pass wide frames with a few observed cells per row; per-column
        factorisation cost tens of microseconds per column, more than the inference itself."""
        import pandas as pd

        columns = list(frame.columns)
        if len(set(columns)) != len(columns):
            return None
        values = frame.to_numpy(dtype=object).T  # (columns, rows): one column's cells together
        present = ~pd.isna(values)
        column_index, row_index = np.nonzero(present)
        codes = np.full((len(frame), len(self.variables)), -1, dtype=np.int64)
        if len(column_index) == 0:
            return codes
        positions, uniques = pd.factorize(values[present])
        # only strings: a number or bool could equal a value of another type in another
        # column (1 == 1.0 == True) and share its factorised code; those take the slow path
        if not all(isinstance(unique, str) for unique in uniques):
            return None
        pairs, inverse = np.unique(column_index * len(uniques) + positions, return_inverse=True)
        pair_codes = np.empty(len(pairs), dtype=np.int64)
        lookups: dict[int, dict[str, int]] = {}
        for k, pair in enumerate(pairs.tolist()):
            column, unique = divmod(pair, len(uniques))
            if column not in lookups:
                labels = self._states_of(columns[column])
                lookups[column] = {label: i for i, label in enumerate(labels)}
            code = lookups[column].get(uniques[unique])
            if code is None:
                return None
            pair_codes[k] = code
        targets = np.asarray([self._position[c] for c in columns], dtype=np.int64)
        codes[row_index, targets[column_index]] = pair_codes[inverse.reshape(-1)]
        return codes

    def decode(self, codes: Tensor) -> Any:
        """A DataFrame of state names from a tensor of state indices (n, n_variables)."""
        import pandas as pd

        codes = codes.detach().cpu().numpy()
        columns = {}
        for index, variable in enumerate(self.variables):
            labels = np.asarray(self._states_of(variable) + [None], dtype=object)
            columns[variable] = labels[codes[:, index]]
        return pd.DataFrame(columns)

    def _encode_evidence(self, evidence: Any, name: str = "evidence") -> tuple[Tensor, bool]:
        """Evidence as (codes (batch, n_variables) with -1 = unobserved, batched?)."""
        if evidence is None:
            return torch.full(
                (1, len(self.variables)), -1, dtype=torch.long, device=self.device
            ), False
        if isinstance(evidence, Mapping):
            codes = torch.full((1, len(self.variables)), -1, dtype=torch.long)
            for variable, state in evidence.items():
                index = self._index_of(variable, name)
                codes[0, index] = self._state_index(variable, state, name)
            return codes.to(self.device), False
        if hasattr(evidence, "columns"):
            return self._encode_frame(evidence, name, True), True
        raise DataError(
            f"{name} must be a dict {{variable: state}} or a DataFrame (one query per "
            f"row), got {type(evidence).__name__}"
        )

    def _state_index(self, variable: str, state: Any, name: str) -> int:
        labels = self._states_of(variable)
        key = _state_key(state)
        if key in labels:
            return labels.index(key)
        if (
            isinstance(state, (int, np.integer))
            and not isinstance(state, bool)
            and 0 <= int(state) < len(labels)
        ):
            return int(state)
        raise DataError(f"{name}: variable {variable!r} has no state {state!r} (states: {labels})")

    # ---- cached inference structures ---------------------------------------------------------
    def _tables_key(self) -> tuple:
        return tuple(
            (t.data_ptr(), t._version, str(t.device))
            for t in (self.table(v) for v in self.variables)
        )

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
        self, codes: Tensor, *, collect_only: bool = False
    ) -> Iterable[tuple[slice, list[Tensor | None], Tensor, dict[int, Tensor]]]:
        """Calibrate the junction tree on evidence rows (-1 = unobserved), in chunks."""
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

    def _flat_tables(self) -> dict[str, Tensor]:
        """All tables concatenated (probabilities, logs and row-wise cumulative sums)."""
        key = self._tables_key()
        cached = self._cache.get("flat")
        if cached is not None and cached[0] == key:
            return cached[1]
        tables = [self.table(v) for v in self.variables]
        flat = torch.cat([t.reshape(-1) for t in tables])
        sizes = torch.tensor([t.numel() for t in tables])
        offsets = torch.cumsum(sizes, 0) - sizes
        cumulative = torch.cat([t.cumsum(dim=-1).reshape(-1) for t in tables])
        width = len(self.variables)
        # strides[j, v]: how much variable j's state moves the flat index of v's table entry.
        strides = torch.zeros(width, width, dtype=torch.float64)
        for v, variable in enumerate(self.variables):
            family = [*self.parents[variable], variable]
            step = 1
            for member in reversed(family):
                strides[self._position[member], v] = step
                step *= len(self._states_of(member))
        result = {
            "probabilities": flat,
            "log_probabilities": torch.log(flat),
            "cumulative": cumulative,
            "offsets": offsets.to(flat.device),
            "strides": strides.to(flat.device),
            "order": torch.tensor([self._position[v] for v in nx.topological_sort(self.graph)]),
        }
        self._cache["flat"] = (key, result)
        return result

    # ---- density contract --------------------------------------------------------------------
    def log_prob(self, x: Any) -> Tensor:
        """Log probability of each row (missing values, NaN/None or absent columns, summed out).

        Args:
            x: DataFrame of state names, or integer tensor (*batch, n_variables) of state
                indices (float tensors may hold NaN for missing values).

        Returns:
            float64 tensor (*batch) (or (n_rows,) for a DataFrame).
        """
        self.check_fitted("log_prob")
        batch_shape = None
        if isinstance(x, Tensor) and x.dim() >= 1:
            batch_shape = x.shape[:-1]
        result = self._log_prob_codes(self.encode(x, "x"))
        return result.reshape(batch_shape) if batch_shape is not None else result

    def _log_prob_codes(self, codes: Tensor) -> Tensor:
        flat = self._flat_tables()
        missing = (codes < 0).any(dim=1)
        result = torch.empty(codes.shape[0], dtype=torch.float64, device=codes.device)
        complete = ~missing
        if complete.any():
            rows = codes[complete].to(torch.float64)
            index = (rows @ flat["strides"]).round().long() + flat["offsets"]
            result[complete] = flat["log_probabilities"][index].sum(dim=1)
        if missing.any():
            result[missing] = self._log_evidence(codes[missing])
        return result

    def _log_evidence(self, codes: Tensor) -> Tensor:
        """log P(observed part) of each row of `codes` (-1 = unobserved), by a JT collect pass."""
        parts = [log for _, _, log, _ in self._calibrate(codes, collect_only=True)]
        return torch.cat(parts)

    def sample(
        self,
        n: int,
        *,
        evidence: Mapping[str, Any] | None = None,
        method: str = "likelihood_weighting",
        seed: int | torch.Generator | None = None,
        as_frame: bool = False,
        num_chains: int = 4,
        burn_in: int = 100,
        thin: int = 1,
    ) -> Any:
        """Draw `n` joint samples.

        Without evidence: exact vectorised ancestral sampling, a long tensor (n, n_variables)
        of state indices (or a DataFrame of state names with `as_frame=True`). With evidence:
        `(samples, log_weights)` from likelihood weighting (weights are P(evidence | parents))
        or from Gibbs sampling (`method="gibbs"`, equal weights, `num_chains` chains after
        `burn_in` sweeps keeping every `thin`-th).

        Raises:
            DataError: unknown variables or states in the evidence, evidence of probability
                zero, a bad `n` or `method`.
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        if evidence is None:
            samples, _ = self._forward_sample(n, generator, None)
            return self.decode(samples) if as_frame else samples
        check_choice(method, "method", ("likelihood_weighting", "gibbs"))
        codes, batched = self._encode_evidence(evidence)
        if batched:
            raise DataError("evidence for sample must be a dict {variable: state}")
        self._check_evidence_possible(codes, evidence)
        if method == "likelihood_weighting":
            samples, log_weights = self._forward_sample(n, generator, codes[0])
        else:
            num_chains = check_positive_int(num_chains, "num_chains")
            per_chain = math.ceil(n / num_chains)
            draws = self._gibbs_draws(per_chain, codes[0], generator, num_chains, burn_in, thin)
            samples = draws.transpose(0, 1).reshape(-1, len(self.variables))[:n]
            log_weights = torch.zeros(n, dtype=torch.float64, device=samples.device)
        return (self.decode(samples) if as_frame else samples), log_weights

    def _sampling_plan(self) -> list[tuple[int, list[int], list[int], Tensor, Tensor]]:
        """Per variable in topological order: its column, parent columns, their strides in the
        table's parent-configuration index, inverse-CDF thresholds (n_states - 1,
        configurations) and log table (configurations, n_states)."""
        key = self._tables_key()
        cached = self._cache.get("sampling")
        if cached is not None and cached[0] == key:
            return cached[1]
        plan = []
        for variable in nx.topological_sort(self.graph):
            table = self.table(variable)
            rows = table.reshape(-1, table.shape[-1])
            strides, step = [], 1
            for parent in reversed(self.parents[variable]):
                strides.append(step)
                step *= len(self._states_of(parent))
            plan.append(
                (
                    self._position[variable],
                    [self._position[p] for p in self.parents[variable]],
                    strides[::-1],
                    _inverse_cdf_thresholds(rows),
                    torch.log(rows),
                )
            )
        self._cache["sampling"] = (key, plan)
        return plan

    def _forward_sample(
        self, n: int, generator: torch.Generator, clamp: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        device = self.device
        width = len(self.variables)
        # one row per variable (contiguous columns of the result), transposed at the end; int32
        # halves the memory traffic of the configuration arithmetic and of the final transpose
        samples = torch.empty(width, n, dtype=torch.int32, device=device)
        log_weights = torch.zeros(n, dtype=torch.float64, device=device)
        # all uniforms in one call: one generator pass instead of one per variable
        uniforms = torch.rand(width, n, generator=generator, device=device, dtype=torch.float64)
        clamped = clamp.tolist() if clamp is not None else [-1] * width
        for v, parents, strides, thresholds, log_rows in self._sampling_plan():
            config = None
            for parent, stride in zip(parents, strides):
                term = samples[parent] if stride == 1 else samples[parent] * stride
                config = term if config is None else config + term
            if clamped[v] >= 0:
                samples[v] = clamped[v]
                rows = log_rows[config] if config is not None else log_rows.expand(n, -1)
                log_weights = log_weights + rows[:, clamped[v]]
                continue
            _draw_states(uniforms[v], thresholds, config, out=samples[v])
        result = torch.empty(n, width, dtype=torch.long, device=device)
        return result.copy_(samples.T), log_weights

    def _check_evidence_possible(self, codes: Tensor, evidence: Any) -> None:
        log_evidence = self._log_evidence(codes)
        impossible = torch.isinf(log_evidence) & (log_evidence < 0)
        if impossible.any():
            row = int(impossible.nonzero()[0])
            observed = {
                self.variables[j]: self._states_of(self.variables[j])[int(codes[row, j])]
                for j in range(codes.shape[1])
                if int(codes[row, j]) >= 0
            }
            where = f" (row {row})" if codes.shape[0] > 1 else ""
            raise DataError(f"evidence{where} has probability zero: {observed}")

    def enumerate_support(self, max_size: int = 2**16) -> Tensor:
        """Every joint assignment, a long tensor (K, n_variables); only for small networks.

        Raises:
            DataError: the joint space has more than `max_size` states.
        """
        return enumerate_assignments(self.cardinalities, max_size, self.device)

    # ---- exact inference ---------------------------------------------------------------------
    def _relevant(self, names: Iterable[str]) -> list[int]:
        """Indices of `names` and their ancestors (the rest sums to one and is skipped)."""
        graph = self.graph
        keep = set(names)
        for variable in list(keep):
            keep |= nx.ancestors(graph, variable)
        return sorted(self._position[v] for v in keep)

    def _variables_argument(self, variables: Any, name: str) -> list[str]:
        if isinstance(variables, str):
            variables = [variables]
        variables = list(variables)
        if not variables:
            raise DataError(f"{name} must name at least one variable")
        for variable in variables:
            self._index_of(variable, name)
        if len(set(variables)) != len(variables):
            raise DataError(f"{name} names a variable twice")
        return variables

    def query(self, variables: str | Sequence[str], evidence: Any = None) -> Table:
        """Exact posterior table of `variables` given `evidence`, by variable elimination.

        Args:
            variables: a variable name or a list of them (their joint posterior is returned).
            evidence: dict {variable: state} or a DataFrame with one query per row (NaN/None
                where a row has no evidence on that column); a DataFrame runs as one batched
                contraction.

        Returns:
            `Table` whose values have shape (*n_states) or (n_queries, *n_states).

        Raises:
            DataError: unknown variables or states, evidence of probability zero.
        """
        self.check_fitted("query")
        variables = self._variables_argument(variables, "variables")
        codes, batched = self._encode_evidence(evidence)
        observed = [j for j in range(codes.shape[1]) if bool((codes[:, j] >= 0).any())]
        relevant = self._relevant(variables + [self.variables[j] for j in observed])
        factors = self._factors()
        operands = [factors[i] for i in relevant]
        cards = dict(enumerate(self.cardinalities))
        operands += list(ops.evidence_factors(codes[:, observed], observed, cards).values())
        keep = tuple(self._position[v] for v in variables)
        table, _ = ops.eliminate(operands, keep)
        values = table.values
        totals = values.reshape(values.shape[0], -1).sum(dim=1)
        if (totals <= 0).any():
            self._check_evidence_possible(codes, evidence)
        values = values / totals.reshape(-1, *([1] * len(keep)))
        if not batched:
            values = values[0]
        return Table(variables, {v: list(self._states_of(v)) for v in variables}, values)

    def marginals(
        self, evidence: Any = None, variables: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Posterior marginal of every variable, through a calibrated junction tree.

        The junction tree and its clique potentials are built once and reused; evidence enters
        as indicator vectors, so a DataFrame of evidence sets is one batched calibration.

        Args:
            evidence: dict {variable: state} or a DataFrame (one evidence set per row).
            variables: which marginals to return (default all).

        Returns:
            variable -> tensor (n_states,) or (n_queries, n_states).
        """
        self.check_fitted("marginals")
        names = (
            self.variables
            if variables is None
            else self._variables_argument(variables, "variables")
        )
        codes, batched = self._encode_evidence(evidence)
        pieces: dict[str, list[Tensor]] = {name: [] for name in names}
        for _, _, log_evidence, found in self._calibrate(codes):
            if torch.isinf(log_evidence).any():
                self._check_evidence_possible(codes, evidence)
            for name in names:
                pieces[name].append(found[self._position[name]])
        result = {name: torch.cat(parts) for name, parts in pieces.items()}
        return result if batched else {name: values[0] for name, values in result.items()}

    def map_query(self, variables: Sequence[str] | None = None, evidence: Any = None) -> Any:
        """Most probable joint state of `variables` given `evidence` (MPE when None).

        Returns:
            dict {variable: state name} for dict evidence, or a DataFrame (one row per query)
            for DataFrame evidence.
        """
        self.check_fitted("map_query")
        codes, batched = self._encode_evidence(evidence)
        observed = [j for j in range(codes.shape[1]) if bool((codes[:, j] >= 0).any())]
        if variables is None:
            variables = [
                self.variables[j]
                for j in range(codes.shape[1])
                if not bool((codes[:, j] >= 0).all())
            ]
        else:
            variables = self._variables_argument(variables, "variables")
        self._check_evidence_possible(codes, evidence)
        relevant = self._relevant(list(variables) + [self.variables[j] for j in observed])
        factors = self._factors()
        cards = dict(enumerate(self.cardinalities))
        operands = [factors[i] for i in relevant]
        operands += list(ops.evidence_factors(codes[:, observed], observed, cards).values())
        assignment, _ = ops.max_eliminate(operands, [self._position[v] for v in variables])
        labels = [
            {v: self._states_of(v)[int(s)] for v, s in zip(variables, row)}
            for row in assignment.tolist()
        ]
        if batched:
            import pandas as pd

            return pd.DataFrame(labels, columns=list(variables))
        return labels[0]

    # ---- approximate inference ---------------------------------------------------------------
    def approximate_marginals(
        self,
        evidence: Mapping[str, Any] | None = None,
        *,
        method: str = "loopy_bp",
        n_samples: int = 10_000,
        num_chains: int = 4,
        burn_in: int = 200,
        max_iter: int = 100,
        tol: float = 1e-8,
        damping: float = 0.0,
        seed: int | torch.Generator | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Approximate posterior marginals, with a report on how the method converged.

        Args:
            evidence: dict {variable: state}.
            method: "loopy_bp", "likelihood_weighting" or "gibbs".
            n_samples: samples for the sampling methods (in total over chains for Gibbs).
            num_chains: Gibbs chains (run in parallel).
            burn_in: Gibbs sweeps discarded per chain.
            max_iter: loopy BP iterations at most.
            tol: loopy BP stops when no message moves by more than this.
            damping: loopy BP damping.
            seed: randomness for the sampling methods.

        Returns:
            (marginals, info): variable -> tensor (n_states,), and a dict describing
            convergence: loopy BP `n_iter`, `converged`, `max_change`; likelihood weighting
            `effective_sample_size`; Gibbs `r_hat` (largest over state indicators),
            `effective_sample_size` (smallest) and `converged` (r_hat < 1.05).
        """
        self.check_fitted("approximate_marginals")
        check_choice(method, "method", ("loopy_bp", "likelihood_weighting", "gibbs"))
        codes, batched = self._encode_evidence(evidence)
        if batched:
            raise DataError("evidence for approximate_marginals must be a dict")
        cards = dict(enumerate(self.cardinalities))
        if method == "loopy_bp":
            observed = [j for j in range(codes.shape[1]) if int(codes[0, j]) >= 0]
            found, info = ops.loopy_belief_propagation(
                self._factors(),
                cards,
                ops.evidence_factors(codes[:, observed], observed, cards),
                max_iter=max_iter,
                tol=tol,
                damping=damping,
            )
            if not info["converged"]:
                warnings.warn(
                    f"loopy belief propagation did not converge in {max_iter} iterations "
                    f"(last change {info['max_change']:.3g})",
                    ConvergenceWarning,
                    stacklevel=2,
                )
            return {v: found[i][0] for i, v in enumerate(self.variables)}, info
        self._check_evidence_possible(codes, evidence)
        generator = self.make_generator(seed)
        n_samples = check_positive_int(n_samples, "n_samples")
        if method == "likelihood_weighting":
            samples, log_weights = self._forward_sample(n_samples, generator, codes[0])
            weights = torch.softmax(log_weights, dim=0)
            ess = float(1.0 / (weights**2).sum())
            marginals = {}
            for i, v in enumerate(self.variables):
                counts = torch.zeros(cards[i], dtype=torch.float64, device=samples.device)
                marginals[v] = counts.index_add_(0, samples[:, i], weights)
            return marginals, {"effective_sample_size": ess, "n_samples": n_samples}
        num_chains = check_positive_int(num_chains, "num_chains")
        per_chain = max(1, math.ceil(n_samples / num_chains))
        draws = self._gibbs_draws(per_chain, codes[0], generator, num_chains, burn_in, 1)
        marginals, info = _chain_summary(draws, self.cardinalities, self.variables)
        return marginals, info

    # ---- Gibbs sampling ----------------------------------------------------------------------
    def _gibbs_plan(self) -> list[tuple[int, Tensor, Tensor, Tensor, Tensor]]:
        """Per variable: its Markov-blanket factors' columns, strides and offsets."""
        key = self._tables_key()
        cached = self._cache.get("gibbs")
        if cached is not None and cached[0] == key:
            return cached[1]
        flat = self._flat_tables()
        strides = flat["strides"]
        device = strides.device
        plan = []
        children: dict[str, list[str]] = {v: [] for v in self.variables}
        for child, given in self.parents.items():
            for p in given:
                children[p].append(child)
        for v in flat["order"].tolist():
            variable = self.variables[v]
            owners = [v] + [self._position[c] for c in children[variable]]
            # factor_strides[f, j] = stride of variable j inside factor f's table
            factor_strides = strides[:, owners].T.long()
            own_stride = factor_strides[:, v]
            offsets = flat["offsets"][owners]
            plan.append(
                (
                    v,
                    factor_strides,
                    own_stride,
                    offsets,
                    torch.arange(self.cardinalities[v], device=device),
                )
            )
        self._cache["gibbs"] = (key, plan)
        return plan

    def initial_state(
        self,
        num_chains: int,
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """Starting states for `num_chains` Gibbs chains: ancestral draws with evidence clamped.

        Draws whose evidence has probability zero under the sampled parents are redrawn.

        Returns:
            long tensor (num_chains, n_variables).
        """
        self.check_fitted("initial_state")
        num_chains = check_positive_int(num_chains, "num_chains")
        generator = generator if generator is not None else self.make_generator(None)
        codes, _ = self._encode_evidence(evidence)
        if evidence:
            self._check_evidence_possible(codes, evidence)
        clamp = codes[0] if evidence else None
        state, log_weights = self._forward_sample(num_chains, generator, clamp)
        for _ in range(100):
            bad = torch.isinf(log_weights)
            if not bad.any():
                break
            redraw, redraw_weights = self._forward_sample(int(bad.sum()), generator, clamp)
            state[bad] = redraw
            log_weights[bad] = redraw_weights
        return state

    def gibbs_step(
        self,
        state: Tensor,
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """One Gibbs sweep over every unobserved variable, vectorised over chains.

        Each variable is redrawn from its full conditional given its Markov blanket.

        Args:
            state: long tensor (num_chains, n_variables) of state indices.
            generator: source of randomness.
            evidence: dict {variable: state}; those variables are clamped.

        Returns:
            The new state, a long tensor (num_chains, n_variables).
        """
        self.check_fitted("gibbs_step")
        check_chain_state(state, len(self.variables))
        generator = generator if generator is not None else self.make_generator(None)
        codes, _ = self._encode_evidence(evidence)
        state, observed = clamp_chains(state, codes[0], self.device)
        log_table = self._flat_tables()["log_probabilities"]
        for v, factor_strides, own_stride, offsets, states in self._gibbs_plan():
            if bool(observed[v]):
                continue
            base = state @ factor_strides.T + offsets - state[:, v : v + 1] * own_stride
            index = base[:, :, None] + states[None, None, :] * own_stride[None, :, None]
            state[:, v] = draw_states(log_table[index].sum(dim=1), generator)
        return state

    def _gibbs_draws(
        self,
        per_chain: int,
        clamp: Tensor,
        generator: torch.Generator,
        num_chains: int,
        burn_in: int,
        thin: int,
    ) -> Tensor:
        """Gibbs draws shaped (num_chains, per_chain, n_variables)."""
        evidence = {
            self.variables[j]: int(clamp[j])
            for j in range(len(self.variables))
            if int(clamp[j]) >= 0
        }
        state = self.initial_state(num_chains, generator=generator, evidence=evidence or None)
        for _ in range(int(burn_in)):
            state = self.gibbs_step(state, generator=generator, evidence=evidence or None)
        draws = []
        for _ in range(per_chain):
            for _ in range(max(1, int(thin))):
                state = self.gibbs_step(state, generator=generator, evidence=evidence or None)
            draws.append(state)
        return torch.stack(draws, dim=1)

    # ---- learning ----------------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        *,
        method: str = "mle",
        prior: str = "bdeu",
        equivalent_sample_size: float = 5.0,
        pseudo_counts: Mapping[str, Any] | float | None = None,
        latent: Mapping[str, Sequence[Any] | int] | None = None,
        max_iter: int = 100,
        tol: float = 1e-6,
        seed: int | None = None,
    ) -> BayesianNetwork:
        """Fit the tables to data: maximum likelihood or Dirichlet/BDeu posterior mean; EM when
        values are missing or variables latent.

        Args:
            data: DataFrame of state names (NaN/None for missing; columns may be absent) or an
                integer array (n, n_variables) of state indices.
            method: "mle" or "bayes" (adds pseudo-counts).
            prior: for "bayes": "bdeu" (equivalent_sample_size spread evenly over each table),
                "k2" (one per cell) or "dirichlet" (use `pseudo_counts`).
            equivalent_sample_size: BDeu's equivalent sample size.
            pseudo_counts: for "dirichlet": one number or variable -> array broadcastable to
                its table.
            latent: variables absent from the data, with their states (a list or a count).
            max_iter: EM iterations at most.
            tol: EM stops when the log-likelihood per row improves by less than this.
            seed: random initialisation of latent variables' tables.

        Returns:
            self, with `history_` (log-likelihood per EM iteration), `n_iter_`, `converged_`.

        Raises:
            DataError: unknown columns, states the variable does not have, a latent variable
                without states.
        """
        check_choice(method, "method", ("mle", "bayes"))
        check_choice(prior, "prior", ("bdeu", "k2", "dirichlet"))
        max_iter = check_positive_int(max_iter, "max_iter")
        for variable, spec in (latent or {}).items():
            self._index_of(variable, "latent")
            labels = (
                [str(i) for i in range(spec)] if isinstance(spec, int) else [str(s) for s in spec]
            )
            if len(labels) < 1:
                raise DataError(f"latent[{variable!r}] needs at least one state")
            self.states[variable] = labels
        self._infer_states(data, latent or {})
        for index, variable in enumerate(self.variables):
            shape = self._table_shape(variable)
            if tuple(getattr(self, f"table_{index}").shape) != shape:
                self._buffers[f"table_{index}"] = self._uniform_table(variable).to(self.device)
        self._cache.clear()
        codes = self.encode(data, "data")
        pseudo = self._pseudo_counts(method, prior, equivalent_sample_size, pseudo_counts)
        missing = (codes < 0).any(dim=1)
        history: list[float] = []
        if not missing.any():
            counts = self._complete_counts(codes)
            self._m_step(counts, pseudo)
            self.history_ = [float(self._log_prob_codes(codes).sum())]
            self.n_iter_ = 1
            self.converged_ = True
            self._mark_fitted()
            return self
        unique, multiplicity = torch.unique(codes, dim=0, return_counts=True)
        is_partial = (unique < 0).any(dim=1)
        complete_counts = self._complete_counts(
            unique[~is_partial], multiplicity[~is_partial].to(torch.float64)
        )
        partial, partial_weight = unique[is_partial], multiplicity[is_partial].to(torch.float64)
        if not self.fitted_:
            self._initialise_for_em(complete_counts, pseudo, latent or {}, seed)
        self.converged_ = False
        total_rows = float(multiplicity.sum())
        iteration = 0
        for step in range(1, max_iter + 1):
            iteration = step
            expected, partial_loglik = self._expected_counts(partial, partial_weight)
            complete_loglik = (
                float((self._log_prob_codes(unique[~is_partial]) * multiplicity[~is_partial]).sum())
                if (~is_partial).any()
                else 0.0
            )
            history.append(complete_loglik + partial_loglik)
            counts = {v: complete_counts[v] + expected[v] for v in self.variables}
            self._m_step(counts, pseudo)
            if len(history) > 1 and abs(history[-1] - history[-2]) < tol * total_rows:
                self.converged_ = True
                break
        self.history_ = history
        self.n_iter_ = iteration
        if not self.converged_:
            warnings.warn(
                f"EM stopped after max_iter={max_iter} iterations before reaching tol={tol}",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._mark_fitted()
        return self

    def _infer_states(self, data: Any, latent: Mapping[str, Any]) -> None:
        unknown = [v for v in self.variables if self.states[v] is None]
        if not unknown:
            return
        if not hasattr(data, "columns"):
            array = np.asarray(data)
            if array.ndim != 2 or array.shape[1] != len(self.variables):
                raise DataError(
                    f"data must have {len(self.variables)} columns to infer the states of "
                    f"{unknown[0]!r}"
                )
            for variable in unknown:
                column = array[:, self._position[variable]].astype(np.float64)
                top = int(np.nanmax(column)) if np.isfinite(column).any() else 0
                self.states[variable] = [str(i) for i in range(top + 1)]
            return
        for variable in unknown:
            if variable not in data.columns:
                raise DataError(
                    f"variable {variable!r} is not a column of data and has no states; "
                    "give latent={name: states} or states="
                )
            values = [v for v in pd_unique(data[variable].to_numpy()) if not _is_missing(v)]
            if not values:
                raise DataError(f"data column {variable!r} has no observed values")
            try:
                values = sorted(values)
            except TypeError:
                values = sorted(values, key=str)
            self.states[variable] = [_state_key(v) for v in values]

    def _pseudo_counts(
        self, method: str, prior: str, ess: float, pseudo_counts: Any
    ) -> dict[str, Tensor]:
        result = {}
        for variable in self.variables:
            shape = self._table_shape(variable)
            zeros = torch.zeros(shape, dtype=torch.float64, device=self.device)
            if method == "mle":
                result[variable] = zeros
            elif prior == "bdeu":
                if not ess > 0:
                    raise DataError("equivalent_sample_size must be positive")
                result[variable] = zeros + ess / math.prod(shape)
            elif prior == "k2":
                result[variable] = zeros + 1.0
            else:
                if pseudo_counts is None:
                    raise DataError("prior='dirichlet' needs pseudo_counts")
                given = (
                    pseudo_counts.get(variable, 0.0)
                    if isinstance(pseudo_counts, Mapping)
                    else pseudo_counts
                )
                try:
                    value = zeros + torch.as_tensor(np.asarray(given, dtype=np.float64)).to(
                        self.device
                    )
                except RuntimeError as error:
                    raise DataError(
                        f"pseudo_counts[{variable!r}] does not broadcast to shape {shape}"
                    ) from error
                if (value < 0).any():
                    raise DataError(f"pseudo_counts[{variable!r}] must be non-negative")
                result[variable] = value
        return result

    def _complete_counts(self, codes: Tensor, weights: Tensor | None = None) -> dict[str, Tensor]:
        flat = self._flat_tables()
        total = flat["probabilities"].numel()
        if codes.shape[0] == 0:
            counts = torch.zeros(total, dtype=torch.float64, device=self.device)
        else:
            index = (codes.to(torch.float64) @ flat["strides"]).round().long() + flat["offsets"]
            if weights is None:
                weights = torch.ones(codes.shape[0], dtype=torch.float64, device=codes.device)
            counts = torch.zeros(total, dtype=torch.float64, device=codes.device)
            counts.index_add_(0, index.reshape(-1), weights[:, None].expand_as(index).reshape(-1))
        result = {}
        for i, variable in enumerate(self.variables):
            start = int(flat["offsets"][i])
            shape = self._table_shape(variable)
            result[variable] = counts[start : start + math.prod(shape)].reshape(shape)
        return result

    def _m_step(self, counts: Mapping[str, Tensor], pseudo: Mapping[str, Tensor]) -> None:
        for variable in self.variables:
            total = counts[variable] + pseudo[variable]
            sums = total.sum(dim=-1, keepdim=True)
            uniform = torch.full_like(total, 1.0 / total.shape[-1])
            table = torch.where(sums > 0, total / torch.where(sums > 0, sums, 1.0), uniform)
            self._buffers[f"table_{self._position[variable]}"] = table
        self._cache.pop("junction_tree", None)
        self._cache.pop("flat", None)
        self._cache.pop("gibbs", None)

    def _initialise_for_em(
        self,
        complete_counts: Mapping[str, Tensor],
        pseudo: Mapping[str, Tensor],
        latent: Mapping[str, Any],
        seed: int | None,
    ) -> None:
        generator = self.make_generator(seed if seed is not None else 0)
        for variable in self.variables:
            shape = self._table_shape(variable)
            noise = torch.rand(shape, generator=generator, dtype=torch.float64, device=self.device)
            # Latent variables (and their children) need asymmetric starting tables, or EM
            # stays at the symmetric fixed point.
            touched = variable in latent or any(p in latent for p in self.parents[variable])
            counts = (
                complete_counts[variable] + pseudo[variable] + (noise if touched else 1e-3 * noise)
            )
            self._buffers[f"table_{self._position[variable]}"] = counts / counts.sum(
                dim=-1, keepdim=True
            )
        self._cache.pop("junction_tree", None)
        self._cache.pop("flat", None)

    def _expected_counts(self, partial: Tensor, weights: Tensor) -> tuple[dict[str, Tensor], float]:
        expected = {
            v: torch.zeros(self._table_shape(v), dtype=torch.float64, device=self.device)
            for v in self.variables
        }
        loglik = 0.0
        if partial.shape[0] == 0:
            return expected, loglik
        plan = self._dense_tree()
        for rows, beliefs, log_evidence, _ in self._calibrate(partial):
            if torch.isinf(log_evidence).any():
                self._check_evidence_possible(partial[rows], None)
            row_weights = weights[rows]
            loglik += float((log_evidence * row_weights).sum())
            for i, variable in enumerate(self.variables):
                family = (*(self._position[p] for p in self.parents[variable]), i)
                clique = plan.tree.factor_clique[i]
                belief = ops.belief_marginal(plan, beliefs, clique, family)
                expected[variable] += torch.tensordot(row_weights, belief, dims=1)
        return expected, loglik


def _inverse_cdf_thresholds(rows: Tensor) -> Tensor:
    """Thresholds (n_states - 1, configurations) for inverse-CDF draws from table rows
    (configurations, n_states): state k is drawn when exactly k thresholds are <= u.

    Threshold k is P(state <= k), except +inf when no later state has probability: then
    rounding in the cumulative sums can never select a state of probability zero.
    """
    cumulative = rows.cumsum(dim=1)[:, :-1]
    later = rows.flip(1).cumsum(dim=1).flip(1)[:, 1:]
    thresholds = torch.where(later > 0, cumulative, torch.inf)
    return thresholds.T.contiguous()


def _draw_states(
    uniforms: Tensor, thresholds: Tensor, config: Tensor | None, *, out: Tensor
) -> Tensor:
    """Inverse-CDF draw of one variable for every row, written into `out` (integer, (n,)).

    The state is the number of the row's thresholds (picked by its parent configuration
    `config`, None for a root) that are <= u: one gather and one comparison per state
    boundary, which beats gathering whole cumulative rows and a `searchsorted`.
    """
    if thresholds.shape[0] == 0:  # a single state
        return out.zero_()
    for k in range(thresholds.shape[0]):
        # a root has one configuration: its threshold broadcasts over the rows
        boundary = thresholds[k] if config is None else thresholds[k].index_select(0, config)
        passed = uniforms >= boundary
        if k == 0:
            out.copy_(passed)
        else:
            out.add_(passed)
    return out


def _state_key(value: Any) -> str:
    """State names are strings; numbers match their plain spelling (1.0 matches "1")."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    return str(value)


def pd_unique(values: np.ndarray) -> np.ndarray:
    """Unique values of a column (pandas' hash-based unique keeps object columns fast)."""
    import pandas as pd

    return pd.unique(pd.Series(values)).astype(object)


def _chain_summary(
    draws: Tensor, cardinalities: Sequence[int], variables: Sequence[str]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Marginals from Gibbs draws (chains, draws, variables) with split-free R-hat and ESS."""
    num_chains, per_chain, _ = draws.shape
    marginals: dict[str, Tensor] = {}
    worst_r_hat = 1.0
    smallest_ess = float("inf")
    for i, variable in enumerate(variables):
        indicators = torch.nn.functional.one_hot(draws[:, :, i], cardinalities[i]).to(torch.float64)
        marginals[variable] = indicators.mean(dim=(0, 1))
        if per_chain < 4:
            continue
        chain_means = indicators.mean(dim=1)
        chain_vars = indicators.var(dim=1)
        within = chain_vars.mean(dim=0)
        between = per_chain * chain_means.var(dim=0) if num_chains > 1 else torch.zeros_like(within)
        pooled = (per_chain - 1) / per_chain * within + between / per_chain
        varying = within > 1e-12
        if varying.any():
            r_hat = torch.sqrt(pooled[varying] / within[varying])
            worst_r_hat = max(worst_r_hat, float(r_hat.max()))
            centred = indicators[:, :, varying] - indicators[:, :, varying].mean(
                dim=1, keepdim=True
            )
            lag1 = (centred[:, 1:] * centred[:, :-1]).mean(dim=1) / centred.pow(2).mean(
                dim=1
            ).clamp_min(1e-12)
            rho = lag1.mean(dim=0).clamp(-0.99, 0.99)
            ess = num_chains * per_chain * (1 - rho) / (1 + rho)
            smallest_ess = min(smallest_ess, float(ess.min()))
    info = {
        "r_hat": worst_r_hat,
        "effective_sample_size": smallest_ess,
        "converged": worst_r_hat < 1.05,
        "num_chains": num_chains,
        "draws_per_chain": per_chain,
    }
    return marginals, info


def read_bif(path: str | Path) -> BayesianNetwork:
    """Read a BIF file (`.bif` or `.bif.gz`) into a `BayesianNetwork`.

    Example:
        >>> from probgen.networks.bif import pgmpy_example_path
        >>> read_bif(pgmpy_example_path("asia")).variables[:3]
        ['asia', 'tub', 'smoke']
    """
    return BayesianNetwork.read_bif(path)
