"""Dynamic Bayesian networks: a two-slice temporal discrete network (2TBN).

`DynamicBayesianNetwork` holds a prior slice (the network of the variables at time 0) and a
transition slice (each variable at time t given its parents at time t-1, the inter-slice
edges, and at time t, the intra-slice edges). Sequences are tensors (n_sequences, length,
n_variables) of state indices (-1 or NaN where a value is missing), lists of such arrays of
different lengths, or lists of DataFrames of state names.

`log_prob` is exact: complete sequences are one gather of table entries; sequences with
missing values run a scaled forward-backward pass whose messages range over the interface (the
variables with a child in the next slice; `probgen.networks.dynamic_inference`), which also
gives `filter` and `smooth`. `fit` counts
(complete data) or runs EM on the shared driver (missing values). `unroll(T)` gives the
equivalent `BayesianNetwork` over T slices, `to_pgmpy()` pgmpy's `DynamicBayesianNetwork`,
and `probgen.networks.dynamic_structure.learn_dbn_structure` learns the transition slice.

Example:
    >>> dbn = DynamicBayesianNetwork(
    ...     {"rain": ["no", "yes"], "umbrella": ["no", "yes"]},
    ...     intra_edges=[("rain", "umbrella")],
    ...     inter_edges=[("rain", "rain")],
    ...     prior_tables={"rain": [0.5, 0.5], "umbrella": [[0.8, 0.2], [0.1, 0.9]]},
    ...     transition_tables={"rain": [[0.7, 0.3], [0.3, 0.7]],
    ...                        "umbrella": [[0.8, 0.2], [0.1, 0.9]]},
    ... )
    >>> sequences = torch.tensor([[[-1, 1], [-1, 1]]])  # umbrella seen twice, rain hidden
    >>> [round(p, 4) for p in dbn.filter(sequences)["rain"][0, 1].tolist()]
    [0.1166, 0.8834]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import networkx as nx
import torch
from torch import Tensor

from probgen.core.contract import LogProbKind, Model
from probgen.core.data import as_sequences, check_positive_int
from probgen.core.errors import DataError
from probgen.core.threads import small_op_threads
from probgen.networks.bayesnet import BayesianNetwork, _draw_states, _inverse_cdf_thresholds
from probgen.networks.codec import StateCodec, enumerate_assignments
from probgen.networks.dynamic_inference import (
    evidence_masks,
    family_index,
    forward_backward,
    joint_log_table,
)
from probgen.networks.dynamic_learning import DynamicLearningMixin

__all__ = ["DynamicBayesianNetwork"]

_TOLERANCE = 1e-4


def _edge_list(edges: Iterable[Any] | None, name: str) -> list[tuple[str, str]]:
    result: list[tuple[str, str]] = []
    for edge in edges or ():
        if not isinstance(edge, (tuple, list)) or len(edge) != 2:
            raise DataError(f"{name}: each edge must be a (parent, child) pair, got {edge!r}")
        pair = (edge[0], edge[1])
        if pair in result:
            raise DataError(f"{name}: edge {pair!r} is listed twice")
        result.append(pair)
    return result


class DynamicBayesianNetwork(DynamicLearningMixin, Model):
    """A discrete two-slice dynamic Bayesian network.

    Args:
        states: variable -> list of state names, or a number of states (names "0", "1", ...);
            the keys' order is the column order of sequences.
        intra_edges: (parent, child) pairs within a slice at t >= 1.
        inter_edges: (parent, child) pairs from slice t-1 to slice t (a variable may be its
            own parent).
        prior_edges: (parent, child) pairs within the slice at time 0 (default: intra_edges).
        prior_tables: variable -> table of shape (*prior_parent_cardinalities, n_states).
        transition_tables: variable -> table of shape (*inter_parent_cardinalities,
            *intra_parent_cardinalities, n_states): the parents at t-1 (in the order of
            `inter_edges`) come first, then those at t (in the order of `intra_edges`).
        pseudocount: added to every count at `fit` (0: maximum likelihood).
        max_iter: EM iterations at most (missing values).
        tol: EM stops when the log-likelihood per sequence changes by less than this.
        seed: seeds the random start of EM.
        max_joint_states: the largest slice joint state space that inference with missing
            values (forward-backward over the joint state) may build.

    Attributes:
        variables: the variables, in column order.
        prior_parents: each variable's parents in the prior slice, in table-axis order.
        inter_parents: each variable's parents in the previous slice, in table-axis order.
        intra_parents: each variable's parents in its own slice (t >= 1), in table-axis order.
        interface: the variables with a child in the next slice.

    Raises:
        DataError: unknown variables, cyclic intra-slice or prior edges, tables of the wrong
            shape or not summing to one (messages name the variable).
    """

    log_prob_kind = LogProbKind.EXACT
    is_sequence_model = True

    def __init__(
        self,
        states: Mapping[str, Sequence[Any] | int],
        intra_edges: Iterable[tuple[str, str]] = (),
        inter_edges: Iterable[tuple[str, str]] = (),
        *,
        prior_edges: Iterable[tuple[str, str]] | None = None,
        prior_tables: Mapping[str, Any] | None = None,
        transition_tables: Mapping[str, Any] | None = None,
        pseudocount: float = 0.0,
        max_iter: int = 100,
        tol: float = 1e-6,
        seed: int | None = None,
        max_joint_states: int = 4096,
    ) -> None:
        super().__init__()
        if not isinstance(states, Mapping) or not states:
            raise DataError("states must be a non-empty mapping variable -> state names")
        self.states: dict[str, list[str]] = {}
        for variable, spec in states.items():
            if not isinstance(variable, str) or not variable:
                raise DataError(f"states: variable names must be strings, got {variable!r}")
            labels = (
                [str(i) for i in range(spec)] if isinstance(spec, int) else [str(s) for s in spec]
            )
            if not labels or len(set(labels)) != len(labels):
                raise DataError(f"states[{variable!r}] must be a non-empty list of unique names")
            self.states[variable] = labels
        self.variables = list(self.states)
        self.intra_edges = _edge_list(intra_edges, "intra_edges")
        self.inter_edges = _edge_list(inter_edges, "inter_edges")
        self.prior_edges = (
            list(self.intra_edges)
            if prior_edges is None
            else _edge_list(prior_edges, "prior_edges")
        )
        for name, edges in (("intra_edges", self.intra_edges), ("inter_edges", self.inter_edges),
                            ("prior_edges", self.prior_edges)):
            for parent, child in edges:
                for variable in (parent, child):
                    if variable not in self.states:
                        raise DataError(f"{name}: unknown variable {variable!r}")
        for name in ("intra_edges", "prior_edges"):
            graph = nx.DiGraph(getattr(self, name))
            graph.add_nodes_from(self.variables)
            if not nx.is_directed_acyclic_graph(graph):
                cycle = " -> ".join(str(edge[0]) for edge in nx.find_cycle(graph))
                raise DataError(f"{name} form a cycle ({cycle}); a slice must be a DAG")
        self.prior_parents = {v: [p for p, c in self.prior_edges if c == v] for v in self.states}
        self.inter_parents = {v: [p for p, c in self.inter_edges if c == v] for v in self.states}
        self.intra_parents = {v: [p for p, c in self.intra_edges if c == v] for v in self.states}
        self.pseudocount = float(pseudocount)
        if self.pseudocount < 0:
            raise DataError(f"pseudocount must be >= 0, got {pseudocount!r}")
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = float(tol)
        self.seed = seed
        self.max_joint_states = check_positive_int(max_joint_states, "max_joint_states")
        self.event_shape = torch.Size([len(self.variables)])
        self._position = {v: i for i, v in enumerate(self.variables)}
        self._codec = StateCodec(self.variables, self.states)  # type: ignore[arg-type]
        self._cache: dict[str, Any] = {}
        for index, variable in enumerate(self.variables):
            for kind in ("prior", "transition"):
                shape = self.table_shape(variable, kind)
                self.register_buffer(
                    f"{kind}_{index}", torch.full(shape, 1.0 / shape[-1], dtype=torch.float64)
                )
        for kind, tables in (("prior", prior_tables), ("transition", transition_tables)):
            for variable, table in (tables or {}).items():
                self.set_table(variable, table, kind)
        if all(v in (prior_tables or {}) for v in self.variables) and all(
            v in (transition_tables or {}) for v in self.variables
        ):
            self._mark_fitted()

    # ---- structure and tables ----------------------------------------------------------------
    @property
    def cardinalities(self) -> list[int]:
        """Number of states of each variable."""
        return [len(self.states[v]) for v in self.variables]

    def parents(self, variable: str, kind: str = "transition") -> list[tuple[str, int]]:
        """Parents of `variable` in table-axis order as (variable, time offset) pairs: offset
        -1 for the previous slice, 0 for the same slice."""
        self._check_variable(variable)
        if kind == "prior":
            return [(p, 0) for p in self.prior_parents[variable]]
        return [(p, -1) for p in self.inter_parents[variable]] + [
            (p, 0) for p in self.intra_parents[variable]
        ]

    def table_shape(self, variable: str, kind: str = "transition") -> tuple[int, ...]:
        """Shape of a variable's `kind` ("prior" or "transition") table."""
        parents = [p for p, _ in self.parents(variable, kind)]
        return (*(len(self.states[p]) for p in parents), len(self.states[variable]))

    def table(self, variable: str, kind: str = "transition") -> Tensor:
        """The conditional table of `variable` in the `kind` slice ("prior" or "transition")."""
        self._check_kind(kind)
        return getattr(self, f"{kind}_{self._check_variable(variable)}")

    def set_table(self, variable: str, table: Any, kind: str = "transition") -> None:
        """Replace one conditional table (checked for shape and normalisation).

        Raises:
            DataError: unknown variable, wrong shape, negative entries, rows not summing to 1.
        """
        self._check_kind(kind)
        index = self._check_variable(variable, f"{kind}_tables")
        where = f"{kind}_tables[{variable!r}]"
        try:
            values = torch.as_tensor(table, dtype=torch.float64).detach().clone()
        except (TypeError, ValueError) as error:
            raise DataError(f"{where} is not an array of numbers: {error}") from error
        shape = self.table_shape(variable, kind)
        if tuple(values.shape) != shape:
            parents = ", ".join(
                f"{p}[t{o:+d}]" if o else p for p, o in self.parents(variable, kind)
            )
            raise DataError(
                f"{where} has shape {tuple(values.shape)}; expected {shape} (parents: "
                f"{parents or 'none'}; the variable's states along the last axis)"
            )
        if not torch.isfinite(values).all() or (values < 0).any():
            raise DataError(f"{where} has negative, NaN or infinite entries")
        sums = values.sum(-1)
        if float((sums - 1).abs().max()) > _TOLERANCE:
            raise DataError(f"{where} does not sum to one over the variable's states")
        buffer = f"{kind}_{index}"
        self._buffers[buffer] = (values / sums[..., None]).to(getattr(self, buffer).device)
        self._cache.clear()

    def _check_kind(self, kind: str) -> None:
        if kind not in ("prior", "transition"):
            raise DataError(f"kind must be 'prior' or 'transition', got {kind!r}")

    def _check_variable(self, variable: Any, argument: str = "variable") -> int:
        if variable not in self._position:
            raise DataError(f"{argument}: unknown variable {variable!r}; known: {self.variables}")
        return self._position[variable]

    def get_config(self) -> dict[str, Any]:
        # the tables are saved as tensors, so the config leaves them out
        return {
            "states": {v: list(s) for v, s in self.states.items()},
            "intra_edges": [list(e) for e in self.intra_edges],
            "inter_edges": [list(e) for e in self.inter_edges],
            "prior_edges": [list(e) for e in self.prior_edges],
            "pseudocount": self.pseudocount,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "seed": self.seed,
            "max_joint_states": self.max_joint_states,
        }

    def set_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().set_tensors(tensors)
        self._cache.clear()

    # ---- data --------------------------------------------------------------------------------
    def encode(self, sequences: Any, name: str = "sequences") -> tuple[Tensor, Tensor]:
        """Sequences as (codes (n, T, n_variables) long, -1 where missing; lengths (n,)).

        Accepts a tensor or array (n, T, n_variables) of state indices (NaN or -1 missing), a
        list of (length, n_variables) arrays, a `probgen.core.data.Sequences`, or a list of
        DataFrames of state names (absent columns are missing).

        Raises:
            DataError: wrong shapes, states a variable does not have (naming the variable).
        """
        width = len(self.variables)
        if isinstance(sequences, (list, tuple)) and sequences and all(
            hasattr(s, "columns") for s in sequences
        ):
            parts = [
                self._codec.encode(frame, f"{name}[{i}]", device="cpu")
                for i, frame in enumerate(sequences)
            ]
            lengths = torch.tensor([p.shape[0] for p in parts])
            if (lengths == 0).any():
                raise DataError(f"{name}[{int((lengths == 0).nonzero()[0])}] is empty")
            codes = torch.full((len(parts), int(lengths.max()), width), -1, dtype=torch.long)
            for i, part in enumerate(parts):
                codes[i, : part.shape[0]] = part
            return codes.to(self.device), lengths.to(self.device)
        batch = as_sequences(sequences, name, event_shape=(width,), allow_nan=True)
        values = batch.values.to(torch.float64)
        values = torch.where(values == -1, torch.nan, values)  # -1 marks a missing value
        flat = self._codec.encode(values.reshape(-1, width), name, device="cpu")
        codes = flat.reshape(values.shape[0], values.shape[1], width)
        return codes.to(self.device), batch.lengths.to(self.device)

    # ---- joint-state tables ------------------------------------------------------------------
    def _key(self) -> tuple:
        return tuple((t.data_ptr(), t._version, str(t.device)) for t in self.buffers())

    @property
    def interface(self) -> list[str]:
        """The variables with a child in the next slice (the forward message's scope)."""
        used = {p for parents in self.inter_parents.values() for p in parents}
        return [v for v in self.variables if v in used]

    def _joint(self) -> dict[str, Tensor]:
        """Slice assignments (S, N), the start distribution (S,), the transitions (S_I, S)
        from interface assignments, and the projection (S,) of slice onto interface."""
        key = self._key()
        cached = self._cache.get("joint")
        if cached is not None and cached[0] == key:
            return cached[1]
        size = math.prod(self.cardinalities)
        if size > self.max_joint_states:
            raise DataError(
                f"inference with missing values needs the slice's joint state space ({size} "
                f"states), more than max_joint_states={self.max_joint_states}; raise it or "
                "give complete sequences"
            )
        assignments = enumerate_assignments(self.cardinalities, size, self.device)
        column = {v: assignments[:, i] for i, v in enumerate(self.variables)}
        interface = self.interface
        interface_cards = [len(self.states[v]) for v in interface]
        interface_size = math.prod(interface_cards)
        if interface:
            interface_assignments = enumerate_assignments(interface_cards, size, self.device)
            projection = family_index(interface_cards, [column[v] for v in interface])
        else:
            interface_assignments = torch.zeros(1, 0, dtype=torch.long, device=self.device)
            projection = torch.zeros(size, dtype=torch.long, device=self.device)
        previous = {v: interface_assignments[:, i] for i, v in enumerate(interface)}
        start = joint_log_table(
            [self.table(v, "prior") for v in self.variables],
            [[column[p] for p in self.prior_parents[v]] + [column[v]] for v in self.variables],
        ).exp()
        transition = joint_log_table(
            [self.table(v) for v in self.variables],
            [self._transition_axes(v, previous, column) for v in self.variables],
        ).exp().expand(interface_size, size).contiguous()
        result = {"assignments": assignments, "start": start, "transition": transition,
                  "projection": projection, "interface_assignments": interface_assignments}
        self._cache["joint"] = (key, result)
        return result

    def _transition_axes(
        self, variable: str, previous: Mapping[str, Tensor], current: Mapping[str, Tensor]
    ) -> list[Tensor]:
        """Index tensors of a transition table's axes over (interface assignments at t-1
        (S_I, 1), slice assignments at t (1, S))."""
        return (
            [previous[p][:, None] for p in self.inter_parents[variable]]
            + [current[p][None, :] for p in self.intra_parents[variable]]
            + [current[variable][None, :]]
        )

    def _forward_backward(self, codes: Tensor, lengths: Tensor, smooth: bool) -> Any:
        joint = self._joint()
        masks = evidence_masks(codes, joint["assignments"])
        result = forward_backward(joint["start"], joint["transition"], joint["projection"],
                                  masks, lengths, smooth=smooth)
        return result, masks

    def _threads(self, n_sequences: int) -> Any:
        """probgen's thread policy for a loop of small steps: one intra-op thread unless one
        step (n_sequences x interface states x slice states multiply-adds) is large."""
        size = math.prod(self.cardinalities)
        interface = math.prod(len(self.states[v]) for v in self.interface)
        return small_op_threads(n_sequences * size * interface, self.device)

    # ---- density contract --------------------------------------------------------------------
    def log_prob(self, sequences: Any) -> Tensor:
        """Exact log probability of each sequence (missing values summed out).

        Returns:
            float64 tensor (n_sequences,).
        """
        self.check_fitted("log_prob")
        codes, lengths = self.encode(sequences)
        with self._threads(codes.shape[0]):
            return self._log_prob_codes(codes, lengths)

    def _log_prob_codes(self, codes: Tensor, lengths: Tensor) -> Tensor:
        live = torch.arange(codes.shape[1], device=codes.device)[None, :] < lengths[:, None]
        missing = ((codes < 0) & live[..., None]).flatten(1).any(dim=1)
        result = torch.empty(codes.shape[0], dtype=torch.float64, device=codes.device)
        if (~missing).any():
            complete = codes[~missing].clamp_min(0)
            terms = self._complete_terms(complete)
            result[~missing] = (terms * live[~missing]).sum(dim=1)
        if missing.any():
            fb, _ = self._forward_backward(codes[missing], lengths[missing], smooth=False)
            result[missing] = fb.log_likelihood
        return result

    def _complete_terms(self, codes: Tensor) -> Tensor:
        """log P(slice t | slice t-1) of complete sequences, (n, T); slice 0 uses the prior."""
        column = {v: codes[..., i] for i, v in enumerate(self.variables)}
        first = joint_log_table(
            [self.table(v, "prior") for v in self.variables],
            [[column[p][:, 0] for p in self.prior_parents[v]] + [column[v][:, 0]]
             for v in self.variables],
        )
        if codes.shape[1] == 1:
            return first[:, None]
        rest = joint_log_table(
            [self.table(v) for v in self.variables],
            [[column[p][:, :-1] for p in self.inter_parents[v]]
             + [column[p][:, 1:] for p in self.intra_parents[v]] + [column[v][:, 1:]]
             for v in self.variables],
        )
        return torch.cat([first[:, None], rest], dim=1)

    def filter(self, sequences: Any) -> dict[str, Tensor]:
        """Filtered marginals P(X_t | evidence up to t) of every variable.

        Returns:
            variable -> float64 tensor (n_sequences, T, n_states); steps past a sequence's
            length repeat its last step.
        """
        return self._marginals(sequences, smooth=False)

    def smooth(self, sequences: Any) -> dict[str, Tensor]:
        """Smoothed marginals P(X_t | all evidence of the sequence) of every variable.

        Returns:
            variable -> float64 tensor (n_sequences, T, n_states).
        """
        return self._marginals(sequences, smooth=True)

    def _marginals(self, sequences: Any, smooth: bool) -> dict[str, Tensor]:
        self.check_fitted("filter" if not smooth else "smooth")
        codes, lengths = self.encode(sequences)
        with self._threads(codes.shape[0]):
            return self._marginals_of_codes(codes, lengths, smooth)

    def _marginals_of_codes(self, codes: Tensor, lengths: Tensor, smooth: bool
                            ) -> dict[str, Tensor]:
        fb, _ = self._forward_backward(codes, lengths, smooth=smooth)
        joint = fb.smoothed if smooth else fb.filtered
        impossible = ~torch.isfinite(fb.log_likelihood)
        if impossible.any():
            raise DataError(
                f"sequences[{int(impossible.nonzero()[0])}] has probability zero under the model"
            )
        assignments = self._joint()["assignments"]
        result = {}
        for i, variable in enumerate(self.variables):
            states = len(self.states[variable])
            one_hot = torch.nn.functional.one_hot(assignments[:, i], states).to(joint.dtype)
            result[variable] = joint @ one_hot
        return result

    # ---- sampling ----------------------------------------------------------------------------
    def sample(self, n: int, *, length: int = 10, seed: int | torch.Generator | None = None
               ) -> Tensor:
        """Draw `n` sequences of `length` steps by ancestral sampling.

        Returns:
            long tensor (n, length, n_variables) of state indices.
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        length = check_positive_int(length, "length")
        with self._threads(n):
            return self._sample(n, length, self.make_generator(seed))

    def _sample(self, n: int, length: int, generator: torch.Generator) -> Tensor:
        width = len(self.variables)
        uniforms = torch.rand(length, width, n, generator=generator, device=self.device,
                              dtype=torch.float64)
        draws = torch.zeros(length, width, n, dtype=torch.long, device=self.device)
        orders = {
            kind: list(nx.topological_sort(nx.DiGraph(edges or [])))
            for kind, edges in (("prior", self.prior_edges), ("transition", self.intra_edges))
        }
        for t in range(length):
            kind = "prior" if t == 0 else "transition"
            order = orders[kind] + [v for v in self.variables if v not in orders[kind]]
            for v in order:
                i = self._position[v]
                table = self.table(v, kind)
                axes = [draws[t - 1, self._position[p]] for p, o in self.parents(v, kind) if o]
                axes += [draws[t, self._position[p]] for p, o in self.parents(v, kind) if not o]
                config = family_index(table.shape[:-1], axes) if axes else None
                thresholds = _inverse_cdf_thresholds(table.reshape(-1, table.shape[-1]))
                _draw_states(uniforms[t, i], thresholds, config, out=draws[t, i])
        return draws.permute(2, 0, 1).contiguous()

    def enumerate_support(self, length: int = 5, max_size: int = 2**16) -> Tensor:
        """Every sequence of `length` steps, (K, length, n_variables); tiny networks only."""
        support = enumerate_assignments(self.cardinalities * length, max_size, self.device)
        return support.reshape(-1, length, len(self.variables))

    # ---- conversions -------------------------------------------------------------------------
    def unroll(self, length: int) -> BayesianNetwork:
        """The equivalent `BayesianNetwork` over `length` slices; variable v at time t is
        named f"{v}_{t}", columns ordered by time then variable."""
        self.check_fitted("unroll")
        length = check_positive_int(length, "length")
        parents, tables, states = {}, {}, {}
        for t in range(length):
            for v in self.variables:
                kind = "prior" if t == 0 else "transition"
                parents[f"{v}_{t}"] = [f"{p}_{t + o}" for p, o in self.parents(v, kind)]
                tables[f"{v}_{t}"] = self.table(v, kind).cpu()
                states[f"{v}_{t}"] = self.states[v]
        return BayesianNetwork(parents=parents, tables=tables, states=states,
                               variables=list(parents))

    def to_pgmpy(self) -> Any:
        """pgmpy's `DynamicBayesianNetwork` with nodes (variable, 0) and (variable, 1).

        Raises:
            DataError: the prior slice's edges differ from the intra-slice edges (pgmpy uses
                one intra-slice structure for both slices).
        """
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DynamicBayesianNetwork as PgmpyDBN

        self.check_fitted("to_pgmpy")
        if sorted(self.prior_edges) != sorted(self.intra_edges):
            raise DataError("to_pgmpy needs prior_edges equal to intra_edges")
        model = PgmpyDBN()
        model.add_nodes_from(self.variables)
        model.add_edges_from([((p, 0), (c, 0)) for p, c in self.intra_edges]
                             + [((p, 0), (c, 1)) for p, c in self.inter_edges])
        cpds = []
        for v in self.variables:
            for t, kind in ((0, "prior"), (1, "transition")):
                table = self.table(v, kind).cpu()
                evidence = [(p, t + o) for p, o in self.parents(v, kind)]
                cpds.append(TabularCPD(
                    (v, t), table.shape[-1], table.reshape(-1, table.shape[-1]).T.numpy(),
                    evidence=evidence or None,
                    evidence_card=[len(self.states[p]) for p, _ in evidence] or None,
                ))
        model.add_cpds(*cpds)
        model.initialize_initial_state()
        return model
