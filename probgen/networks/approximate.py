"""Approximate inference of a `BayesianNetwork`: loopy BP, likelihood weighting, Gibbs.

`ApproximateMixin` gives `BayesianNetwork` `approximate_marginals` (with a convergence report)
and the Gibbs kernel (`initial_state`, `gibbs_step`) the samplers in `probgen.samplers` drive.

Example:
    >>> import probgen
    >>> asia = probgen.BayesianNetwork.from_example("asia")
    >>> marginals, info = asia.approximate_marginals({"smoke": "yes"})
    >>> info["converged"], round(float(marginals["lung"][0]), 6)
    (True, 0.1)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

import probgen.networks.factors as ops
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import ConvergenceWarning, DataError
from probgen.core.threads import small_op_threads
from probgen.networks.codec import (
    check_chain_state,
    clamp_chains,
    draw_states,
)


class ApproximateMixin:
    """Approximate inference and the Gibbs kernel of `BayesianNetwork` (a mixin)."""

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
            with small_op_threads():
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
            with small_op_threads():
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
        with small_op_threads():
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
