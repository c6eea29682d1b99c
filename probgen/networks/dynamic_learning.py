"""Parameter learning of a `DynamicBayesianNetwork` from sequences (a mixin).

Complete sequences are one counting pass over the families of both slices. Sequences with
missing values run EM on the shared driver `probgen.fitting.em.run_em`: the e-step is the
forward-backward pass over the slice's joint state (`dynamic_inference.expected_counts`), whose
expected start and pair counts are mapped onto each variable's family; complete sequences add
their counts unchanged.

Example:
    >>> import torch
    >>> from probgen.networks.dynamic import DynamicBayesianNetwork
    >>> model = DynamicBayesianNetwork({"a": 2}, inter_edges=[("a", "a")])
    >>> model.fit(torch.tensor([[[0], [0], [1], [1]]])).table("a").tolist()
    [[0.5, 0.5], [0.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from probgen.fitting.em import EMResult, record_fit, run_em
from probgen.networks.dynamic_inference import expected_counts, family_index

__all__ = ["DynamicLearningMixin"]


class DynamicLearningMixin:
    """`fit` of `DynamicBayesianNetwork`: counting, and EM with missing values."""

    variables: list[str]
    pseudocount: float
    max_iter: int
    tol: float
    seed: int | None
    fitted_: bool
    _buffers: Any
    _cache: dict[str, Any]
    inter_parents: dict[str, list[str]]
    intra_parents: dict[str, list[str]]
    prior_parents: dict[str, list[str]]
    interface: list[str]

    def fit(self, sequences: Any) -> Any:
        """Fit every table to sequences: counting when complete, EM with missing values.

        Args:
            sequences: see `encode`; -1 / NaN / absent columns mark missing values.

        Returns:
            self, with `history_` (one record per EM iteration; one for complete data).
        """
        codes, lengths = self.encode(sequences)
        with self._threads(codes.shape[0]):
            return self._fit_codes(codes, lengths)

    def _fit_codes(self, codes: Tensor, lengths: Tensor) -> Any:
        live = torch.arange(codes.shape[1], device=codes.device)[None, :] < lengths[:, None]
        missing = ((codes < 0) & live[..., None]).flatten(1).any(dim=1)
        complete_counts = self._complete_counts(codes[~missing], lengths[~missing])
        if not missing.any():
            self._m_step(complete_counts)
            total = float(self._log_prob_codes(codes, lengths).sum())
            record_fit(self, EMResult(history=[total], converged=True))
            return self
        partial, partial_lengths = codes[missing], lengths[missing]
        if not self.fitted_:
            self._initialise(codes, lengths, complete_counts)
        complete_rows = (~missing).nonzero()[:, 0]

        def iterate() -> float:
            fb, masks = self._forward_backward(partial, partial_lengths, smooth=True)
            joint = self._joint()
            start, pairs = expected_counts(fb, joint["transition"], joint["projection"], masks,
                                           partial_lengths)
            counts = self._joint_to_family_counts(start, pairs, joint)
            total = float(fb.log_likelihood.sum())
            if complete_rows.numel():
                total += float(
                    self._log_prob_codes(codes[complete_rows], lengths[complete_rows]).sum()
                )
            self._m_step({k: counts[k] + complete_counts[k] for k in counts})
            return total

        result = run_em(iterate, max_iter=self.max_iter, tol=self.tol, scale=codes.shape[0],
                        guard=self, what="DBN EM",
                        hint="a pseudocount > 0 keeps unseen configurations away from zero")
        record_fit(self, result, warning=f"DBN EM did not converge in {self.max_iter} "
                   "iterations; raise max_iter or tol")
        return self

    def _complete_counts(self, codes: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Family counts of complete sequences, keyed "prior_i" / "transition_i"."""
        counts = {}
        live = torch.arange(codes.shape[1], device=codes.device)[None, :] < lengths[:, None]
        column = {v: codes[..., i] for i, v in enumerate(self.variables)}
        for i, v in enumerate(self.variables):
            for kind in ("prior", "transition"):
                table = self.table(v, kind)
                total = torch.zeros(table.numel(), dtype=torch.float64, device=codes.device)
                if codes.shape[0] and kind == "prior":
                    axes = [column[p][:, 0] for p in self.prior_parents[v]] + [column[v][:, 0]]
                    total.index_add_(0, family_index(table.shape, axes),
                                     torch.ones(codes.shape[0], dtype=torch.float64,
                                                device=codes.device))
                elif codes.shape[0] and codes.shape[1] > 1:
                    axes = ([column[p][:, :-1] for p in self.inter_parents[v]]
                            + [column[p][:, 1:] for p in self.intra_parents[v]]
                            + [column[v][:, 1:]])
                    index = family_index(table.shape, axes)
                    total.index_add_(0, index.reshape(-1), live[:, 1:].reshape(-1).double())
                counts[f"{kind}_{i}"] = total.reshape(table.shape)
        return counts

    def _joint_to_family_counts(
        self, start: Tensor, pairs: Tensor, joint: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Family counts from expected slice counts (S,) and (interface, slice) pair counts
        (S_I, S)."""
        assignments = joint["assignments"]
        column = {v: assignments[:, i] for i, v in enumerate(self.variables)}
        previous = {v: joint["interface_assignments"][:, i] for i, v in enumerate(self.interface)}
        counts = {}
        for i, v in enumerate(self.variables):
            prior = self.table(v, "prior")
            axes = [column[p] for p in self.prior_parents[v]] + [column[v]]
            total = torch.zeros(prior.numel(), dtype=torch.float64, device=start.device)
            counts[f"prior_{i}"] = total.index_add_(
                0, family_index(prior.shape, axes), start
            ).reshape(prior.shape)
            table = self.table(v)
            index = family_index(table.shape, self._transition_axes(v, previous, column))
            total = torch.zeros(table.numel(), dtype=torch.float64, device=start.device)
            counts[f"transition_{i}"] = total.index_add_(
                0, index.expand(pairs.shape).reshape(-1), pairs.reshape(-1)
            ).reshape(table.shape)
        return counts

    def _m_step(self, counts: Mapping[str, Tensor]) -> None:
        for name, count in counts.items():
            smoothed = count + self.pseudocount
            sums = smoothed.sum(-1, keepdim=True)
            uniform = torch.full_like(smoothed, 1.0 / smoothed.shape[-1])
            # a parent configuration never seen keeps a uniform row
            self._buffers[name] = torch.where(sums > 0, smoothed / sums.clamp_min(1e-300), uniform)
        self._cache.clear()

    def _initialise(self, codes: Tensor, lengths: Tensor, complete_counts: Mapping) -> None:
        """EM start: counts of the families fully observed, plus seeded noise that breaks the
        symmetry between the states of variables never observed."""
        generator = torch.Generator().manual_seed(0 if self.seed is None else int(self.seed))
        observed = self._observed_family_counts(codes, lengths)
        start = {}
        for name, count in observed.items():
            noise = torch.rand(count.shape, generator=generator, dtype=torch.float64)
            start[name] = count + 1.0 + noise.to(count.device) * count.shape[-1]
        self._m_step({k: v - self.pseudocount for k, v in start.items()})

    def _observed_family_counts(self, codes: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        # count each family over the steps where all its members are observed: missing values
        # become state 0 with weight 0
        live = torch.arange(codes.shape[1], device=codes.device)[None, :] < lengths[:, None]
        seen = codes >= 0
        column = {v: codes[..., i].clamp_min(0) for i, v in enumerate(self.variables)}
        ok = {v: seen[..., i] for i, v in enumerate(self.variables)}
        counts = {}
        for i, v in enumerate(self.variables):
            prior = self.table(v, "prior")
            members = [*self.prior_parents[v], v]
            weight = torch.stack([ok[m][:, 0] for m in members]).all(0) & live[:, 0]
            total = torch.zeros(prior.numel(), dtype=torch.float64, device=codes.device)
            index = family_index(prior.shape, [column[m][:, 0] for m in members])
            counts[f"prior_{i}"] = total.index_add_(0, index, weight.double()).reshape(prior.shape)
            table = self.table(v)
            total = torch.zeros(table.numel(), dtype=torch.float64, device=codes.device)
            if codes.shape[1] > 1:
                axes = ([column[p][:, :-1] for p in self.inter_parents[v]]
                        + [column[p][:, 1:] for p in self.intra_parents[v]] + [column[v][:, 1:]])
                masks = ([ok[p][:, :-1] for p in self.inter_parents[v]]
                         + [ok[p][:, 1:] for p in self.intra_parents[v]] + [ok[v][:, 1:]])
                weight = torch.stack(masks).all(0) & live[:, 1:]
                total.index_add_(0, family_index(table.shape, axes).reshape(-1),
                                 weight.reshape(-1).double())
            counts[f"transition_{i}"] = total.reshape(table.shape)
        return counts

