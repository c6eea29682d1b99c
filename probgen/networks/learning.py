"""Parameter learning of a `BayesianNetwork`: maximum likelihood, BDeu/K2/Dirichlet, EM.

Complete data is one counting pass; missing values or latent variables run EM on the shared
driver `probgen.fitting.em.run_em` (expected counts from a batched junction-tree calibration).
Under `torch.distributed` each rank passes its rows: the counts, expected counts and
log-likelihoods are summed over the ranks (`probgen.core.distributed`) and the states a rank
infers from its rows are merged, so every rank learns the tables of all the rows.

Example:
    >>> import probgen
    >>> truth = probgen.BayesianNetwork.from_example("asia")
    >>> data = truth.sample(500, seed=0, as_frame=True)
    >>> net = probgen.BayesianNetwork(truth.edges, states=truth.states, method="bayes")
    >>> net.fit(data).history_[0]["iteration"]
    1
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import torch
from torch import Tensor

import probgen.networks.factors as ops
from probgen.core.data import check_choice, check_positive_int
from probgen.core.distributed import all_gather_object, all_reduce_sum, is_distributed
from probgen.core.errors import DataError
from probgen.fitting.em import EMResult, record_fit, run_em
from probgen.networks.codec import (
    UNSET,
    fit_settings,
    is_missing,
    pd_unique,
    state_key,
)


class LearningMixin:
    """Parameter learning of `BayesianNetwork` (a mixin)."""

    def fit(
        self,
        data: Any,
        *,
        method: Any = UNSET,
        prior: Any = UNSET,
        equivalent_sample_size: Any = UNSET,
        pseudo_counts: Any = UNSET,
        latent: Any = UNSET,
        max_iter: Any = UNSET,
        tol: Any = UNSET,
        seed: Any = UNSET,
    ) -> Self:
        """Fit the tables to data: maximum likelihood or Dirichlet/BDeu posterior mean; EM when
        values are missing or variables latent.

        The settings (`method`, `prior`, `equivalent_sample_size`, `pseudo_counts`, `latent`,
        `max_iter`, `tol`, `seed`) are the constructor's; passing them here is deprecated (it
        warns, and the value applies to this call).

        Args:
            data: DataFrame of state names (NaN/None for missing; columns may be absent) or an
                integer array (n, n_variables) of state indices. Under `torch.distributed`,
                this rank's rows (every rank fits the same tables to all ranks' rows).

        Returns:
            self, with `history_` (one ``{"iteration", "log_likelihood"}`` record per EM
            iteration; one record for complete data), `n_iter_`, `converged_`.

        Raises:
            DataError: unknown columns, states the variable does not have, a latent variable
                without states.
        """
        settings = fit_settings(
            self,
            method=method,
            prior=prior,
            equivalent_sample_size=equivalent_sample_size,
            pseudo_counts=pseudo_counts,
            latent=latent,
            max_iter=max_iter,
            tol=tol,
            seed=seed,
        )
        method, prior = settings["method"], settings["prior"]
        equivalent_sample_size = settings["equivalent_sample_size"]
        pseudo_counts, latent = settings["pseudo_counts"], settings["latent"]
        max_iter, tol, seed = settings["max_iter"], settings["tol"], settings["seed"]
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
        if not _any_rank(bool(missing.any())):
            counts = self._complete_counts(codes)
            all_reduce_sum(list(counts.values()))
            self._m_step(counts, pseudo)
            loglik = _sum_ranks(float(self._log_prob_codes(codes).sum()))
            record_fit(self, EMResult(history=[loglik], converged=True))
            return self
        unique, multiplicity = torch.unique(codes, dim=0, return_counts=True)
        is_partial = (unique < 0).any(dim=1)
        complete_counts = self._complete_counts(
            unique[~is_partial], multiplicity[~is_partial].to(torch.float64)
        )
        partial, partial_weight = unique[is_partial], multiplicity[is_partial].to(torch.float64)
        all_reduce_sum(list(complete_counts.values()))
        if not self.fitted_:
            self._initialise_for_em(complete_counts, pseudo, latent or {}, seed)

        def iterate() -> float:
            expected, partial_loglik = self._expected_counts(partial, partial_weight)
            complete_loglik = (
                float((self._log_prob_codes(unique[~is_partial]) * multiplicity[~is_partial]).sum())
                if (~is_partial).any()
                else 0.0
            )
            all_reduce_sum(list(expected.values()))
            counts = {v: complete_counts[v] + expected[v] for v in self.variables}
            self._m_step(counts, pseudo)
            return _sum_ranks(complete_loglik + partial_loglik)

        result = run_em(
            iterate,
            max_iter=max_iter,
            tol=tol,
            scale=_sum_ranks(float(multiplicity.sum())),
            criterion="change",
            what="BayesianNetwork EM",
        )
        record_fit(
            self,
            result,
            warning=f"EM stopped after max_iter={max_iter} iterations before reaching tol={tol}",
        )
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
                top = max(all_gather_object(top))  # the largest state on any rank
                self.states[variable] = [str(i) for i in range(top + 1)]
            return
        if data.columns.duplicated().any():
            repeated = data.columns[data.columns.duplicated()][0]
            raise DataError(f"data has column {repeated!r} more than once")
        for variable in unknown:
            if variable not in data.columns:
                raise DataError(
                    f"variable {variable!r} is not a column of data and has no states; "
                    "give latent={name: states} or states="
                )
            values = [v for v in pd_unique(data[variable].to_numpy()) if not is_missing(v)]
            if is_distributed():  # the states seen on any rank, each once
                values = list(dict.fromkeys(v for part in all_gather_object(values) for v in part))
            if not values:
                raise DataError(f"data column {variable!r} has no observed values")
            try:
                values = sorted(values)
            except TypeError:
                values = sorted(values, key=str)
            self.states[variable] = [state_key(v) for v in values]

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


def _any_rank(flag: bool) -> bool:
    """Whether `flag` holds on any rank (the flag itself in one process)."""
    if not is_distributed():
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], dtype=torch.float64)).item() > 0)


def _sum_ranks(value: float) -> float:
    """`value` summed over the ranks (itself in one process: fits stay bit for bit)."""
    if not is_distributed():
        return value
    return float(all_reduce_sum(torch.tensor([value], dtype=torch.float64)).item())
