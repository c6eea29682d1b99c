"""NUTS and HMC through Pyro's kernels, for any flat target, several chains.

Each chain gets its own Pyro kernel built on `potential_fn` (minus the target's log density over
the flat unconstrained vector). The chains advance in lockstep, each with its own saved state of
torch's global generator (Pyro's kernels draw from it), inside `torch.random.fork_rng`, so a
run is reproducible from its seed and leaves the caller's generator untouched.

`ConditionalNUTS` moves the continuous coordinates while the discrete ones stay fixed, for
Gibbs sampling of mixed targets.

Example:
    >>> import torch
    >>> from probgen.samplers.targets import make_target
    >>> target = make_target(lambda x: -0.5 * (x**2).sum(-1), initial=torch.zeros(2))
    >>> z0 = torch.zeros(2, 2, dtype=torch.float64)
    >>> chains = PyroKernelChains(target, "nuts", z0, warmup=20, seed=0)
    >>> z, stats = chains.step()
    >>> z.shape, sorted(stats)
    (torch.Size([2, 2]), ['acceptance_rate', 'diverging', 'lp', 'step_size'])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pyro.infer.mcmc import HMC, NUTS

from probgen.samplers.targets import FlatTarget

KERNEL_OPTIONS = {
    "step_size",
    "adapt_step_size",
    "adapt_mass_matrix",
    "full_mass",
    "target_accept_prob",
    "max_tree_depth",
    "num_steps",
    "trajectory_length",
    "max_plate_nesting",
    "init_strategy",
}


class PyroKernelChains:
    """One Pyro NUTS/HMC kernel per chain over the coordinates `index` of a flat target.

    Args:
        target: the flat target.
        method: "nuts" or "hmc".
        z0: starting states (num_chains, dim).
        warmup: adaptation steps (Pyro's step-size and mass-matrix adaptation).
        seed: seeds chain c with seed + first_chain + c.
        first_chain: index of the first chain in the whole run (a rank's block of chains in
            a distributed run draws what those chains draw in one process).
        index: coordinates moved (default: every coordinate); the others stay fixed.
        kernel_options: passed to `pyro.infer.mcmc.NUTS` / `HMC` (step_size,
            target_accept_prob, max_tree_depth, full_mass, num_steps, ...).
    """

    def __init__(
        self,
        target: FlatTarget,
        method: str,
        z0: torch.Tensor,
        *,
        warmup: int,
        seed: int,
        index: torch.Tensor | None = None,
        first_chain: int = 0,
        **kernel_options: Any,
    ) -> None:
        self.target = target
        self.z = z0.clone()
        self.num_chains = z0.shape[0]
        self.index = torch.arange(target.dim) if index is None else index
        kernel_class = NUTS if method == "nuts" else HMC
        self.kernels = []
        self.params = []
        self.rng_states = []
        self._previous_mean = [0.0] * self.num_chains
        with torch.random.fork_rng(devices=[]):
            for chain in range(self.num_chains):
                torch.manual_seed(seed + first_chain + chain)
                kernel = kernel_class(
                    potential_fn=self._potential(chain), **_kernel_defaults(method, kernel_options)
                )
                kernel.initial_params = {"z": self.z[chain, self.index].clone()}
                kernel.setup(warmup)
                self.kernels.append(kernel)
                self.params.append(kernel.initial_params)
                self.rng_states.append(torch.get_rng_state())

    def _potential(self, chain: int):
        def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
            full = self.z[chain].detach().clone().to(params["z"].dtype)
            full = full.index_put((self.index,), params["z"])
            value = -self.target.log_density(full.unsqueeze(0))[0]
            return value

        return potential

    def set_state(self, z: torch.Tensor) -> None:
        """Replace the full state (after other coordinates changed); caches are cleared."""
        self.z = z.clone()
        for chain, kernel in enumerate(self.kernels):
            self.params[chain] = {"z": self.z[chain, self.index].clone()}
            kernel.clear_cache()

    def step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One transition of every chain; returns (z, statistics per chain)."""
        stats = {
            name: torch.empty(self.num_chains, dtype=torch.float64)
            for name in ("lp", "acceptance_rate", "diverging", "step_size")
        }
        with torch.random.fork_rng(devices=[]):
            for chain, kernel in enumerate(self.kernels):
                torch.set_rng_state(self.rng_states[chain])
                divergences = len(kernel._divergences)
                previous_mean = kernel._mean_accept_prob
                params = kernel.sample(self.params[chain])
                self.rng_states[chain] = torch.get_rng_state()
                self.params[chain] = params
                self.z[chain, self.index] = params["z"].detach().to(self.z.dtype)
                warmup = kernel._warmup_steps
                count = kernel._t - warmup if kernel._t > warmup else kernel._t
                accept = previous_mean + (kernel._mean_accept_prob - previous_mean) * count
                energy = kernel._potential_energy_last
                stats["lp"][chain] = -float(energy) if energy is not None else math.nan
                stats["acceptance_rate"][chain] = min(max(accept, 0.0), 1.0)
                stats["diverging"][chain] = float(len(kernel._divergences) > divergences)
                stats["step_size"][chain] = float(kernel.step_size)
        return self.z.clone(), stats


def _kernel_defaults(method: str, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - KERNEL_OPTIONS
    if unknown:
        from probgen.core.errors import DataError

        raise DataError(
            f"unknown {method} option(s) {sorted(unknown)}; known: {sorted(KERNEL_OPTIONS)}"
        )
    options = dict(options)
    if method == "hmc" and "num_steps" not in options and "trajectory_length" not in options:
        options["num_steps"] = 10
    return options
