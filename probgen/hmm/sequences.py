"""Sequence input helpers of the HMM and the prepared batch its EM loop reuses.

`_Batch` lays padded sequences out time-major once per fit and caches the emission's prepared
inputs; the other helpers check and reshape what users pass to `HMM` methods.

Example:
    >>> import torch
    >>> from probgen.core.data import Sequences
    >>> from probgen.hmm.sequences import _Batch
    >>> batch = _Batch.of(Sequences(torch.zeros(2, 3, dtype=torch.long), torch.tensor([3, 2])))
    >>> batch.values_tm.shape, batch.complete
    (torch.Size([3, 2]), False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import probgen.hmm.inference as hmm_inference
from probgen.core.data import Sequences
from probgen.core.errors import DataError
from probgen.hmm.emissions import (
    Emission,
)


@dataclass
class _Batch:
    """Prepared sequences laid out time-major for the EM loop (built once per fit)."""

    values_tm: torch.Tensor  # (max_length, n_sequences, *event)
    lengths: torch.Tensor
    mask_tm: torch.Tensor  # (max_length, n_sequences)
    complete: bool  # every sequence has max_length steps
    observed_values: torch.Tensor  # (n_observed_steps, *event), time-major order
    # (max_length, n_sequences) known states (-1 unknown) of a labelled fit; None: unlabelled.
    states_tm: torch.Tensor | None = field(default=None, repr=False)
    # (emission, its prepare_key() then, emission.prepare(values_tm)), reused across iterations.
    _prepared: tuple[Emission, torch.Tensor | None, Any] | None = field(default=None, repr=False)
    # The e-step's large arrays, reused across iterations rather than mapped in afresh.
    workspace: hmm_inference.Workspace = field(default_factory=hmm_inference.Workspace, repr=False)

    @classmethod
    def of(cls, data: Sequences, states: torch.Tensor | None = None) -> _Batch:
        values_tm = data.values.transpose(0, 1).contiguous()
        mask_tm = data.mask.t()
        complete = bool(mask_tm.all())
        observed = values_tm.reshape(-1, *values_tm.shape[2:]) if complete else values_tm[mask_tm]
        states_tm = None if states is None else states.t().contiguous()
        return cls(values_tm, data.lengths, mask_tm, complete, observed, states_tm)

    def emission_inputs(self, emission: Emission) -> Any:
        """`emission.prepare(values_tm)`, computed once per fit rather than once per iteration.

        It is recomputed only when the emission, or the parameters its preparation depends on
        (`emission.prepare_key()`, e.g. the Gaussian centre set by a restart), change.
        """
        key = emission.prepare_key()
        if self._prepared is not None:
            cached_emission, cached_key, inputs = self._prepared
            if cached_emission is emission and _same_key(cached_key, key):
                return inputs
        inputs = emission.prepare(self.values_tm)
        self._prepared = (emission, None if key is None else key.clone(), inputs)
        return inputs


def _same_key(cached: torch.Tensor | None, current: torch.Tensor | None) -> bool:
    if cached is None or current is None:
        return cached is None and current is None
    return (
        cached.dtype == current.dtype
        and cached.shape == current.shape
        and torch.equal(cached, current)
    )


def _count_sequences(data: Any) -> int:
    """Number of sequences in raw input, to choose the thread count (1 when unknown)."""
    if isinstance(data, _Batch):
        return int(data.lengths.numel())
    if isinstance(data, Sequences):
        return int(data.values.shape[0])
    if isinstance(data, (list, tuple)):
        return len(data)
    shape = getattr(data, "shape", None)
    return int(shape[0]) if shape else 1


def _check_nonnegative(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} must be a number >= 0, got {value!r}") from error
    if not number >= 0 or not math.isfinite(number):
        raise DataError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _add_feature_axis(data: Any, n_features: int | None) -> Any:
    """Let 1-feature models take sequences without the trailing feature axis."""
    if n_features not in (None, 1):
        return data
    if isinstance(data, Sequences):
        if data.values.dim() == 2:
            return Sequences(data.values.unsqueeze(-1), data.lengths)
        return data
    if isinstance(data, (list, tuple)):
        if (
            data
            and all(np.ndim(item) == 1 for item in data)
            and not all(np.isscalar(item) for item in data)
        ):
            return [
                np.asarray(item)[:, None]
                if not isinstance(item, torch.Tensor)
                else item.unsqueeze(-1)
                for item in data
            ]
        return data
    if isinstance(data, torch.Tensor):
        return data.unsqueeze(-1) if data.dim() == 2 else data
    if isinstance(data, np.ndarray) or hasattr(data, "to_numpy"):
        array = np.asarray(data)
        return array[..., None] if array.ndim == 2 else array
    return data


def _infer_n_features(data: Any, name: str) -> int:
    if isinstance(data, Sequences):
        return int(data.values.shape[-1]) if data.values.dim() == 3 else 1
    if isinstance(data, (list, tuple)):
        if not data:
            raise DataError(f"{name} is empty; give at least one sequence")
        first = np.shape(data[0])
        if len(first) != 2:
            raise DataError(f"{name}[0] has shape {first}; expected (length, n_features)")
        return int(first[1])
    shape = np.shape(data) if not isinstance(data, torch.Tensor) else tuple(data.shape)
    if len(shape) != 3:
        raise DataError(
            f"{name} has shape {tuple(shape)}; expected (n_sequences, length, n_features) or a "
            "list of arrays of shape (length, n_features)"
        )
    return int(shape[2])


def _in_support(support: Any, values: torch.Tensor, event_dims: int) -> torch.Tensor:
    inside = support.check(values)
    while inside.dim() > values.dim() - event_dims:
        inside = inside.all(-1)
    return inside
