"""Latent noise of a data-parallel Pyro fit drawn by global row, as one process draws it.

A VAE step draws one standard-normal vector per example for its reparameterised latents. In one
process those are the rows of one draw of shape (global batch, ...) from torch's generator. A
data-parallel rank holds only some rows of each global batch; drawing noise for just those rows
would give every rank different numbers from the single-process fit (and ranks that share a
stream would even reuse each other's). `GlobalRowNoise` makes each rank draw the noise of the
whole global batch from the stream all ranks share, exactly as `Normal.rsample` does in one
process, and keep the rows it holds. The ranks' gradients then sum to the single-process
gradient up to rounding, draw for draw.

Only reparameterised normal latent sites (`Normal`, or `Independent` of one) inside the data
plate are drawn by global row. Any other latent site (a discrete latent, a non-normal
reparameterised latent) is drawn from a per-rank stream instead, so ranks never reuse each
other's noise; such fits agree with one process in distribution, not draw for draw.

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> from probgen.fitting.row_noise import GlobalRowNoise
    >>> def guide(n):
    ...     with pyro.plate("data", n):
    ...         return pyro.sample("z", dist.Normal(torch.zeros(n), 1.0))
    >>> _ = torch.manual_seed(0)
    >>> whole = guide(4)  # one process: rows 0..3 of a global batch of 4
    >>> _ = torch.manual_seed(0)
    >>> with GlobalRowNoise(torch.tensor([1, 3]), 4, rank_seed=1):
    ...     mine = guide(2)  # this rank holds rows 1 and 3 of that batch
    >>> torch.equal(mine, whole[[1, 3]])
    True
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.poutine.messenger import Messenger

__all__ = ["GlobalRowNoise"]

_PARTICLE_PLATE = "num_particles_vectorized"  # Pyro's outer plate of vectorised particles


def _normal_parts(fn: Any) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]] | None:
    """(loc, scale, batch shape) of a normal distribution, possibly wrapped in `Independent`."""
    base = fn
    while isinstance(base, torch.distributions.Independent):
        base = base.base_dist
    if type(base).__name__ != "Normal" or not isinstance(base, torch.distributions.Normal):
        return None
    return base.loc, base.scale, tuple(fn.batch_shape)


class GlobalRowNoise(Messenger):
    """Draw normal latents of the data plate for the global batch and keep this rank's rows.

    Args:
        positions: long tensor (n_local,) of this rank's rows' places in the global batch, in
            the order of the local batch.
        n_global: the global batch's number of rows.
        rank_seed: seeds the per-rank draws of latent sites that cannot be drawn by row; the
            caller makes it differ between ranks and between steps.
    """

    def __init__(self, positions: torch.Tensor, n_global: int, rank_seed: int) -> None:
        super().__init__()
        self.positions = positions
        self.n_global = int(n_global)
        self.rank_seed = int(rank_seed)
        self.other_sites = 0

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["is_observed"] or msg["value"] is not None or msg.get("done"):
            return
        fn = msg["fn"]
        parts = _normal_parts(fn)
        n_local = len(self.positions)
        frame = next(
            (
                f
                for f in msg["cond_indep_stack"]
                if f.name != _PARTICLE_PLATE and f.size == n_local and f.dim is not None
            ),
            None,
        )
        if parts is None or frame is None:
            self._draw_per_rank(msg)
            return
        loc, scale, batch_shape = parts
        axis = len(batch_shape) + frame.dim
        shape = list(batch_shape) + list(fn.event_shape)
        if not 0 <= axis < len(batch_shape) or shape[axis] != n_local:
            self._draw_per_rank(msg)
            return
        shape[axis] = self.n_global
        # what Normal.rsample draws in one process (torch.distributions.utils._standard_normal)
        noise = torch.empty(shape, dtype=loc.dtype, device=loc.device).normal_()
        noise = noise.index_select(axis, self.positions.to(noise.device))
        msg["value"] = loc + noise * scale

    def _draw_per_rank(self, msg: dict[str, Any]) -> None:
        # the shared stream stays untouched: every rank must advance it alike
        self.other_sites += 1
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
            torch.manual_seed((self.rank_seed * 1_000_003 + self.other_sites) % 2**63)
            fn = msg["fn"]
            msg["value"] = fn(*msg["args"], **msg["kwargs"])
