"""Helpers shared by the Boltzmann machine family: enumeration, binary checks, results.

Example:
    >>> from probgen.graphical._boltzmann_common import binary_codes
    >>> binary_codes(0, 4, 2).tolist()
    [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from probgen.errors import DataError

# Enumeration works on chunks holding at most this many numbers (configurations x width).
ENUMERATION_CHUNK_ELEMENTS = 1 << 22
# Hard ceiling on the number of enumerated units (2**25 configurations).
MAX_ENUMERATED_UNITS = 25


@dataclass(frozen=True)
class LogPartition:
    """A log-partition function with its uncertainty.

    Attributes:
        estimate: log Z (nats).
        stderr: standard error of `estimate` (0 when exact).
        method: ``"exact"`` or ``"ais"``.
        n_runs: number of AIS runs (0 when exact).
        n_betas: number of AIS inverse temperatures (0 when exact).
    """

    estimate: float
    stderr: float
    method: str
    n_runs: int = 0
    n_betas: int = 0

    def __float__(self) -> float:
        return float(self.estimate)


def binary_codes(
    start: int,
    stop: int,
    n_units: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Rows ``start .. stop - 1`` of the table of all binary vectors of length `n_units`.

    Row r holds the bits of r, least significant first.
    """
    codes = torch.arange(start, stop, device=device, dtype=torch.long)
    shifts = torch.arange(n_units, device=device, dtype=torch.long)
    return ((codes[:, None] >> shifts[None, :]) & 1).to(dtype)


def enumerate_logsumexp(
    n_units: int,
    log_weight: Callable[[torch.Tensor], torch.Tensor],
    *,
    width: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """``log sum_x exp(log_weight(x))`` over every binary vector x of length `n_units`.

    The configurations are generated and scored in chunks so that memory stays bounded;
    `width` is the size of the other dimension the scoring function touches per configuration.
    """
    if n_units > MAX_ENUMERATED_UNITS:
        raise DataError(
            f"exact enumeration needs at most {MAX_ENUMERATED_UNITS} units in the enumerated "
            f"layer, this model has {n_units}; use method='ais'"
        )
    total = 1 << n_units
    chunk = max(1, min(total, ENUMERATION_CHUNK_ELEMENTS // max(1, width + n_units)))
    partial = []
    for start in range(0, total, chunk):
        configs = binary_codes(
            start, min(total, start + chunk), n_units, dtype=dtype, device=device
        )
        partial.append(torch.logsumexp(log_weight(configs), dim=0))
    return torch.logsumexp(torch.stack(partial), dim=0)


def check_binary(x: torch.Tensor, name: str) -> None:
    """Raise `DataError` unless every entry of `x` is 0 or 1."""
    if not ((x == 0) | (x == 1)).all():
        bad = x[(x != 0) & (x != 1)]
        raise DataError(
            f"{name} has values other than 0 and 1 (e.g. {bad.reshape(-1)[0].item():g}); "
            "binary units need {0,1} data: binarise it first, e.g. (x > 0.5)"
        )


def adopt_saved_dtype(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Cast `module` to the floating dtype of saved tensors (so float64 models load as such)."""
    for tensor in tensors.values():
        if tensor.is_floating_point():
            module.to(tensor.dtype)
            return
