"""Collect draws while a sampler runs, and flush what is done to a checkpoint file.

`DrawRecorder` keeps flat states (chain, draw, dim) and statistics, turns them into `Samples`
(mapping flat states to named constrained values in chunks), and writes the finished draws to
`checkpoint` every `flush_every` draws and when the run is interrupted, so an interrupted run
leaves readable samples. `kept_sweeps` says which sweeps of a run give the kept draws.

Example:
    >>> import torch
    >>> from probgen.samplers.targets import make_target
    >>> target = make_target(lambda x: -(x**2).sum(-1), initial=torch.zeros(2))
    >>> recorder = DrawRecorder(target, num_chains=3, num_samples=5, stat_names=("lp",))
    >>> recorder.record(0, torch.zeros(3, 2), lp=torch.zeros(3))
    >>> recorder.to_samples().num_draws
    1
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probgen.samplers.samples import Samples
from probgen.samplers.targets import FlatTarget


def kept_sweeps(
    warmup: int, num_samples: int, thin: int, progress: Any = None
) -> Iterator[tuple[int, int | None]]:
    """The `warmup + num_samples * thin` sweeps of a run, with the draw each one keeps.

    Yields (sweep, draw): `draw` is the index of the kept draw that this sweep produces, or
    None for warmup sweeps and sweeps that thinning drops. `progress` (a tqdm bar or None) is
    advanced once after each sweep.

    Example:
        >>> [draw for _, draw in kept_sweeps(warmup=2, num_samples=2, thin=2)]
        [None, None, None, 0, None, 1]
    """
    for sweep in range(warmup + num_samples * thin):
        kept = sweep - warmup
        yield sweep, kept // thin if kept >= 0 and (kept + 1) % thin == 0 else None
        if progress is not None:
            progress.update(1)


class DrawRecorder:
    """Storage for a run's draws (see module docstring)."""

    def __init__(
        self,
        target: FlatTarget,
        num_chains: int,
        num_samples: int,
        stat_names: tuple[str, ...],
        *,
        attrs: dict[str, Any] | None = None,
        checkpoint: str | Path | None = None,
        flush_every: int | None = None,
    ) -> None:
        self.target = target
        self.num_chains = num_chains
        self.num_samples = num_samples
        self.z = torch.full((num_chains, num_samples, target.dim), math.nan, dtype=target.dtype)
        self.stats = {name: np.full((num_chains, num_samples), np.nan) for name in stat_names}
        self.filled = np.zeros(num_chains, dtype=np.int64)
        self.attrs = dict(attrs or {})
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.flush_every = flush_every or max(1, num_samples // 10)
        self._last_flush = 0

    def record(self, draw: int, z: torch.Tensor, **stats: Any) -> None:
        """Store draw number `draw` of every chain."""
        self.z[:, draw] = z.detach().to(self.z.dtype).cpu()
        for name, value in stats.items():
            self.stats[name][:, draw] = _numpy(value)
        self.filled[:] = draw + 1
        self._maybe_flush()

    def record_chain(self, chain: int, draw: int, z: torch.Tensor, **stats: Any) -> None:
        """Store draw number `draw` of one chain."""
        self.z[chain, draw] = z.detach().to(self.z.dtype).cpu()
        for name, value in stats.items():
            self.stats[name][chain, draw] = float(value)
        self.filled[chain] = draw + 1
        self._maybe_flush()

    @property
    def complete_draws(self) -> int:
        return int(self.filled.min())

    def _maybe_flush(self) -> None:
        if self.checkpoint is None:
            return
        done = self.complete_draws
        if done - self._last_flush >= self.flush_every and done < self.num_samples:
            self.flush()

    def flush(self) -> None:
        """Write the draws finished so far to the checkpoint file (if any)."""
        if self.checkpoint is None or self.complete_draws == 0:
            return
        samples = self.to_samples(extra_attrs={"complete": False})
        samples.save(self.checkpoint)
        self._last_flush = self.complete_draws

    def to_samples(
        self,
        count: int | None = None,
        extra_attrs: dict[str, Any] | None = None,
        chunk: int = 4096,
    ) -> Samples:
        """The first `count` draws of every chain (all finished ones by default) as `Samples`."""
        count = self.complete_draws if count is None else count
        z = self.z[:, :count]
        flat = z.reshape(-1, self.target.dim)
        parts: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            for start in range(0, flat.shape[0], chunk):
                values = self.target.constrain_fn(
                    flat[start : start + chunk].to(self.target.device)
                )
                for name, value in values.items():
                    parts.setdefault(name, []).append(value.detach().cpu())
        draws = (
            {
                name: torch.cat(pieces).reshape((self.num_chains, count) + pieces[0].shape[1:])
                for name, pieces in parts.items()
            }
            if flat.shape[0]
            else {name: torch.zeros(self.num_chains, 0) for name in ["x"]}
        )
        draws = {name: value.double().numpy() for name, value in draws.items()}
        stats = {name: value[:, :count] for name, value in self.stats.items()}
        if "diverging" in stats:
            stats["diverging"] = stats["diverging"] > 0.5
        attrs = dict(self.attrs)
        attrs.update(extra_attrs or {})
        attrs.setdefault("complete", count == self.num_samples)
        return Samples(draws, stats, attrs, unconstrained=z.double().numpy())


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)
