"""Minibatches for the gradient loop: tensors, `Sequences`, tuples of them, or a DataLoader.

Tensor data small enough is moved to the model's device once, so that each step only indexes
it; the order is shuffled by a seeded generator each epoch.

Example:
    >>> import torch
    >>> from probgen.fitting.batching import first_tensor
    >>> first_tensor((torch.zeros(2), torch.ones(2))).tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from probgen.core.data import Sequences
from probgen.core.errors import DataError

__all__ = ["first_tensor"]

# Data smaller than this is moved to the model's device once, so each step only indexes it.
_MOVE_WHOLE_DATA_BYTES = 1 << 30


def first_tensor(batch: Any) -> torch.Tensor:
    """The examples of a minibatch, which arrives as a tensor or a tuple/list of tensors.

    Example:
        >>> first_tensor((torch.zeros(2), torch.ones(2))).tolist()
        [0.0, 0.0]
    """
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def _is_loader(data: Any) -> bool:
    return isinstance(data, torch.utils.data.DataLoader)


def _as_parts(data: Any, name: str) -> tuple[Any, ...] | Any:
    """Check indexable data: a tensor, a `Sequences`, or a tuple/list of those."""
    if isinstance(data, (torch.Tensor, Sequences)):
        parts: tuple[Any, ...] = (data,)
    elif (
        isinstance(data, (tuple, list))
        and data
        and all(isinstance(p, (torch.Tensor, Sequences)) for p in data)
    ):
        parts = tuple(data)
    else:
        raise DataError(
            f"{name} must be a tensor, a Sequences, a tuple of tensors (first dimension = "
            f"examples) or a torch DataLoader; got {type(data).__name__}"
        )
    sizes = {len(p) for p in parts}
    if len(sizes) != 1:
        raise DataError(
            f"{name}: the tensors of the tuple have different numbers of examples {sorted(sizes)}"
        )
    if sizes.pop() == 0:
        raise DataError(f"{name} is empty")
    return parts


def _n_examples(parts: tuple[Any, ...]) -> int:
    return len(parts[0])


def _index(parts: tuple[Any, ...], index: torch.Tensor, single: bool) -> Any:
    picked = tuple(p[index] for p in parts)
    return picked[0] if single else picked


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, (torch.Tensor, Sequences)):
        return batch.to(device) if _device_of(batch) != device else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_move(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


def _device_of(value: Any) -> torch.device:
    return value.values.device if isinstance(value, Sequences) else value.device


def _batch_size_of(batch: Any) -> int:
    if isinstance(batch, (torch.Tensor, Sequences)):
        return len(batch)
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_size_of(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size_of(next(iter(batch.values())))
    return 1


def _nbytes(parts: tuple[Any, ...]) -> int:
    total = 0
    for part in parts:
        tensor = part.values if isinstance(part, Sequences) else part
        total += tensor.numel() * tensor.element_size()
    return total


class _Batches:
    """Yields minibatches on the model's device from tensors or a DataLoader."""

    def __init__(
        self,
        data: Any,
        name: str,
        batch_size: int,
        device: torch.device,
        collate: Callable[[Any], Any] | None,
    ) -> None:
        self.loader = data if _is_loader(data) else None
        self.batch_size = batch_size
        self.device = device
        self.collate = collate
        if self.loader is None:
            self.single = isinstance(data, (torch.Tensor, Sequences))
            parts = _as_parts(data, name)
            if _nbytes(parts) <= _MOVE_WHOLE_DATA_BYTES:
                parts = tuple(_move(p, device) for p in parts)
            self.parts = parts
            self.n = _n_examples(parts)

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        return math.ceil(self.n / self.batch_size)

    def iterate(self, generator: torch.Generator | None) -> Iterator[Any]:
        if self.loader is not None:
            for batch in self.loader:
                batch = _move(batch, self.device)
                yield self.collate(batch) if self.collate is not None else batch
            return
        if generator is None:
            order = torch.arange(self.n)
        else:
            order = torch.randperm(self.n, generator=generator)
        index_device = _device_of(self.parts[0])
        order = order.to(index_device)
        for start in range(0, self.n, self.batch_size):
            batch = _index(self.parts, order[start : start + self.batch_size], self.single)
            batch = _move(batch, self.device)
            yield self.collate(batch) if self.collate is not None else batch

    def take(self, index: torch.Tensor) -> Any:
        """The minibatch of the given rows (tensor data), on the device and collated."""
        batch = _index(self.parts, index.to(_device_of(self.parts[0])), self.single)
        batch = _move(batch, self.device)
        return self.collate(batch) if self.collate is not None else batch


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
