"""Reading and writing data files for the command line: CSV and .npy, single or sequences.

Sequences come as one file with a sequence-id column (``sequence_id`` by default) or as a folder
with one file per sequence. Plain tables come as one CSV (read as a DataFrame, so named
discrete columns keep their names) or one .npy array.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from probgen.datafiles import read_data, write_data
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_data(folder / "x.npy", np.zeros((3, 2)))
    >>> read_data(folder / "x.npy").shape
    (3, 2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from probgen.core.data import Sequences
from probgen.core.errors import DataError

SEQUENCE_ID_COLUMN = "sequence_id"
_SUFFIXES = (".csv", ".npy")


def read_data(
    path: str | Path, *, sequences: bool = False, id_column: str = SEQUENCE_ID_COLUMN
) -> Any:
    """Read a data file or folder.

    Args:
        path: a .csv or .npy file, or (for sequences) a folder of such files.
        sequences: read a list of sequences instead of one table.
        id_column: the CSV column that names each row's sequence.

    Returns:
        For tables: a DataFrame (CSV) or an array (.npy). For sequences: a list of arrays of
        shape (length, n_features), in order of first appearance (or of file name).

    Raises:
        DataError: the path is missing, of an unknown type, empty or malformed.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
        if not files:
            raise DataError(f"data folder {str(path)!r} holds no .csv or .npy files")
        return [_read_one_sequence(file) for file in files]
    if path.suffix.lower() not in _SUFFIXES:
        raise DataError(f"data file {str(path)!r} must end in .csv or .npy")
    if path.suffix.lower() == ".npy":
        array = _load_npy(path)
        if array.ndim == 0:
            raise DataError(f"data file {str(path)!r} holds a single value, not an array")
        if sequences and array.ndim >= 2:
            return list(array) if array.ndim >= 3 else [array]
        return array
    frame = _read_csv(path)
    if not sequences:
        return frame
    if id_column not in frame.columns:
        return [frame.to_numpy()]
    groups = frame.groupby(id_column, sort=False)
    return [group.drop(columns=id_column).to_numpy() for _, group in groups]


def write_data(path: str | Path, data: Any, *, sequences: bool = False) -> None:
    """Write samples to .npy (any array) or .csv (tables; sequences get a sequence-id column).

    Args:
        path: a .csv or .npy file.
        data: an array, tensor, DataFrame or `Sequences`.
        sequences: the first two axes are (sequence, step), also when there is no feature axis.

    Raises:
        DataError: the suffix is neither .csv nor .npy, or the folder does not exist.
    """
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise DataError(f"--out {str(path)!r} must end in .csv or .npy")
    if not path.parent.exists():
        raise DataError(f"--out folder {str(path.parent)!r} does not exist")
    if isinstance(data, pd.DataFrame):
        if path.suffix.lower() == ".npy":
            np.save(path, data.to_numpy())
        else:
            data.to_csv(path, index=False)
        return
    if isinstance(data, Sequences):
        data = data.values
    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if path.suffix.lower() == ".npy":
        np.save(path, array)
        return
    if sequences and array.ndim == 2:
        array = array[..., None]
    if array.ndim <= 2:
        pd.DataFrame(array.reshape(array.shape[0], -1)).to_csv(path, index=False)
        return
    n_sequences, length = array.shape[:2]
    values = array.reshape(n_sequences * length, -1)
    frame = pd.DataFrame(values, columns=[f"x{i}" for i in range(values.shape[1])])
    frame.insert(0, SEQUENCE_ID_COLUMN, np.repeat(np.arange(n_sequences), length))
    frame.to_csv(path, index=False)


def _read_one_sequence(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return _load_npy(path)
    frame = _read_csv(path)
    return frame.drop(columns=SEQUENCE_ID_COLUMN, errors="ignore").to_numpy()


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        raise DataError(f"data file {str(path)!r} is not a plain numeric .npy array") from error


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"data file {str(path)!r} could not be read as CSV: {error}") from error
    if frame.empty:
        raise DataError(f"data file {str(path)!r} has no rows")
    return frame
