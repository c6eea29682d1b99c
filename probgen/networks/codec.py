"""Helpers shared by the discrete graphical models (`BayesianNetwork`, `MarkovNetwork`).

`StateCodec` maps variable names and state labels to integer codes (DataFrames, arrays and
evidence dicts in, long tensors of state indices out, and back). Both models speak the Gibbs
interface on long tensors of state indices (num_chains, n_variables) and enumerate small joint
spaces the same way.

Example:
    >>> from probgen.networks.codec import enumerate_assignments
    >>> enumerate_assignments([2, 3], max_size=16).tolist()
    [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen.core.errors import DataError


def enumerate_assignments(
    cardinalities: Sequence[int], max_size: int, device: torch.device | str | None = None
) -> Tensor:
    """Every joint assignment of variables with these state counts, (K, n_variables), long.

    The last variable varies fastest.

    Raises:
        DataError: the joint space has more than `max_size` states.
    """
    size = math.prod(cardinalities)
    if size > max_size:
        raise DataError(
            f"the joint space has {size} states, more than max_size={max_size}; "
            "enumerate_support is for small networks"
        )
    grids = [torch.arange(c) for c in cardinalities]
    support = torch.cartesian_prod(*grids) if len(grids) > 1 else grids[0][:, None]
    return support.reshape(-1, len(cardinalities)).to(device)


def check_chain_state(state: Any, n_variables: int) -> None:
    """Raise `DataError` unless `state` is a tensor (num_chains, n_variables)."""
    if not isinstance(state, Tensor) or state.dim() != 2 or state.shape[1] != n_variables:
        raise DataError(
            f"state must be a long tensor (num_chains, {n_variables}), got "
            f"{getattr(state, 'shape', type(state).__name__)}"
        )


def clamp_chains(state: Tensor, clamp: Tensor, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """A long copy of chain states on `device` with the evidence set, and the observed mask.

    `clamp` holds one state index per variable, -1 where the variable is unobserved.
    """
    state = state.to(device, torch.long).clone()
    observed = clamp >= 0
    state[:, observed] = clamp[observed]
    return state, observed


def draw_states(logits: Tensor, generator: torch.Generator) -> Tensor:
    """One inverse-CDF draw per row from unnormalised log-probabilities (rows, n_states).

    A row where every state is impossible (a chain stuck in a zero-probability state) draws
    uniformly, so the chain can leave it.
    """
    stuck = torch.isinf(logits).all(dim=1, keepdim=True)
    logits = torch.where(stuck, torch.zeros_like(logits), logits)
    cumulative = torch.softmax(logits, dim=1).cumsum(dim=1)
    uniform = torch.rand(
        logits.shape[0], 1, generator=generator, device=logits.device, dtype=cumulative.dtype
    )
    return (uniform >= cumulative).sum(dim=1).clamp_max(logits.shape[1] - 1)


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(isinstance(value, float) and math.isnan(value))
    except TypeError:
        return False


def state_key(value: Any) -> str:
    """State names are strings; numbers match their plain spelling (1.0 matches "1")."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    return str(value)


def pd_unique(values: np.ndarray) -> np.ndarray:
    """Unique values of a column (pandas' hash-based unique keeps object columns fast)."""
    import pandas as pd

    return pd.unique(pd.Series(values)).astype(object)


# the names these helpers had in the old `probgen.graphical.bayesnet` (its alias finds them here)
_is_missing = is_missing
_state_key = state_key


class StateCodec:
    """Variable names and state labels <-> integer state codes, for a discrete network.

    The codec keeps references to the model's `variables` list and `states` dict (not
    copies): a `BayesianNetwork` fills in states at `fit`, and the codec sees them.

    Args:
        variables: the variables in column order.
        states: variable -> state names (None while a variable's states are unknown).

    Example:
        >>> codec = StateCodec(["rain", "wet"], {"rain": ["no", "yes"], "wet": ["no", "yes"]})
        >>> import pandas as pd
        >>> codec.encode(pd.DataFrame({"wet": ["yes", None]})).tolist()
        [[-1, 1], [-1, -1]]
        >>> codec.decode(torch.tensor([[1, 0]])).values.tolist()
        [['yes', 'no']]
    """

    def __init__(self, variables: Sequence[str], states: Mapping[str, list[str] | None]) -> None:
        self.variables = variables
        self.states = states
        self.position = {v: i for i, v in enumerate(variables)}

    @property
    def cardinalities(self) -> list[int]:
        """Number of states of each variable (in `variables` order)."""
        return [len(self.states_of(v)) for v in self.variables]

    def states_of(self, variable: str) -> list[str]:
        """State names of `variable`.

        Raises:
            DataError: the variable's states are not known yet.
        """
        labels = self.states[variable]
        if labels is None:
            raise DataError(f"variable {variable!r} has no states yet; give states= or fit on data")
        return labels

    def index_of(self, variable: Any, argument: str) -> int:
        """Column of `variable`.

        Raises:
            DataError: not a variable of the network (`argument` names the argument).
        """
        if variable not in self.position:
            raise DataError(
                f"{argument}: unknown variable {variable!r}; the network has "
                f"{', '.join(self.variables[:10])}{'...' if len(self.variables) > 10 else ''}"
            )
        return self.position[variable]

    def encode(
        self,
        data: Any,
        name: str = "data",
        *,
        allow_missing: bool = True,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """State indices of `data` as a long tensor (n, n_variables), -1 where missing.

        Args:
            data: a DataFrame with (some of) the variables as columns, holding state names
                (NaN/None for missing; absent columns are missing), or an integer array or
                tensor (n, n_variables) of state indices (a float array may use NaN).
            name: the argument's name for error messages.
            allow_missing: whether missing entries are allowed.

        Raises:
            DataError: an unknown column, a state the variable does not have, a wrong shape.
        """
        if hasattr(data, "columns") and hasattr(data, "iloc"):
            return self._encode_frame(data, name, allow_missing, device)
        if isinstance(data, Tensor):
            tensor = data.detach()
        else:
            try:
                array = np.asarray(data)
                if array.dtype == object:
                    array = array.astype(np.float64)
                tensor = torch.from_numpy(np.ascontiguousarray(array))
            except (TypeError, ValueError) as error:
                raise DataError(f"{name} could not be read as an array of state indices") from error
        width = len(self.variables)
        if tensor.dim() < 1 or tensor.shape[-1] != width:
            raise DataError(
                f"{name} has shape {tuple(tensor.shape)}; its last dimension must be {width} "
                "(one column per variable)"
            )
        if tensor.numel() == 0:
            raise DataError(f"{name} is empty")
        tensor = tensor.reshape(-1, width)
        if tensor.is_floating_point():
            missing = torch.isnan(tensor)
            filled = torch.where(missing, torch.zeros_like(tensor), tensor)
            if not torch.equal(filled, filled.round()):
                raise DataError(f"{name} must hold whole numbers (state indices)")
            codes = torch.where(missing, torch.full_like(filled, -1), filled).long()
        elif tensor.dtype == torch.bool or tensor.dtype.is_complex:
            raise DataError(f"{name} must hold integer state indices, got {tensor.dtype}")
        else:
            codes = tensor.long()
            missing = torch.zeros_like(codes, dtype=torch.bool)
        cards = torch.tensor(self.cardinalities)
        bad = (~missing) & ((codes < 0) | (codes >= cards))
        if bad.any():
            row, column = (int(i) for i in bad.nonzero()[0])
            variable = self.variables[column]
            raise DataError(
                f"{name}[{row}] has state index {int(codes[row, column])} for variable "
                f"{variable!r}, which has {int(cards[column])} states"
            )
        if not allow_missing and missing.any():
            column = int(missing.nonzero()[0, 1])
            raise DataError(f"{name} has missing values for variable {self.variables[column]!r}")
        return codes.to(device)

    def _encode_frame(
        self, frame: Any, name: str, allow_missing: bool, device: torch.device | str | None
    ) -> Tensor:
        if frame.columns.duplicated().any():
            repeated = frame.columns[frame.columns.duplicated()][0]
            raise DataError(f"{name} has column {repeated!r} more than once")
        for column in frame.columns:
            if column not in self.position:
                raise DataError(f"{name} has column {column!r}, which is not a network variable")
        if len(frame) == 0:
            raise DataError(f"{name} is empty")
        import pandas as pd

        codes = self._encode_string_frame(frame)
        if codes is not None:
            if not allow_missing and (codes < 0).any():
                column = int(np.argwhere(codes < 0)[0, 1])
                raise DataError(
                    f"{name} has missing values for variable {self.variables[column]!r}"
                )
            return torch.from_numpy(codes).to(device)
        codes = np.full((len(frame), len(self.variables)), -1, dtype=np.int64)
        for column in frame.columns:
            labels = self.states_of(column)
            lookup = {label: i for i, label in enumerate(labels)}
            positions, uniques = pd.factorize(frame[column], use_na_sentinel=True)
            unique_codes = np.empty(len(uniques) + 1, dtype=np.int64)
            unique_codes[-1] = -1  # factorize marks missing values with -1
            for position, unique in enumerate(uniques):
                if is_missing(unique):
                    unique_codes[position] = -1
                    continue
                key = state_key(unique)
                if key not in lookup:
                    raise DataError(
                        f"{name} column {column!r} has state {unique!r}, which variable "
                        f"{column!r} does not have (states: {labels})"
                    )
                unique_codes[position] = lookup[key]
            codes[:, self.position[column]] = unique_codes[positions]
        if not allow_missing and (codes < 0).any():
            column = int(np.argwhere(codes < 0)[0, 1])
            raise DataError(f"{name} has missing values for variable {self.variables[column]!r}")
        return torch.from_numpy(codes).to(device)

    def _encode_string_frame(self, frame: Any) -> np.ndarray | None:
        """State indices of a frame that holds only state-name strings and missing values,
        in one pass over the whole frame (or None: another kind of frame, or a value that is
        not a state, which the column-by-column path in `_encode_frame` reports).

        Batched queries pass wide frames with a few observed cells per row; per-column
        factorisation cost tens of microseconds per column, more than the inference itself."""
        import pandas as pd

        columns = list(frame.columns)
        if len(set(columns)) != len(columns):
            return None
        factorized = _factorize_arrow_strings(frame)
        if factorized is None:
            values = frame.to_numpy(dtype=object).T  # (columns, rows): one column together
            present = ~pd.isna(values)
            column_index, row_index = np.nonzero(present)
            positions, uniques = pd.factorize(values[present])
            uniques = list(uniques)
        else:
            flat_codes, uniques = factorized
            flat_index = np.flatnonzero(flat_codes >= 0)
            column_index, row_index = np.divmod(flat_index, len(frame))
            positions = flat_codes[flat_index]
        codes = np.full((len(frame), len(self.variables)), -1, dtype=np.int64)
        if len(column_index) == 0:
            return codes
        # only strings: a number or bool could equal a value of another type in another
        # column (1 == 1.0 == True) and share its factorised code; those take the slow path
        if not all(isinstance(unique, str) for unique in uniques):
            return None
        pairs, inverse = np.unique(column_index * len(uniques) + positions, return_inverse=True)
        pair_codes = np.empty(len(pairs), dtype=np.int64)
        lookups: dict[int, dict[str, int]] = {}
        for k, pair in enumerate(pairs.tolist()):
            column, unique = divmod(pair, len(uniques))
            if column not in lookups:
                labels = self.states_of(columns[column])
                lookups[column] = {label: i for i, label in enumerate(labels)}
            code = lookups[column].get(uniques[unique])
            if code is None:
                return None
            pair_codes[k] = code
        targets = np.asarray([self.position[c] for c in columns], dtype=np.int64)
        codes[row_index, targets[column_index]] = pair_codes[inverse.reshape(-1)]
        return codes

    def decode(self, codes: Tensor) -> Any:
        """A DataFrame of state names from a tensor of state indices (n, n_variables)."""
        import pandas as pd

        codes = codes.detach().cpu().numpy()
        columns = {}
        for index, variable in enumerate(self.variables):
            labels = np.asarray(self.states_of(variable) + [None], dtype=object)
            columns[variable] = labels[codes[:, index]]
        return pd.DataFrame(columns)

    def encode_evidence(
        self, evidence: Any, name: str = "evidence", device: torch.device | str | None = None
    ) -> tuple[Tensor, bool]:
        """Evidence as (codes (batch, n_variables) with -1 = unobserved, batched?)."""
        if evidence is None:
            return torch.full((1, len(self.variables)), -1, dtype=torch.long, device=device), False
        if isinstance(evidence, Mapping):
            codes = torch.full((1, len(self.variables)), -1, dtype=torch.long)
            for variable, state in evidence.items():
                index = self.index_of(variable, name)
                codes[0, index] = self.state_index(variable, state, name)
            return codes.to(device), False
        if hasattr(evidence, "columns"):
            return self._encode_frame(evidence, name, True, device), True
        raise DataError(
            f"{name} must be a dict {{variable: state}} or a DataFrame (one query per "
            f"row), got {type(evidence).__name__}"
        )

    def state_index(self, variable: str, state: Any, name: str) -> int:
        labels = self.states_of(variable)
        key = state_key(state)
        if key in labels:
            return labels.index(key)
        if (
            isinstance(state, (int, np.integer))
            and not isinstance(state, bool)
            and 0 <= int(state) < len(labels)
        ):
            return int(state)
        raise DataError(f"{name}: variable {variable!r} has no state {state!r} (states: {labels})")


class _Unset:
    """The default of a deprecated `fit` keyword: "not given, use the constructor's setting"."""

    def __repr__(self) -> str:
        return "<from the constructor>"


UNSET: Any = _Unset()


def fit_settings(model: Any, **given: Any) -> dict[str, Any]:
    """The settings a `fit` call uses: the model's own (constructor) settings, overridden by
    any passed to `fit` under the deprecated keywords (each warns `DeprecationWarning`).

    The override holds for that call only; the model's settings (and `get_config`) keep the
    constructor's values.

    Example:
        >>> import warnings
        >>> class Toy:
        ...     max_iter = 100
        >>> fit_settings(Toy(), max_iter=UNSET)
        {'max_iter': 100}
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     settings = fit_settings(Toy(), max_iter=5)
        >>> settings, caught[0].category.__name__
        ({'max_iter': 5}, 'DeprecationWarning')
    """
    settings: dict[str, Any] = {}
    for name, value in given.items():
        if value is UNSET:
            settings[name] = getattr(model, name)
            continue
        cls = type(model).__name__
        warnings.warn(
            f"{cls}.fit({name}=...) is deprecated and will be removed in the next release; "
            f"pass {name}= to the constructor, {cls}({name}=...)",
            DeprecationWarning,
            stacklevel=3,
        )
        settings[name] = value
    return settings


def _factorize_arrow_strings(frame: Any) -> tuple[np.ndarray, list[Any]] | None:
    """Codes of every cell of a frame whose columns are all pyarrow-backed strings (pandas'
    default string dtype since 3.0), column after column, with -1 for a missing cell, and the
    distinct strings; None for any other frame.

    One dictionary encoding of all columns joined costs ~0.3 ms for 75 x 300 cells, where
    converting the frame to an object array costs ~3.5 ms, a quarter of a batched query."""
    import pandas as pd

    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:  # pragma: no cover - pandas' string dtype needs pyarrow
        return None
    columns = getattr(frame, "_iter_column_arrays", None)
    arrays = list(columns()) if columns is not None else [c.array for _, c in frame.items()]
    chunks = []
    for array in arrays:
        dtype = array.dtype
        if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
            # a column with no evidence at all is float NaN, not a string column
            if dtype.kind != "f" or not bool(pd.isna(array).all()):
                return None
            chunks.append(pa.nulls(len(array), pa.large_string()))
            continue
        data = array.__arrow_array__()
        chunks.extend(data.chunks if isinstance(data, pa.ChunkedArray) else [data])
    if not chunks:
        return None
    encoded = pc.dictionary_encode(pa.concat_arrays([c.cast(pa.large_string()) for c in chunks]))
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()
