"""Input checking and conversion shared by every model.

`Sequences` holds a batch of sequences of different lengths as one padded tensor plus their
lengths. `as_tensor`, `as_sequences` and `check_*` convert user input (numpy arrays, lists,
tensors, DataFrames) and fail with a `DataError` that names the argument.

Example:
    >>> import numpy as np
    >>> from probgen.core.data import as_sequences
    >>> batch = as_sequences([np.zeros((3, 2)), np.ones((5, 2))], event_shape=(2,))
    >>> batch.values.shape, batch.lengths.tolist()
    (torch.Size([2, 5, 2]), [3, 5])
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probgen.core.errors import DataError


@dataclass(frozen=True)
class Sequences:
    """A batch of sequences: `values` padded to the longest, `lengths` of each.

    Attributes:
        values: tensor of shape (n_sequences, max_length, *event_shape); padding is zero.
        lengths: long tensor of shape (n_sequences,), each in 1..max_length.
    """

    values: torch.Tensor
    lengths: torch.Tensor

    def __post_init__(self) -> None:
        if self.values.dim() < 2:
            raise DataError(
                f"Sequences.values must have shape (n_sequences, max_length, ...), "
                f"got {tuple(self.values.shape)}"
            )
        if self.lengths.dim() != 1 or self.lengths.shape[0] != self.values.shape[0]:
            raise DataError(
                f"Sequences.lengths must have shape ({self.values.shape[0]},), "
                f"got {tuple(self.lengths.shape)}"
            )

    @property
    def n_sequences(self) -> int:
        return int(self.values.shape[0])

    @property
    def max_length(self) -> int:
        return int(self.values.shape[1])

    @property
    def mask(self) -> torch.Tensor:
        """Bool tensor (n_sequences, max_length): True on real steps, False on padding."""
        steps = torch.arange(self.max_length, device=self.lengths.device)
        return steps[None, :] < self.lengths[:, None]

    def __len__(self) -> int:
        return self.n_sequences

    def to(self, *args: Any, **kwargs: Any) -> Sequences:
        """Move `values` (dtype and device) and `lengths` (device only)."""
        values = self.values.to(*args, **kwargs)
        return Sequences(values, self.lengths.to(values.device))

    def unpad(self) -> list[torch.Tensor]:
        """The sequences as a list of tensors of their own lengths."""
        return [self.values[i, : int(n)] for i, n in enumerate(self.lengths.tolist())]

    def __getitem__(self, index: Any) -> Sequences:
        if isinstance(index, int):
            index = slice(index, index + 1)
        lengths = self.lengths[index]
        longest = int(lengths.max()) if lengths.numel() else 0
        return Sequences(self.values[index][:, :longest], lengths)


def to_numpy(data: Any) -> np.ndarray:
    """Convert a tensor, DataFrame, list or array to a numpy array (no checks)."""
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    if hasattr(data, "to_numpy"):
        return data.to_numpy()
    return np.asarray(data)


def as_tensor(
    data: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    event_shape: tuple[int, ...] | torch.Size | None = None,
    allow_nan: bool = False,
    integer: bool = False,
    min_value: float | None = None,
    max_value: float | None = None,
) -> torch.Tensor:
    """Check `data` and return it as a tensor of shape (*batch, *event_shape).

    Args:
        data: array-like input.
        name: the argument's name, used in error messages.
        dtype: target dtype (float data stays float, integer checks apply before casting).
        device: target device.
        event_shape: required trailing shape.
        allow_nan: whether NaN entries are allowed (infinite values never are).
        integer: whether values must be whole numbers.
        min_value: smallest allowed value (inclusive).
        max_value: largest allowed value (inclusive).

    Raises:
        DataError: empty input, wrong trailing shape, NaN/inf, non-integer or out-of-range values.
    """
    if data is None:
        raise DataError(f"{name} is None; expected an array")
    if isinstance(data, torch.Tensor):
        tensor = data.detach()
    else:
        try:
            array = to_numpy(data)
        except Exception as error:
            raise DataError(f"{name} could not be read as an array: {error}") from error
        if array.dtype == object:
            try:
                array = array.astype(np.float64)
            except (TypeError, ValueError) as error:
                raise DataError(
                    f"{name} has entries that are not numbers (or rows of different lengths)"
                ) from error
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise DataError(f"{name} must hold numbers, got dtype {array.dtype}")
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:
            # torch cannot share read-only memory (a memory-mapped file, a pandas view).
            array = array.copy()
        tensor = torch.from_numpy(array)
    if tensor.is_complex():
        raise DataError(f"{name} must be real, got complex values")
    if tensor.numel() == 0:
        raise DataError(f"{name} is empty")
    if event_shape is not None:
        event_shape = tuple(event_shape)
        ndim = len(event_shape)
        if tensor.dim() < ndim or (ndim and tuple(tensor.shape[-ndim:]) != event_shape):
            raise DataError(
                f"{name} has shape {tuple(tensor.shape)}; its last dimensions must be "
                f"{event_shape} (the model's event shape)"
            )
    if tensor.is_floating_point():
        if torch.isinf(tensor).any():
            raise DataError(f"{name} contains infinite values")
        if not allow_nan and torch.isnan(tensor).any():
            raise DataError(f"{name} contains NaN values")
    needs_values = integer or min_value is not None or max_value is not None
    if not needs_values:
        return _cast(tensor, name, dtype, device)
    finite = tensor[~torch.isnan(tensor)] if tensor.is_floating_point() else tensor
    if integer and tensor.is_floating_point() and finite.numel():
        if not torch.equal(finite, finite.round()):
            raise DataError(f"{name} must hold whole numbers (integer codes)")
    if finite.numel():
        if min_value is not None and finite.min() < min_value:
            raise DataError(
                f"{name} has value {finite.min().item():g} below the smallest allowed {min_value:g}"
            )
        if max_value is not None and finite.max() > max_value:
            raise DataError(
                f"{name} has value {finite.max().item():g} above the largest allowed {max_value:g}"
            )
    return _cast(tensor, name, dtype, device)


def _cast(
    tensor: torch.Tensor, name: str, dtype: torch.dtype | None, device: torch.device | str | None
) -> torch.Tensor:
    if dtype is None and device is None:
        return tensor
    cast = tensor.to(device=device, dtype=dtype)
    if cast.is_floating_point() and tensor.is_floating_point() and cast.dtype != tensor.dtype:
        # float64 values beyond float32's range become infinite when cast down.
        if bool(torch.isinf(cast).any()):
            raise DataError(f"{name} has values too large for {cast.dtype}")
    return cast


def as_sequences(
    data: Any,
    name: str = "sequences",
    *,
    event_shape: tuple[int, ...] | torch.Size = (),
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    lengths: Any = None,
    allow_nan: bool = False,
    integer: bool = False,
    min_value: float | None = None,
    max_value: float | None = None,
) -> Sequences:
    """Convert sequence input to `Sequences`, checking every sequence.

    Accepted forms: a `Sequences`; a list of arrays of shape (length, *event_shape) (different
    lengths allowed); or one array of shape (n_sequences, length, *event_shape) with optional
    `lengths`. A single sequence of shape (length, *event_shape) must be wrapped in a list.

    Raises:
        DataError: naming `name[i]` for the offending sequence.
    """
    checks: dict[str, Any] = dict(
        event_shape=event_shape,
        allow_nan=allow_nan,
        integer=integer,
        min_value=min_value,
        max_value=max_value,
    )
    event_shape = tuple(event_shape)
    if isinstance(data, Sequences):
        values = as_tensor(data.values, f"{name}.values", **checks)
        result_lengths = data.lengths
        _check_lengths(result_lengths, values.shape[1], name)
        return Sequences(values.to(device=device, dtype=dtype), result_lengths.to(device or "cpu"))
    if isinstance(data, (list, tuple)) and not _looks_numeric_scalar_list(data):
        if len(data) == 0:
            raise DataError(f"{name} is empty; give at least one sequence")
        parts = []
        for index, item in enumerate(data):
            item_name = f"{name}[{index}]"
            if (
                hasattr(item, "__len__")
                and not isinstance(item, str)
                and getattr(item, "ndim", 1) != 0  # a 0-d array or tensor has no len()
                and len(item) == 0
            ):
                raise DataError(f"{item_name} has length 0; sequences need at least one step")
            tensor = as_tensor(item, item_name, **{**checks, "event_shape": None})
            if tensor.dim() == len(event_shape):
                raise DataError(
                    f"{item_name} has shape {tuple(tensor.shape)}; a sequence needs shape "
                    f"(length, {', '.join(map(str, event_shape))})".replace(", )", ")")
                )
            if tuple(tensor.shape[1:]) != event_shape:
                expected = event_shape[0] if len(event_shape) == 1 else event_shape
                got = (
                    tensor.shape[1]
                    if tensor.dim() == 2 and len(event_shape) == 1
                    else tuple(tensor.shape[1:])
                )
                raise DataError(
                    f"{item_name} has {got} features, the model has {expected}"
                    if len(event_shape) == 1 and tensor.dim() == 2
                    else f"{item_name} has shape {tuple(tensor.shape)}; expected "
                    f"(length, *{event_shape})"
                )
            parts.append(tensor)
        sequence_lengths = torch.tensor([p.shape[0] for p in parts], dtype=torch.long)
        if (sequence_lengths == 0).any():
            index = int((sequence_lengths == 0).nonzero()[0])
            raise DataError(f"{name}[{index}] has length 0; sequences need at least one step")
        common = torch.result_type(parts[0], parts[0])
        for part in parts[1:]:
            common = torch.promote_types(common, part.dtype)
        padded = torch.zeros((len(parts), int(sequence_lengths.max()), *event_shape), dtype=common)
        for index, part in enumerate(parts):
            padded[index, : part.shape[0]] = part.to(common)
        return Sequences(
            padded.to(device=device, dtype=dtype), sequence_lengths.to(device or "cpu")
        )
    tensor = as_tensor(data, name, **checks)
    if tensor.dim() != 2 + len(event_shape):
        raise DataError(
            f"{name} has shape {tuple(tensor.shape)}; expected (n_sequences, length"
            + "".join(f", {d}" for d in event_shape)
            + ") or a list of arrays of shape (length"
            + "".join(f", {d}" for d in event_shape)
            + ")"
        )
    if lengths is None:
        result_lengths = torch.full((tensor.shape[0],), tensor.shape[1], dtype=torch.long)
    else:
        result_lengths = as_tensor(lengths, "lengths", integer=True, min_value=1).long().reshape(-1)
        _check_lengths(result_lengths, tensor.shape[1], name)
        if result_lengths.shape[0] != tensor.shape[0]:
            raise DataError(
                f"lengths has {result_lengths.shape[0]} entries for {tensor.shape[0]} sequences"
            )
    if tensor.shape[1] == 0:
        raise DataError(f"{name} has length 0; sequences need at least one step")
    return Sequences(tensor.to(device=device, dtype=dtype), result_lengths.to(device or "cpu"))


def _check_lengths(lengths: torch.Tensor, max_length: int, name: str) -> None:
    if lengths.numel() and (lengths.min() < 1 or lengths.max() > max_length):
        raise DataError(f"{name}: lengths must lie in 1..{max_length}, got {lengths.tolist()}")


def _looks_numeric_scalar_list(data: SequenceABC) -> bool:
    """A flat list of numbers is one array, not a list of sequences."""
    return len(data) > 0 and all(isinstance(v, (int, float, np.number)) for v in data)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return `value` as an int, raising `DataError` unless it is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(value: Any, name: str, choices: SequenceABC[str]) -> str:
    """Return `value` if it is one of `choices`, else raise `DataError` listing them."""
    if value not in choices:
        raise DataError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
