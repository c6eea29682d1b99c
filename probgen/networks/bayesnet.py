"""Discrete Bayesian networks: exact and approximate inference, sampling, learning, interop.

`BayesianNetwork` holds a DAG over named discrete variables (`.graph`, a `networkx.DiGraph`)
and one conditional probability table per variable, shaped (*parent_cardinalities, n_states)
(the variable's own states along the last axis). Inference is batched tensor code from
`probgen.networks.factors`: a DataFrame of evidence (one query per row) is one contraction;
`marginals` reuses a calibrated junction tree across evidence sets.

This module holds the class (storage, tables, `log_prob`, `sample`); its other jobs live in
mixins: `queries` (exact inference), `approximate` (loopy BP, likelihood weighting, Gibbs),
`learning` (ML/Bayesian parameters, EM) and `interop` (pgmpy, BIF, Markov networks).

Example:
    >>> import probgen
    >>> asia = probgen.BayesianNetwork.from_example("asia")
    >>> round(float(asia.query("lung", {"smoke": "yes"}).values[0]), 6)
    0.1
    >>> asia.sample(3, seed=0).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from probgen.core.contract import LogProbKind, Model
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.networks.approximate import ApproximateMixin
from probgen.networks.codec import StateCodec, enumerate_assignments
from probgen.networks.interop import InteropMixin
from probgen.networks.learning import LearningMixin
from probgen.networks.queries import QueriesMixin, Table

__all__ = ["BayesianNetwork", "Table", "read_bif"]

_NORMALISATION_TOLERANCE = 1e-4


class BayesianNetwork(QueriesMixin, ApproximateMixin, LearningMixin, InteropMixin, Model):
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
        method: `fit`'s estimator, "mle" or "bayes" (adds pseudo-counts).
        prior: for "bayes": "bdeu" (equivalent_sample_size spread evenly over each table),
            "k2" (one per cell) or "dirichlet" (use `pseudo_counts`).
        equivalent_sample_size: BDeu's equivalent sample size.
        pseudo_counts: for "dirichlet": one number or variable -> array broadcastable to its
            table.
        latent: variables absent from the data, with their states (a list or a count).
        max_iter: EM iterations at most.
        tol: EM stops when the log-likelihood per row changes by less than this.
        seed: random initialisation of the tables before EM.

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
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    def __init__(
        self,
        edges: Iterable[tuple[str, str]] | None = None,
        tables: Mapping[str, Any] | None = None,
        *,
        states: Mapping[str, Sequence[Any]] | None = None,
        parents: Mapping[str, Sequence[str]] | None = None,
        variables: Sequence[str] | None = None,
        name: str = "network",
        method: str = "mle",
        prior: str = "bdeu",
        equivalent_sample_size: float = 5.0,
        pseudo_counts: Mapping[str, Any] | float | None = None,
        latent: Mapping[str, Sequence[Any] | int] | None = None,
        max_iter: int = 100,
        tol: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.name = str(name)
        self.method = method
        self.prior = prior
        self.equivalent_sample_size = equivalent_sample_size
        self.pseudo_counts = pseudo_counts
        self.latent = latent
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
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
        # the codec shares `variables` and `states` (fit fills in states it learns)
        self._codec = StateCodec(self.variables, self.states)
        self._position = self._codec.position
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
        return self._codec.states_of(variable)

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
        return self._codec.index_of(variable, argument)

    def get_config(self) -> dict[str, Any]:
        # tables are saved as tensors and edges as `parents`: the JSON form differs from the
        # constructor's arguments, so this overrides the signature-derived config
        return {
            "parents": {v: list(p) for v, p in self.parents.items()},
            "states": {v: list(s) for v, s in self.states.items() if s is not None},
            "variables": list(self.variables),
            "name": self.name,
            "method": self.method,
            "prior": self.prior,
            "equivalent_sample_size": self.equivalent_sample_size,
            "pseudo_counts": _json_counts(self.pseudo_counts),
            "latent": _json_latent(self.latent),
            "max_iter": self.max_iter,
            "tol": self.tol,
            "seed": self.seed,
        }

    def set_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().set_tensors(tensors)
        self._cache.clear()

    # ---- encoding ----------------------------------------------------------------------------
    def encode(self, data: Any, name: str = "data", *, allow_missing: bool = True) -> Tensor:
        """State indices of `data` as a long tensor (n, n_variables), -1 where missing.

        See `StateCodec.encode` for the accepted forms.

        Raises:
            DataError: an unknown column, a state the variable does not have, a wrong shape.
        """
        return self._codec.encode(data, name, allow_missing=allow_missing, device=self.device)

    def decode(self, codes: Tensor) -> Any:
        """A DataFrame of state names from a tensor of state indices (n, n_variables)."""
        return self._codec.decode(codes)

    def _encode_evidence(self, evidence: Any, name: str = "evidence") -> tuple[Tensor, bool]:
        """Evidence as (codes (batch, n_variables) with -1 = unobserved, batched?)."""
        return self._codec.encode_evidence(evidence, name, self.device)

    # ---- cached inference structures ---------------------------------------------------------
    def _tables_key(self) -> tuple:
        return tuple(
            (t.data_ptr(), t._version, str(t.device))
            for t in (self.table(v) for v in self.variables)
        )

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


def _json_counts(pseudo_counts: Any) -> Any:
    """`pseudo_counts` in a JSON form (arrays as nested lists)."""
    if pseudo_counts is None or isinstance(pseudo_counts, (int, float)):
        return pseudo_counts
    if isinstance(pseudo_counts, Mapping):
        return {str(v): _json_counts(c) for v, c in pseudo_counts.items()}
    if isinstance(pseudo_counts, Tensor):
        pseudo_counts = pseudo_counts.detach().cpu().numpy()
    return np.asarray(pseudo_counts, dtype=np.float64).tolist()


def _json_latent(latent: Any) -> Any:
    """`latent` in a JSON form (state lists as lists of strings, counts as ints)."""
    if latent is None:
        return None
    return {
        str(v): int(spec) if isinstance(spec, int) else [str(s) for s in spec]
        for v, spec in latent.items()
    }


def read_bif(path: str | Path) -> BayesianNetwork:
    """Read a BIF file (`.bif` or `.bif.gz`) into a `BayesianNetwork`.

    Example:
        >>> from probgen.networks.bif import pgmpy_example_path
        >>> read_bif(pgmpy_example_path("asia")).variables[:3]
        ['asia', 'tub', 'smoke']
    """
    return BayesianNetwork.read_bif(path)
