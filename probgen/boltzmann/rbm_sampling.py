"""The RBM's sampling side: the Gibbs interface of `probgen.samplers` and the draws of `sample`.

`RBMSampling` is a mixin of `probgen.boltzmann.rbm.RBM`: it reads the model's parameters
through `self.params()` and `self.base_rates()` and never imports the class.

Example:
    >>> import torch
    >>> from probgen.boltzmann.rbm import RBM
    >>> rbm = RBM(3, 2).set_parameters(weights=torch.ones(3, 2))
    >>> chains = rbm.initial_state(4, generator=torch.Generator().manual_seed(0))
    >>> rbm.gibbs_step(chains, evidence={0: 1.0})[:, 0].tolist()
    [1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from probgen.boltzmann.common import ENUMERATION_CHUNK_ELEMENTS, MAX_ENUMERATED_UNITS, binary_codes
from probgen.boltzmann.rbm_functions import (
    enumerated_layer,
    free_energy,
    hidden_log_marginal,
    sample_base,
    sample_visible,
    tempered_gibbs_step,
    visible_preactivation,
)
from probgen.core.data import check_positive_int
from probgen.core.errors import DataError
from probgen.core.threads import small_op_loop


class RBMSampling:
    """Evidence, chain starts, Gibbs sweeps and exact sampling of an RBM (a mixin)."""

    # ---- Gibbs interface (shared with probgen.samplers) -------------------------------------
    def _evidence(self, evidence: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Clamped visible units as (mask, values) over the flat visible units, or None."""
        if not evidence:
            return None
        if not isinstance(evidence, Mapping):
            raise DataError(
                "evidence must be a dict {visible unit index: value}, got "
                f"{type(evidence).__name__}"
            )
        mask = torch.zeros(self.n_visible_units, dtype=torch.bool, device=self.device)
        values = torch.zeros(self.n_visible_units, dtype=self.dtype, device=self.device)
        for unit, value in evidence.items():
            if (
                isinstance(unit, bool)
                or not isinstance(unit, int)
                or not 0 <= unit < self.n_visible
            ):
                raise DataError(
                    f"evidence key {unit!r} is not a visible unit index in [0, {self.n_visible})"
                )
            value = float(value)
            if self.visible == "categorical":
                if value != int(value) or not 0 <= value < self.n_categories:
                    raise DataError(
                        f"evidence[{unit}] = {value:g} is not a category code in "
                        f"[0, {self.n_categories})"
                    )
                start = unit * self.n_categories
                mask[start : start + self.n_categories] = True
                values[start + int(value)] = 1.0
            else:
                if self.visible == "bernoulli" and value not in (0.0, 1.0):
                    raise DataError(f"evidence[{unit}] = {value:g}; Bernoulli units take 0 or 1")
                if not math.isfinite(value):
                    raise DataError(f"evidence[{unit}] is not finite")
                mask[unit] = True
                values[unit] = value
        return mask, values

    def initial_state(
        self,
        num_chains: int,
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[int, Any] | None = None,
    ) -> torch.Tensor:
        """Starting visible states for `num_chains` chains: draws from the base-rate model.

        Args:
            num_chains: number of chains.
            generator: source of randomness.
            evidence: optional dict {visible unit index: value} of clamped units (for
                categorical units the value is the category code).
        """
        num_chains = check_positive_int(num_chains, "num_chains")
        generator = generator or self.make_generator(None)
        clamp = self._evidence(evidence)
        flat = sample_base(self.params(), self.base_rates(), num_chains, generator)
        if clamp is not None:
            flat = torch.where(clamp[0], clamp[1], flat)
        return self._to_event(flat, torch.Size([num_chains]))

    def gibbs_step(
        self,
        v: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[int, Any] | None = None,
    ) -> torch.Tensor:
        """One block-Gibbs sweep v -> h -> v' for a batch of chains (*batch, *event_shape).

        With `evidence` the clamped visible units keep their values, so the chains sample the
        conditional distribution of the others (visible units are independent given h).
        """
        v = torch.as_tensor(v, dtype=self.dtype, device=self.device)
        event_dims = len(self.event_shape)
        if tuple(v.shape[v.dim() - event_dims :]) != tuple(self.event_shape):
            raise DataError(
                f"v has shape {tuple(v.shape)}; chains need trailing shape "
                f"{tuple(self.event_shape)}"
            )
        generator = generator or self.make_generator(None)
        clamp = self._evidence(evidence)
        batch_shape = v.shape[: v.dim() - event_dims]
        flat = v.reshape(-1, self.n_visible_units)
        if clamp is not None:
            flat = torch.where(clamp[0], clamp[1], flat)
        flat = tempered_gibbs_step(self.params(), self.base_rates(), flat, 1.0, generator)
        if clamp is not None:
            flat = torch.where(clamp[0], clamp[1], flat)
        return self._to_event(flat, batch_shape)


    # ---- sampling (`sample` itself is EnergyModel's) ---------------------------------------
    @small_op_loop(lambda self, n, *_: n * int(self.weights.numel()))
    def _sample_gibbs(self, n: int, steps: int, generator: torch.Generator) -> torch.Tensor:
        params = self.params()
        base = self.base_rates()
        flat = sample_base(params, base, n, generator)
        for _ in range(steps):
            flat = tempered_gibbs_step(params, base, flat, 1.0, generator)
        return self._to_event(flat, torch.Size([n]))

    def _sample_exact(self, n: int, generator: torch.Generator) -> torch.Tensor:
        units = self._enumerated_units()
        if units > MAX_ENUMERATED_UNITS - 3:
            raise DataError(f"exact sampling enumerates 2**{units} states; use method='gibbs'")
        params64 = self.params(torch.float64)
        layer = enumerated_layer(params64)
        chunk = max(1, ENUMERATION_CHUNK_ELEMENTS // max(1, self.n_visible_units + self.n_hidden))
        scores = []
        for start in range(0, 1 << units, chunk):
            configs = binary_codes(
                start,
                min(1 << units, start + chunk),
                units,
                dtype=torch.float64,
                device=self.device,
            )
            if layer == "visible":
                scores.append(-free_energy(params64, configs))
            else:
                scores.append(hidden_log_marginal(params64, configs))
        log_weights = torch.cat(scores)
        probabilities = torch.softmax(log_weights, 0)
        index = torch.multinomial(probabilities, n, replacement=True, generator=generator)
        shifts = torch.arange(units, device=self.device)
        states = ((index[:, None] >> shifts[None, :]) & 1).to(self.dtype)
        if layer == "visible":
            return self._to_event(states, torch.Size([n]))
        params = self.params()
        flat = sample_visible(params, visible_preactivation(params, states), generator)
        return self._to_event(flat, torch.Size([n]))

