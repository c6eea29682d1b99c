"""Hybrid Bayesian networks: discrete nodes and conditional linear Gaussian (CLG) nodes.

`HybridBayesianNetwork` holds discrete variables (conditional tables given discrete parents)
and continuous ones: x_v = b_v[d] + sum_p w_vp[d] x_p + N(0, s_v[d]) where d is the
configuration of v's discrete parents and x_p its continuous parents. Discrete nodes may not
have continuous parents (the CLG restriction). Given one joint configuration k of all discrete
variables the continuous ones are jointly Gaussian, N(mu_k, Sigma_k); the network is the
mixture sum_k P(k) N(mu_k, Sigma_k). Exact inference enumerates those configurations
(`max_discrete_states` bounds them): `log_prob` with missing values (NaN) summed or integrated
out, `discrete_posterior` (discrete marginals given any evidence), `continuous_posterior`
(conditional mean and covariance of the unobserved continuous variables) and `predict`.
`fit` is closed form: counts for the tables and weighted least squares per discrete
configuration for the linear Gaussians.

Rows are float tensors (n, n_variables) in `variables` order (discrete columns hold state
indices; NaN marks a missing value) or DataFrames (state names for discrete columns).

Example:
    >>> net = HybridBayesianNetwork(
    ...     {"machine": ["ok", "broken"]}, ["temperature"], [("machine", "temperature")],
    ...     tables={"machine": [0.9, 0.1]},
    ...     linear_gaussians={"temperature": ([[20.0], [30.0]], [4.0, 4.0])},
    ... )
    >>> hot = torch.tensor([[float("nan"), 27.0]])
    >>> [round(p, 4) for p in net.discrete_posterior(hot)["machine"][0].tolist()]
    [0.0572, 0.9428]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from probgen.core.contract import LogProbKind, Model
from probgen.core.data import as_tensor, check_positive_int
from probgen.core.errors import DataError
from probgen.core.threads import small_op_threads
from probgen.fitting.em import EMResult, record_fit
from probgen.networks.bayesnet import _draw_states, _inverse_cdf_thresholds
from probgen.networks.codec import StateCodec, enumerate_assignments
from probgen.networks.dynamic_inference import evidence_masks, family_index, joint_log_table

__all__ = ["HybridBayesianNetwork"]

_TOLERANCE = 1e-4


class HybridBayesianNetwork(Model):
    """A conditional linear Gaussian Bayesian network.

    Args:
        discrete: discrete variable -> state names or a number of states.
        continuous: the continuous variables.
        edges: (parent, child) pairs; a variable's parents keep the order of the edges.
        tables: discrete variable -> table (*discrete_parent_cardinalities, n_states).
        linear_gaussians: continuous variable -> (coefficients, variance) with coefficients
            of shape (*discrete_parent_cardinalities, 1 + n_continuous_parents) (the
            intercept first, then one weight per continuous parent in edge order) and
            variances of shape (*discrete_parent_cardinalities).
        pseudocount: added to every count of the discrete tables at `fit`.
        min_variance: floor of the fitted variances.
        max_discrete_states: the most joint discrete configurations inference enumerates.

    Attributes:
        variables: discrete variables then continuous ones: the column order of rows.

    Raises:
        DataError: a discrete node with a continuous parent, a cycle, unknown variables,
            parameters of the wrong shape, tables not summing to one, variances <= 0.
    """

    log_prob_kind = LogProbKind.EXACT

    def __init__(
        self,
        discrete: Mapping[str, Sequence[Any] | int] | None = None,
        continuous: Sequence[str] = (),
        edges: Iterable[tuple[str, str]] = (),
        *,
        tables: Mapping[str, Any] | None = None,
        linear_gaussians: Mapping[str, Any] | None = None,
        pseudocount: float = 0.0,
        min_variance: float = 1e-6,
        max_discrete_states: int = 4096,
    ) -> None:
        super().__init__()
        self.discrete: dict[str, list[str]] = {}
        for variable, spec in (discrete or {}).items():
            labels = (
                [str(i) for i in range(spec)] if isinstance(spec, int) else [str(s) for s in spec]
            )
            if not labels or len(set(labels)) != len(labels):
                raise DataError(f"discrete[{variable!r}] must be a non-empty list of unique names")
            self.discrete[str(variable)] = labels
        self.continuous = [str(v) for v in continuous]
        self.variables = list(self.discrete) + self.continuous
        if not self.variables or len(set(self.variables)) != len(self.variables):
            raise DataError("variables must be non-empty and each discrete or continuous, once")
        self.edges: list[tuple[str, str]] = []
        for edge in edges:
            if not isinstance(edge, (tuple, list)) or len(edge) != 2:
                raise DataError(f"edges: each edge must be a (parent, child) pair, got {edge!r}")
            parent, child = str(edge[0]), str(edge[1])
            for variable in (parent, child):
                if variable not in self.variables:
                    raise DataError(f"edges: unknown variable {variable!r}")
            if child in self.discrete and parent not in self.discrete:
                raise DataError(
                    f"edges: discrete {child!r} cannot have the continuous parent {parent!r} "
                    "(conditional linear Gaussian networks allow only discrete parents there)"
                )
            self.edges.append((parent, child))
        graph = nx.DiGraph(self.edges)
        graph.add_nodes_from(self.variables)
        if not nx.is_directed_acyclic_graph(graph):
            raise DataError(f"edges form a cycle: {nx.find_cycle(graph)}")
        self._order = list(nx.topological_sort(graph))
        self.parents = {v: [p for p, c in self.edges if c == v] for v in self.variables}
        self.discrete_parents = {v: [p for p in self.parents[v] if p in self.discrete]
                                 for v in self.variables}
        self.continuous_parents = {v: [p for p in self.parents[v] if p not in self.discrete]
                                   for v in self.variables}
        self.pseudocount = float(pseudocount)
        self.min_variance = float(min_variance)
        if self.pseudocount < 0 or self.min_variance <= 0:
            raise DataError("pseudocount must be >= 0 and min_variance > 0")
        self.max_discrete_states = check_positive_int(max_discrete_states, "max_discrete_states")
        self.event_shape = torch.Size([len(self.variables)])
        self._codec = StateCodec(list(self.discrete), self.discrete)  # type: ignore[arg-type]
        self._cache: dict[str, Any] = {}
        for i, v in enumerate(self.discrete):
            shape = self._configs(v) + (len(self.discrete[v]),)
            self.register_buffer(f"table_{i}", torch.full(shape, 1.0 / shape[-1],
                                                          dtype=torch.float64))
        for j, v in enumerate(self.continuous):
            configs = self._configs(v)
            width = 1 + len(self.continuous_parents[v])
            self.register_buffer(f"coefficients_{j}",
                                 torch.zeros(configs + (width,), dtype=torch.float64))
            self.register_buffer(f"variance_{j}", torch.ones(configs, dtype=torch.float64))
        for v, table in (tables or {}).items():
            self.set_table(v, table)
        for v, spec in (linear_gaussians or {}).items():
            if isinstance(spec, Mapping):
                spec = (spec["coefficients"], spec["variance"])
            self.set_linear_gaussian(v, *spec)
        if set(tables or {}) == set(self.discrete) and set(linear_gaussians or {}) == set(
            self.continuous
        ):
            self._mark_fitted()

    # ---- parameters --------------------------------------------------------------------------
    def _configs(self, variable: str) -> tuple[int, ...]:
        return tuple(len(self.discrete[p]) for p in self.discrete_parents[variable])

    def table(self, variable: str) -> Tensor:
        """The conditional table of a discrete variable."""
        if variable not in self.discrete:
            raise DataError(f"variable: {variable!r} is not a discrete variable")
        return getattr(self, f"table_{list(self.discrete).index(variable)}")

    def linear_gaussian(self, variable: str) -> tuple[Tensor, Tensor]:
        """(coefficients, variances) of a continuous variable (see the class arguments)."""
        if variable not in self.continuous:
            raise DataError(f"variable: {variable!r} is not a continuous variable")
        j = self.continuous.index(variable)
        return getattr(self, f"coefficients_{j}"), getattr(self, f"variance_{j}")

    def set_table(self, variable: str, table: Any) -> None:
        """Replace a discrete variable's table (checked)."""
        current = self.table(variable)
        values = _float_tensor(table, f"tables[{variable!r}]")
        if values.shape != current.shape:
            raise DataError(f"tables[{variable!r}] has shape {tuple(values.shape)}; expected "
                            f"{tuple(current.shape)} (discrete parents first, states last)")
        if (values < 0).any() or float((values.sum(-1) - 1).abs().max()) > _TOLERANCE:
            raise DataError(f"tables[{variable!r}] must be >= 0 and sum to one over the states")
        self._buffers[f"table_{list(self.discrete).index(variable)}"] = (
            values / values.sum(-1, keepdim=True)
        ).to(current.device)
        self._cache.clear()

    def set_linear_gaussian(self, variable: str, coefficients: Any, variance: Any) -> None:
        """Replace a continuous variable's coefficients and variances (checked)."""
        current, current_variance = self.linear_gaussian(variable)
        where = f"linear_gaussians[{variable!r}]"
        values = _float_tensor(coefficients, f"{where} coefficients")
        variances = _float_tensor(variance, f"{where} variance").reshape(current_variance.shape)
        if values.shape != current.shape:
            raise DataError(
                f"{where} coefficients have shape {tuple(values.shape)}; expected "
                f"{tuple(current.shape)} (discrete parents {self.discrete_parents[variable]}, "
                f"then intercept + weights of {self.continuous_parents[variable]})"
            )
        if not (variances > 0).all():
            raise DataError(f"{where} variances must be > 0")
        j = self.continuous.index(variable)
        self._buffers[f"coefficients_{j}"] = values.to(current.device)
        self._buffers[f"variance_{j}"] = variances.to(current.device)
        self._cache.clear()

    def get_config(self) -> dict[str, Any]:
        # parameters are saved as tensors, so the config leaves them out
        return {
            "discrete": {v: list(s) for v, s in self.discrete.items()},
            "continuous": list(self.continuous),
            "edges": [list(e) for e in self.edges],
            "pseudocount": self.pseudocount,
            "min_variance": self.min_variance,
            "max_discrete_states": self.max_discrete_states,
        }

    def set_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().set_tensors(tensors)
        self._cache.clear()

    # ---- data --------------------------------------------------------------------------------
    def encode(self, x: Any, name: str = "x") -> tuple[Tensor, Tensor]:
        """Rows as (discrete codes (n, n_discrete), -1 where missing; continuous values
        (n, n_continuous) float64, NaN where missing).

        Raises:
            DataError: unknown columns, states a variable does not have, wrong widths.
        """
        n_discrete = len(self.discrete)
        if hasattr(x, "columns") and hasattr(x, "iloc"):
            unknown = [c for c in x.columns if c not in self.variables]
            if unknown:
                raise DataError(f"{name} has column {unknown[0]!r}, which is not a variable")
            if len(x) == 0:
                raise DataError(f"{name} is empty")
            present = [c for c in x.columns if c in self.discrete]
            codes = (self._codec.encode(x[present], name) if present
                     else torch.full((len(x), n_discrete), -1, dtype=torch.long))
            values = torch.full((len(x), len(self.continuous)), math.nan, dtype=torch.float64)
            for j, v in enumerate(self.continuous):
                if v in x.columns:
                    column = np.asarray(x[v], dtype=np.float64)
                    values[:, j] = torch.tensor(column)
        else:
            rows = as_tensor(x, name, dtype=torch.float64, event_shape=(len(self.variables),),
                             allow_nan=True).reshape(-1, len(self.variables))
            codes = (self._codec.encode(rows[:, :n_discrete], name) if n_discrete
                     else torch.zeros(rows.shape[0], 0, dtype=torch.long))
            values = rows[:, n_discrete:]
        if torch.isinf(values).any():
            raise DataError(f"{name} has infinite continuous values")
        return codes.to(self.device), values.to(self.device)

    # ---- the mixture of Gaussians ------------------------------------------------------------
    def _components(self) -> dict[str, Tensor]:
        """Discrete configurations (K, n_discrete), log P(k) (K,), and the continuous
        variables' means (K, n_continuous) and covariances (K, n_continuous, n_continuous)."""
        key = tuple((t.data_ptr(), t._version, str(t.device)) for t in self.buffers())
        cached = self._cache.get("components")
        if cached is not None and cached[0] == key:
            return cached[1]
        cards = [len(s) for s in self.discrete.values()]
        size = math.prod(cards)
        if size > self.max_discrete_states:
            raise DataError(f"the discrete variables have {size} joint configurations, more "
                            f"than max_discrete_states={self.max_discrete_states}")
        device = self.device
        assignments = (enumerate_assignments(cards, size, device) if cards
                       else torch.zeros(1, 0, dtype=torch.long, device=device))
        column = {v: assignments[:, i] for i, v in enumerate(self.discrete)}
        log_weights = (
            joint_log_table([self.table(v) for v in self.discrete],
                            [[column[p] for p in self.discrete_parents[v]] + [column[v]]
                             for v in self.discrete])
            if cards else torch.zeros(1, dtype=torch.float64, device=device)
        )
        count, width = assignments.shape[0], len(self.continuous)
        intercepts = torch.zeros(count, width, dtype=torch.float64, device=device)
        loadings = torch.zeros(count, width, width, dtype=torch.float64, device=device)
        noise = torch.zeros(count, width, dtype=torch.float64, device=device)
        for j, v in enumerate(self.continuous):
            coefficients, variance = self.linear_gaussian(v)
            parents = self.discrete_parents[v]
            if parents:
                config = family_index(self._configs(v), [column[p] for p in parents])
                rows = coefficients.reshape(-1, coefficients.shape[-1])[config]
                variances = variance.reshape(-1)[config]
            else:
                rows, variances = coefficients.expand(count, -1), variance.expand(count)
            intercepts[:, j] = rows[:, 0]
            for k, p in enumerate(self.continuous_parents[v]):
                loadings[:, j, self.continuous.index(p)] = rows[:, 1 + k]
            noise[:, j] = variances
        # x = b + B x + e  =>  x = (I - B)^-1 (b + e)
        inverse = torch.linalg.inv(torch.eye(width, dtype=torch.float64, device=device) - loadings)
        means = (inverse @ intercepts[..., None])[..., 0]
        covariances = inverse @ torch.diag_embed(noise) @ inverse.transpose(1, 2)
        result = {"assignments": assignments, "log_weights": log_weights, "means": means,
                  "covariances": covariances}
        self._cache["components"] = (key, result)
        return result

    def _posterior(self, codes: Tensor, values: Tensor, moments: bool = True
                   ) -> dict[str, Tensor]:
        # A handful of small batched ops per missing-value pattern: the library's thread
        # policy (probgen.core.threads), which keeps a busy 2-core machine from collapsing.
        work = values.shape[0] * len(self._components()["assignments"]) * values.shape[1] ** 2
        with small_op_threads(work, values.device):
            return self._posterior_work(codes, values, moments)

    def _posterior_work(self, codes: Tensor, values: Tensor, moments: bool = True
                        ) -> dict[str, Tensor]:
        """Per row: log P(evidence) (n,), P(configuration | evidence) (n, K) and, with
        `moments`, the mean (n, C) and covariance (n, C, C) of the continuous variables given
        the evidence (observed entries keep their values and zero variance).

        Rows are grouped by which continuous values they observe: within a group each
        component's conditional covariance is shared, and only the means depend on the row,
        so memory stays O(n K C + n C^2).
        """
        parts = self._components()
        n, width = values.shape
        count = parts["assignments"].shape[0]
        device = values.device
        log_joint = parts["log_weights"] + torch.log(evidence_masks(codes, parts["assignments"]))
        log_likelihood = torch.zeros(n, count, dtype=torch.float64, device=device)
        observed = ~torch.isnan(values)
        patterns, inverse = _missing_patterns(observed)
        mu, sigma = parts["means"], parts["covariances"]
        groups = []
        for index, pattern in enumerate(patterns):
            rows = (inverse == index).nonzero()[:, 0]
            seen, unseen = pattern.nonzero()[:, 0], (~pattern).nonzero()[:, 0]
            if seen.numel() == 0:
                groups.append((rows, unseen, mu[None].expand(rows.numel(), -1, -1), sigma))
                continue
            x_seen = values[rows][:, seen]
            sigma_oo = sigma[:, seen][:, :, seen]
            gaussian = torch.distributions.MultivariateNormal(mu[:, seen], sigma_oo)
            log_likelihood[rows] = gaussian.log_prob(x_seen[:, None, :])
            if moments and unseen.numel():
                sigma_uo = sigma[:, unseen][:, :, seen]
                gain = torch.linalg.solve(sigma_oo, sigma_uo.transpose(1, 2)).transpose(1, 2)
                shift = (gain[None] @ (x_seen[:, None, :] - mu[None, :, seen])[..., None])[..., 0]
                mean_u = mu[None, :, unseen] + shift  # (rows, K, u)
                cov_u = sigma[:, unseen][:, :, unseen] - gain @ sigma_uo.transpose(1, 2)
                groups.append((rows, unseen, mean_u, cov_u))
        log_joint = log_joint + log_likelihood
        log_evidence = torch.logsumexp(log_joint, dim=1)
        weights = torch.exp(log_joint - log_evidence[:, None]).nan_to_num(0.0)
        result = {"log_evidence": log_evidence, "weights": weights}
        if not moments:
            return result
        # observed entries are known exactly: their value, variance zero
        mean = torch.where(observed, values, torch.zeros_like(values))
        covariance = torch.zeros(n, width, width, dtype=torch.float64, device=device)
        for rows, unseen, mean_u, cov_u in groups:
            w = weights[rows]  # (rows, K)
            mixed = (w[..., None] * mean_u).sum(1)  # (rows, u)
            second = (w @ cov_u.reshape(count, -1)).reshape(-1, unseen.numel(), unseen.numel())
            second = second + torch.einsum("rk,rki,rkj->rij", w, mean_u, mean_u)
            mean[rows[:, None], unseen[None, :]] = mixed
            covariance[rows[:, None, None], unseen[None, :, None], unseen[None, None, :]] = (
                second - mixed[:, :, None] * mixed[:, None, :]
            )
        result.update(mean=mean, covariance=covariance)
        return result

    # ---- density contract and queries --------------------------------------------------------
    def log_prob(self, x: Any) -> Tensor:
        """Exact log density of each row: log probability of the discrete part plus log
        density of the continuous part; missing values (NaN) are summed or integrated out."""
        self.check_fitted("log_prob")
        return self._posterior(*self.encode(x), moments=False)["log_evidence"]

    def discrete_posterior(self, x: Any) -> dict[str, Tensor]:
        """P(discrete variable | the row's observed values), variable -> (n, n_states)."""
        self.check_fitted("discrete_posterior")
        posterior = self._checked_posterior(*self.encode(x), moments=False)
        return self._discrete_marginals(posterior["weights"])

    def _discrete_marginals(self, weights: Tensor) -> dict[str, Tensor]:
        assignments = self._components()["assignments"]
        return {
            v: weights @ torch.nn.functional.one_hot(
                assignments[:, i], len(self.discrete[v])).to(torch.float64)
            for i, v in enumerate(self.discrete)
        }

    def continuous_posterior(self, x: Any) -> tuple[Tensor, Tensor]:
        """Mean (n, n_continuous) and covariance (n, n_continuous, n_continuous) of the
        continuous variables given each row's observed values (a mixture's moments when
        discrete variables are unobserved; observed entries keep their value, variance 0)."""
        self.check_fitted("continuous_posterior")
        posterior = self._checked_posterior(*self.encode(x))
        return posterior["mean"], posterior["covariance"]

    def predict(self, x: Any) -> Tensor:
        """Rows with missing values filled: continuous by posterior mean, discrete by their
        most probable state; a float tensor (n, n_variables)."""
        self.check_fitted("predict")
        codes, values = self.encode(x)
        posterior = self._checked_posterior(codes, values)
        filled = codes.clone()
        for i, probabilities in enumerate(self._discrete_marginals(posterior["weights"]).values()):
            filled[:, i] = torch.where(codes[:, i] < 0, probabilities.argmax(1), codes[:, i])
        return torch.cat([filled.to(torch.float64), posterior["mean"]], dim=1)

    def _checked_posterior(self, codes: Tensor, values: Tensor, moments: bool = True
                           ) -> dict[str, Tensor]:
        posterior = self._posterior(codes, values, moments)
        impossible = torch.isinf(posterior["log_evidence"])
        if impossible.any():
            raise DataError(f"x[{int(impossible.nonzero()[0])}] has probability zero")
        return posterior

    def sample(self, n: int, *, seed: int | torch.Generator | None = None) -> Tensor:
        """Ancestral samples, float64 (n, n_variables) (discrete columns: state indices)."""
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        device = self.device
        uniforms = torch.rand(len(self.variables), n, generator=generator, device=device,
                              dtype=torch.float64)
        normals = torch.randn(len(self.variables), n, generator=generator, device=device,
                              dtype=torch.float64)
        codes = {v: torch.zeros(n, dtype=torch.long, device=device) for v in self.discrete}
        values: dict[str, Tensor] = {}
        for position, v in enumerate(self._order):
            parents = self.discrete_parents[v]
            config = (family_index(self._configs(v), [codes[p] for p in parents])
                      if parents else None)
            if v in self.discrete:
                table = self.table(v)
                thresholds = _inverse_cdf_thresholds(table.reshape(-1, table.shape[-1]))
                _draw_states(uniforms[position], thresholds, config, out=codes[v])
                continue
            coefficients, variance = self.linear_gaussian(v)
            rows = coefficients.reshape(-1, coefficients.shape[-1])
            rows = rows[config] if config is not None else rows.expand(n, -1)
            spread = variance.reshape(-1)
            spread = spread[config] if config is not None else spread.expand(n)
            mean = rows[:, 0].clone()
            for k, p in enumerate(self.continuous_parents[v]):
                mean = mean + rows[:, 1 + k] * values[p]
            values[v] = mean + spread.sqrt() * normals[position]
        columns = [codes[v].to(torch.float64) for v in self.discrete]
        return torch.stack(columns + [values[v] for v in self.continuous], dim=1)

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, data: Any) -> HybridBayesianNetwork:
        """Closed-form maximum likelihood from complete rows: counts (plus `pseudocount`) for
        the tables, least squares per discrete parent configuration for the linear
        Gaussians (a configuration without rows gets the pooled fit).

        Raises:
            DataError: missing values (the message names the variable).
        """
        codes, values = self.encode(data, "data")
        missing = torch.cat([codes < 0, torch.isnan(values)], dim=1)
        if missing.any():
            raise DataError(f"data has a missing value for "
                            f"{self.variables[int(missing.nonzero()[0, 1])]!r}; "
                            "HybridBayesianNetwork.fit needs complete rows")
        column = {v: codes[:, i] for i, v in enumerate(self.discrete)}
        column.update({v: values[:, j] for j, v in enumerate(self.continuous)})
        n = codes.shape[0]
        for i, v in enumerate(self.discrete):
            table = self.table(v)
            index = family_index(table.shape, [column[p] for p in self.discrete_parents[v]]
                                 + [column[v]])
            counts = torch.zeros(table.numel(), dtype=torch.float64, device=codes.device)
            counts = counts.index_add_(0, index, torch.ones(n, dtype=torch.float64,
                                                            device=codes.device))
            counts = counts.reshape(table.shape) + self.pseudocount
            sums = counts.sum(-1, keepdim=True)
            self._buffers[f"table_{i}"] = torch.where(
                sums > 0, counts / sums.clamp_min(1e-300), 1.0 / table.shape[-1])
        for j, v in enumerate(self.continuous):
            self._fit_linear_gaussian(j, v, column, n)
        self._cache.clear()
        self._mark_fitted()
        record_fit(self, EMResult(history=[float(self.log_prob(data).sum())], converged=True))
        return self

    def _fit_linear_gaussian(self, j: int, v: str, column: Mapping[str, Tensor], n: int) -> None:
        device = column[v].device
        design = torch.stack([torch.ones(n, dtype=torch.float64, device=device)]
                             + [column[p] for p in self.continuous_parents[v]], dim=1)
        target = column[v]
        configs = self._configs(v)
        count = math.prod(configs)
        config = (family_index(configs, [column[p] for p in self.discrete_parents[v]])
                  if configs else torch.zeros(n, dtype=torch.long, device=device))
        membership = torch.nn.functional.one_hot(config, count).to(torch.float64)  # (n, Q)
        gram = torch.einsum("nq,ni,nk->qik", membership, design, design)
        moment = torch.einsum("nq,ni,n->qi", membership, design, target)
        # the pseudo-inverse gives the least-squares solution of smallest norm when a
        # configuration has fewer rows than coefficients
        solution = (torch.linalg.pinv(gram) @ moment[..., None])[..., 0]
        pooled = torch.linalg.pinv(design.T @ design) @ (design.T @ target)
        rows = membership.sum(0)
        solution = torch.where(rows[:, None] > 0, solution, pooled)
        residual = target - (design * solution[config]).sum(1)
        squares = membership.T @ residual.square()
        pooled_variance = (target - design @ pooled).square().mean()
        variance = torch.where(rows > 0, squares / rows.clamp_min(1), pooled_variance)
        coefficients, _ = self.linear_gaussian(v)
        self._buffers[f"coefficients_{j}"] = solution.reshape(coefficients.shape)
        self._buffers[f"variance_{j}"] = variance.clamp_min(self.min_variance).reshape(configs)


def _float_tensor(value: Any, name: str) -> Tensor:
    try:
        tensor = torch.as_tensor(np.asarray(value, dtype=np.float64) if not isinstance(
            value, Tensor) else value.detach(), dtype=torch.float64).clone()
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} is not an array of numbers: {error}") from error
    if not torch.isfinite(tensor).all():
        raise DataError(f"{name} has NaN or infinite entries")
    return tensor


def _missing_patterns(observed: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows of a boolean (n, width) mask and each row's index among them.

    Rows are packed into one integer each first where they fit: `torch.unique(dim=0)` sorts
    whole rows and was the largest cost of `log_prob`.
    """
    width = observed.shape[1]
    if width > 62:
        return torch.unique(observed, dim=0, return_inverse=True)
    bits = torch.arange(width, device=observed.device)
    keys = (observed.long() << bits).sum(1)
    unique, inverse = torch.unique(keys, return_inverse=True)
    return ((unique[:, None] >> bits) & 1).bool(), inverse
