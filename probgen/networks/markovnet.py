"""Discrete Markov networks (undirected models) given as a product of non-negative factors.

`MarkovNetwork(factors)` stores each factor's log-potential table as a parameter. Where the
weighted min-fill elimination order keeps every intermediate table small (`max_exact_size`),
the partition function, marginals and samples are exact (variable elimination, junction tree,
backward sampling) and `log_prob_kind` is "exact"; otherwise marginals come from loopy belief
propagation, samples from Gibbs chains, and `log_prob` is honestly "unnormalized".

Example:
    >>> import torch
    >>> from probgen.networks.markovnet import MarkovNetwork
    >>> coupling = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    >>> chain = MarkovNetwork([(["a", "b"], coupling), (["b", "c"], coupling)])
    >>> chain.log_prob_kind.value, round(float(chain.log_partition().exp()), 6)
    ('exact', 18.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import probgen.networks.factors as ops
from probgen.core.contract import LogProbKind, Model
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import ConvergenceWarning, DataError
from probgen.core.threads import small_op_threads
from probgen.fitting.em import record_fit, run_em
from probgen.networks.codec import (
    UNSET,
    StateCodec,
    check_chain_state,
    clamp_chains,
    draw_states,
    enumerate_assignments,
    fit_settings,
)
from probgen.networks.markov_queries import MaxProductMixin
from probgen.networks.queries import query_work

__all__ = ["MarkovNetwork"]


class MarkovNetwork(MaxProductMixin, Model):
    """A discrete Markov network: p(x) proportional to the product of its factors.

    Args:
        factors: list of (scope, table) pairs: `scope` a list of variable names, `table` a
            non-negative array with one axis per scope variable (its states in order).
        scopes: the scopes alone (tables start as all ones), used when rebuilding from config.
        states: variable -> state names (default "0", "1", ... from the table shapes).
        variables: column order of the variables (default: order of first appearance).
        max_exact_size: largest table (entries) exact elimination may create; above it the
            model is approximate and `log_prob_kind` is "unnormalized".
        objective: `fit`'s objective: "likelihood" (exact, needs the exact regime),
            "pseudo_likelihood", or "auto" (likelihood when exact).
        max_iter: L-BFGS iterations at most (run in blocks of 20).
        tol: `fit` stops when the objective changes by less than this between blocks.
        l2: penalty on the squared log-potentials (keeps unseen configurations finite).

    Raises:
        DataError: a table whose shape does not match its scope or the states, negative or
            non-finite entries, a variable in no factor.
    """

    fitted_attributes = ("history_", "n_iter_", "converged_")

    def __init__(
        self,
        factors: Sequence[tuple[Sequence[str], Any]] | None = None,
        *,
        scopes: Sequence[Sequence[str]] | None = None,
        states: Mapping[str, Sequence[Any]] | None = None,
        variables: Sequence[str] | None = None,
        max_exact_size: int = 2**22,
        objective: str = "auto",
        max_iter: int = 100,
        tol: float = 1e-7,
        l2: float = 1e-4,
    ) -> None:
        super().__init__()
        self.objective = objective
        self.max_iter = max_iter
        self.tol = tol
        self.l2 = l2
        if (factors is None) == (scopes is None):
            raise DataError("give either factors (scope, table pairs) or scopes")
        if factors is not None:
            pairs = list(factors)
            for index, pair in enumerate(pairs):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise DataError(f"factors[{index}] must be a (scope, table) pair")
            scope_list = [list(scope) for scope, _ in pairs]
            tables = [table for _, table in pairs]
        else:
            scope_list = [list(scope) for scope in scopes]
            tables = [None] * len(scope_list)
        if not scope_list:
            raise DataError("factors is empty; a MarkovNetwork needs at least one factor")
        order: list[str] = list(variables or [])
        for index, scope in enumerate(scope_list):
            if not scope or len(set(scope)) != len(scope):
                raise DataError(f"factors[{index}] scope must list distinct variables")
            for variable in scope:
                if not isinstance(variable, str):
                    raise DataError(f"factors[{index}] scope: variable names must be strings")
                if variable not in order:
                    if variables is not None:
                        raise DataError(f"factors[{index}] names unknown variable {variable!r}")
                    order.append(variable)
        self.variables: list[str] = order
        self._position = {v: i for i, v in enumerate(order)}
        self.scopes: list[list[str]] = scope_list
        self.states: dict[str, list[str]] = {}
        for variable, labels in (states or {}).items():
            if variable not in self._position:
                raise DataError(f"states names unknown variable {variable!r}")
            self.states[variable] = [str(s) for s in labels]
        for index, (scope, table) in enumerate(zip(scope_list, tables)):
            if table is None:
                continue
            shape = np.shape(table)
            if len(shape) != len(scope):
                raise DataError(
                    f"factors[{index}] table has {len(shape)} axes for a scope of {len(scope)}"
                )
            for variable, size in zip(scope, shape):
                known = self.states.setdefault(variable, [str(i) for i in range(size)])
                if len(known) != size:
                    raise DataError(
                        f"factors[{index}] gives variable {variable!r} {size} states, "
                        f"elsewhere it has {len(known)}"
                    )
        unused = [v for v in order if not any(v in s for s in scope_list)]
        if unused:
            raise DataError(f"variable {unused[0]!r} is in no factor")
        missing = [v for v in order if v not in self.states]
        if missing:
            raise DataError(f"variable {missing[0]!r} has no states; give states=")
        self.max_exact_size = int(max_exact_size)
        self.event_shape = torch.Size([len(order)])
        self._cache: dict[str, Any] = {}
        self._codec = StateCodec(self.variables, self.states)
        self.log_potentials = nn.ParameterList()
        for index, (scope, table) in enumerate(zip(scope_list, tables)):
            shape = tuple(len(self.states[v]) for v in scope)
            if table is None:
                values = torch.zeros(shape, dtype=torch.float64)
            else:
                raw = torch.as_tensor(
                    table.detach() if isinstance(table, Tensor) else np.asarray(table, float),
                    dtype=torch.float64,
                )
                if not torch.isfinite(raw).all() or (raw < 0).any():
                    raise DataError(f"factors[{index}] table has negative or non-finite entries")
                values = torch.log(raw)
            self.log_potentials.append(nn.Parameter(values))
        self._ids = [tuple(self._position[v] for v in scope) for scope in scope_list]
        cards = dict(enumerate(self.cardinalities))
        adjacency = ops.moral_adjacency(self._ids, range(len(order)))
        self._order = ops.min_fill_order(adjacency, cards)
        self.largest_table_ = ops.max_clique_size(adjacency, cards, self._order)
        self.exact = self.largest_table_ <= self.max_exact_size
        self.log_prob_kind = LogProbKind.EXACT if self.exact else LogProbKind.UNNORMALIZED
        if factors is not None:
            self._mark_fitted()

    # ---- structure ---------------------------------------------------------------------------
    @property
    def cardinalities(self) -> list[int]:
        """Number of states of each variable (in `variables` order)."""
        return [len(self.states[v]) for v in self.variables]

    def get_config(self) -> dict[str, Any]:
        # the tables are saved as tensors, so the config rebuilds from `scopes`, not `factors`
        return {
            "scopes": [list(s) for s in self.scopes],
            "states": {v: list(s) for v, s in self.states.items()},
            "variables": list(self.variables),
            "max_exact_size": self.max_exact_size,
            "objective": self.objective,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "l2": self.l2,
        }

    @classmethod
    def from_bayesian_network(cls, network: Any) -> MarkovNetwork:
        """Moralise a `BayesianNetwork` (one factor per conditional table; Z = 1)."""
        return network.to_markov()

    def _factors(self) -> list[ops.Factor]:
        return [ops.Factor(ids, torch.exp(p)) for ids, p in zip(self._ids, self.log_potentials)]

    def _key(self) -> tuple:
        return tuple((p.data_ptr(), p._version, str(p.device)) for p in self.log_potentials)

    def _flat(self) -> dict[str, Tensor]:
        """Concatenated log-potentials and the stride matrix that indexes them."""
        width = len(self.variables)
        device = self.device
        sizes = [p.numel() for p in self.log_potentials]
        offsets = torch.tensor(np.cumsum([0, *sizes[:-1]]), dtype=torch.long, device=device)
        strides = torch.zeros(width, len(sizes), dtype=torch.long, device=device)
        for f, ids in enumerate(self._ids):
            step = 1
            for v in reversed(ids):
                strides[v, f] = step
                step *= self.cardinalities[v]
        return {"offsets": offsets, "strides": strides}

    def _structure(self) -> dict[str, Any]:
        cached = self._cache.get("structure")
        if cached is None or cached["device"] != str(self.device):
            cached = {**self._flat(), "device": str(self.device)}
            cached["members"] = [
                torch.tensor([f for f, ids in enumerate(self._ids) if v in ids], device=self.device)
                for v in range(len(self.variables))
            ]
            self._cache["structure"] = cached
        return cached

    # ---- encoding ----------------------------------------------------------------------------
    def encode(self, data: Any, name: str = "data") -> Tensor:
        """State indices (n, n_variables), -1 where missing (see `StateCodec.encode`)."""
        return self._codec.encode(data, name, device=self.device)

    def _evidence_codes(self, evidence: Any) -> tuple[Tensor, bool]:
        return self._codec.encode_evidence(evidence, device=self.device)

    # ---- partition function and density ------------------------------------------------------
    def _require_exact(self, what: str) -> None:
        if not self.exact:
            raise DataError(
                f"{what} needs exact inference, but elimination would build a table of "
                f"{self.largest_table_} entries (max_exact_size={self.max_exact_size})"
            )

    def log_partition(self) -> Tensor:
        """Exact log partition function by variable elimination (a detached scalar).

        Raises:
            DataError: the treewidth is too large for exact elimination.
        """
        with torch.no_grad():
            return self._log_partition()

    def _log_partition(self) -> Tensor:
        """Exact log partition function by variable elimination (differentiable).

        Raises:
            DataError: the treewidth is too large for exact elimination.
        """
        self._require_exact("log_partition")
        key = self._key()
        cached = self._cache.get("log_z")
        if cached is not None and cached[0] == key and not torch.is_grad_enabled():
            return cached[1]
        table, log_scale = ops.eliminate(self._factors(), (), order=self._order)
        log_z = (log_scale + torch.log(table.values.reshape(-1)))[0]
        if not torch.is_grad_enabled() or not log_z.requires_grad:
            self._cache["log_z"] = (key, log_z.detach())
        return log_z

    def unnormalized_log_prob(self, codes: Tensor) -> Tensor:
        """Sum of log-potentials of complete assignments (n, n_variables) -> (n,)."""
        flat = self._structure()
        parameters = torch.cat([p.reshape(-1) for p in self.log_potentials])
        index = codes @ flat["strides"] + flat["offsets"]
        return parameters[index].sum(dim=1)

    def log_prob(self, x: Any) -> Tensor:
        """Log probability of each row (exact kind), or its unnormalised value.

        Missing values (NaN/None, absent DataFrame columns) are summed out exactly, which needs
        the exact regime.
        """
        self.check_fitted("log_prob")
        batch_shape = x.shape[:-1] if isinstance(x, Tensor) and x.dim() >= 1 else None
        codes = self.encode(x, "x")
        missing = (codes < 0).any(dim=1)
        result = torch.empty(codes.shape[0], dtype=torch.float64, device=codes.device)
        with torch.no_grad():
            if (~missing).any():
                result[~missing] = self.unnormalized_log_prob(codes[~missing])
            if missing.any():
                self._require_exact("log_prob with missing values")
                result[missing] = self._log_evidence(codes[missing])
            if self.exact:
                result = result - self.log_partition()
        return result.reshape(batch_shape) if batch_shape is not None else result

    def _log_evidence(self, codes: Tensor) -> Tensor:
        observed = [j for j in range(codes.shape[1]) if bool((codes[:, j] >= 0).any())]
        cards = dict(enumerate(self.cardinalities))
        evidence = list(ops.evidence_factors(codes[:, observed], observed, cards).values())
        table, log_scale = ops.eliminate(self._factors() + evidence, (), order=self._order)
        return log_scale + torch.log(table.values.reshape(-1))

    def enumerate_support(self, max_size: int = 2**16) -> Tensor:
        """Every joint assignment (K, n_variables); only for small networks.

        Raises:
            DataError: more than `max_size` joint states.
        """
        return enumerate_assignments(self.cardinalities, max_size, self.device)

    # ---- sampling ----------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        seed: int | torch.Generator | None = None,
        burn_in: int = 200,
        as_frame: bool = False,
    ) -> Any:
        """Draw `n` samples: exact backward sampling in the exact regime, else `n` parallel
        Gibbs chains run for `burn_in` sweeps.

        Returns:
            long tensor (n, n_variables) of state indices (a DataFrame with `as_frame=True`).
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        with torch.no_grad():
            if self.exact:
                cards = dict(enumerate(self.cardinalities))
                drawn, _ = ops.sample_by_elimination(
                    self._factors(), cards, n, generator=generator, order=self._order
                )
                samples = torch.stack([drawn[i] for i in range(len(self.variables))], dim=1)
            else:
                samples = self.initial_state(n, generator=generator)
                for _ in range(int(burn_in)):
                    samples = self.gibbs_step(samples, generator=generator)
        if as_frame:
            return self._codec.decode(samples)
        return samples

    def initial_state(
        self,
        num_chains: int,
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """Uniformly random starting states (evidence clamped), (num_chains, n_variables)."""
        num_chains = check_positive_int(num_chains, "num_chains")
        generator = generator if generator is not None else self.make_generator(None)
        cards = torch.tensor(self.cardinalities, device=self.device, dtype=torch.float64)
        uniform = torch.rand(
            num_chains,
            len(self.variables),
            generator=generator,
            device=self.device,
            dtype=torch.float64,
        )
        state = (uniform * cards).long().minimum((cards - 1).long())
        codes, _ = self._evidence_codes(evidence)
        observed = codes[0] >= 0
        state[:, observed] = codes[0][observed]
        return state

    def _conditional_logits(self, state: Tensor, variable: int, flat: Tensor) -> Tensor:
        structure = self._structure()
        members = structure["members"][variable]
        strides = structure["strides"][:, members]
        own = strides[variable]
        base = (
            state @ strides
            + structure["offsets"][members]
            - state[:, variable : variable + 1] * own
        )
        steps = torch.arange(self.cardinalities[variable], device=state.device)
        index = base[:, :, None] + steps[None, None, :] * own[None, :, None]
        return flat[index].sum(dim=1)

    def gibbs_step(
        self,
        state: Tensor,
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """One Gibbs sweep over every unobserved variable, vectorised over chains.

        Args:
            state: long tensor (num_chains, n_variables).
            generator: source of randomness.
            evidence: dict {variable: state}; those variables stay clamped.

        Returns:
            The new state (num_chains, n_variables).
        """
        check_chain_state(state, len(self.variables))
        generator = generator if generator is not None else self.make_generator(None)
        codes, _ = self._evidence_codes(evidence)
        state, observed = clamp_chains(state, codes[0], self.device)
        with torch.no_grad():
            flat = torch.cat([p.reshape(-1) for p in self.log_potentials])
            for variable in range(len(self.variables)):
                if bool(observed[variable]):
                    continue
                logits = self._conditional_logits(state, variable, flat)
                state[:, variable] = draw_states(logits, generator)
        return state

    # ---- inference ---------------------------------------------------------------------------
    def marginals(
        self,
        evidence: Any = None,
        *,
        method: str = "auto",
        max_iter: int = 100,
        tol: float = 1e-8,
        damping: float = 0.0,
    ) -> dict[str, Tensor]:
        """Posterior marginals: junction tree when exact (method "auto"/"exact"), else loopy BP.

        Args:
            evidence: dict {variable: state} or a DataFrame (one evidence set per row).
            method: "auto", "exact" or "loopy_bp". The loopy BP report is in
                `self.last_inference_`.

        Returns:
            variable -> tensor (n_states,) or (n_queries, n_states).
        """
        self.check_fitted("marginals")
        check_choice(method, "method", ("auto", "exact", "loopy_bp"))
        codes, batched = self._evidence_codes(evidence)
        cards = dict(enumerate(self.cardinalities))
        observed = [j for j in range(codes.shape[1]) if bool((codes[:, j] >= 0).any())]
        evidence_factors = ops.evidence_factors(codes[:, observed], observed, cards)
        with torch.no_grad(), small_op_threads(query_work(self, codes)):
            if method == "exact" or (method == "auto" and self.exact):
                self._require_exact("exact marginals")
                tree = ops.build_junction_tree(self._ids, cards, order=self._order)
                plan = ops.compile_dense(tree, ops.clique_potentials(tree, self._factors()))
                indicators = {v: f.values for v, f in evidence_factors.items()}
                _, log_evidence, found = ops.calibrate_dense(
                    plan, indicators, batch_size=codes.shape[0]
                )
                if torch.isinf(log_evidence).any():
                    raise DataError("evidence has probability zero")
                # calibrate_dense returns views into one shared table; give each its own.
                result = {
                    variable: (found[i] if batched else found[i][0]).clone(
                        memory_format=torch.contiguous_format
                    )
                    for i, variable in enumerate(self.variables)
                }
                self.last_inference_ = {"method": "junction_tree", "exact": True}
                return result
            found, info = ops.loopy_belief_propagation(
                self._factors(),
                cards,
                evidence_factors,
                max_iter=max_iter,
                tol=tol,
                damping=damping,
            )
        self.last_inference_ = {"method": "loopy_bp", **info}
        if not info["converged"]:
            warnings.warn(
                f"loopy belief propagation did not converge in {max_iter} iterations",
                ConvergenceWarning,
                stacklevel=2,
            )
        return {v: found[i] if batched else found[i][0] for i, v in enumerate(self.variables)}

    # ---- learning ----------------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        *,
        objective: Any = UNSET,
        max_iter: Any = UNSET,
        tol: Any = UNSET,
        l2: Any = UNSET,
    ) -> MarkovNetwork:
        """Fit the log-potentials to complete data with L-BFGS.

        The settings (`objective`, `max_iter`, `tol`, `l2`) are the constructor's; passing
        them here is deprecated (it warns, and the value applies to this call).

        Args:
            data: DataFrame of state names or integer array (n, n_variables).

        Returns:
            self, with `history_` (one ``{"iteration", "objective"}`` record per block of 20
            L-BFGS iterations: the penalised mean negative log-(pseudo-)likelihood),
            `n_iter_`, `converged_`.

        Raises:
            DataError: missing values, unknown states; FitError if the objective diverges.
        """
        settings = fit_settings(self, objective=objective, max_iter=max_iter, tol=tol, l2=l2)
        objective, max_iter = settings["objective"], settings["max_iter"]
        tol, l2 = settings["tol"], settings["l2"]
        check_choice(objective, "objective", ("auto", "likelihood", "pseudo_likelihood"))
        max_iter = check_positive_int(max_iter, "max_iter")
        if objective == "auto":
            objective = "likelihood" if self.exact else "pseudo_likelihood"
        if objective == "likelihood":
            self._require_exact("objective='likelihood'")
        codes = self.encode(data, "data")
        if (codes < 0).any():
            raise DataError("data has missing values; MarkovNetwork.fit needs complete rows")
        rows, counts = torch.unique(codes, dim=0, return_counts=True)
        weights = counts.to(torch.float64) / counts.sum()
        for parameter in self.log_potentials:
            with torch.no_grad():
                parameter.nan_to_num_(neginf=-30.0)
        optimiser = torch.optim.LBFGS(
            list(self.log_potentials),
            max_iter=20,
            line_search_fn="strong_wolfe",
            tolerance_change=1e-12,
            tolerance_grad=1e-10,
        )

        def objective_value() -> Tensor:
            if objective == "likelihood":
                value = self._log_partition() - (self.unnormalized_log_prob(rows) * weights).sum()
            else:
                flat = torch.cat([p.reshape(-1) for p in self.log_potentials])
                value = torch.zeros((), dtype=torch.float64, device=rows.device)
                for variable in range(len(self.variables)):
                    logits = self._conditional_logits(rows, variable, flat)
                    chosen = logits.gather(1, rows[:, variable : variable + 1]).squeeze(1)
                    value = value - ((chosen - torch.logsumexp(logits, dim=1)) * weights).sum()
            penalty = sum((p**2).sum() for p in self.log_potentials)
            return value + l2 * penalty

        def closure() -> Tensor:
            optimiser.zero_grad()
            value = objective_value()
            value.backward()
            return value

        def iterate() -> float:
            return float(optimiser.step(closure).detach())

        # the objective is checked for finiteness; the parameters are not (as before)
        with small_op_threads(query_work(self, rows)):
            result = run_em(
                iterate,
                max_iter=max(1, max_iter // 20),
                tol=tol,
                criterion="change",
                guard=self,
                finite_parameters=lambda: True,
                what="MarkovNetwork.fit",
            )
        self._cache.pop("log_z", None)
        record_fit(self, result, figure="objective")
        return self
