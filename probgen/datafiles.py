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
    path: str | Path,
    *,
    sequences: bool = False,
    id_column: str = SEQUENCE_ID_COLUMN,
    shard: tuple[int, int] | None = None,
) -> Any:
    """Read a data file or folder, or only one process's shard of it.

    Args:
        path: a .csv or .npy file, or (for sequences) a folder of such files.
        sequences: read a list of sequences instead of one table.
        id_column: the CSV column that names each row's sequence.
        shard: ``(rank, world_size)``: read only that rank's contiguous block of the rows
            (tables) or of the sequences (in file order), as `probgen.distributed.shard_indices`
            splits them, without holding the rest in memory: a folder reads only its files, a
            .npy file is memory-mapped, a CSV is read in chunks. None reads everything.

    Returns:
        For tables: a DataFrame (CSV) or an array (.npy). For sequences: a list of arrays of
        shape (length, n_features), in order of first appearance (or of file name).

    Raises:
        DataError: the path is missing, of an unknown type, empty or malformed, or the shard
            would split the only sequence of a file.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
        >>> write_data(file, np.arange(10).reshape(5, 2))
        >>> read_data(file, shard=(1, 2)).tolist()  # rank 1 of 2 holds rows 3 and 4
        [[6, 7], [8, 9]]
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if shard is not None:
        shard = _check_shard(shard)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
        if not files:
            raise DataError(f"data folder {str(path)!r} holds no .csv or .npy files")
        return [_read_one_sequence(file) for file in _block(files, shard)]
    if path.suffix.lower() not in _SUFFIXES:
        raise DataError(f"data file {str(path)!r} must end in .csv or .npy")
    if path.suffix.lower() == ".npy":
        array = _load_npy(path, mmap=shard is not None)
        if array.ndim == 0:
            raise DataError(f"data file {str(path)!r} holds a single value, not an array")
        if sequences and array.ndim == 2:
            if shard is not None and shard[1] > 1:
                raise DataError(
                    f"data file {str(path)!r} holds one sequence, which cannot be split "
                    f"across {shard[1]} processes"
                )
            return [np.array(array)]
        if shard is not None:
            array = np.array(_block(array, shard))  # copies this rank's rows out of the map
        return list(array) if sequences and array.ndim >= 3 else array
    if shard is None:
        frame = _read_csv(path)
    elif not sequences or id_column not in _csv_columns(path):
        rows = _block(range(_count_csv_rows(path)), shard)
        frame = _read_csv(path, rows=rows)
    else:
        return _read_csv_sequences_shard(path, id_column, shard)
    if not sequences:
        return frame
    if id_column not in frame.columns:
        if shard is not None and shard[1] > 1:
            raise DataError(
                f"data file {str(path)!r} holds one sequence (no {id_column!r} column), which "
                f"cannot be split across {shard[1]} processes"
            )
        return [frame.to_numpy()]
    groups = frame.groupby(id_column, sort=False)
    return [group.drop(columns=id_column).to_numpy() for _, group in groups]


def _check_shard(shard: Any) -> tuple[int, int]:
    try:
        rank, world = (int(v) for v in shard)
    except (TypeError, ValueError) as error:
        raise DataError(f"shard must be (rank, world_size), got {shard!r}") from error
    if world < 1 or not 0 <= rank < world:
        raise DataError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got "
                        f"{shard!r}")
    return rank, world


def _block(items: Any, shard: tuple[int, int] | None) -> Any:
    """This rank's contiguous block (`numpy.array_split` sizes: the first ranks one more)."""
    if shard is None:
        return items
    rank, world = shard
    n = len(items)
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return items[start : start + base + (1 if rank < extra else 0)]


def _csv_columns(path: Path) -> list[str]:
    return list(pd.read_csv(path, nrows=0).columns)


def _count_csv_rows(path: Path) -> int:
    with open(path, "rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(lines - 1, 0)  # less the header


def _read_csv_sequences_shard(
    path: Path, id_column: str, shard: tuple[int, int]
) -> list[np.ndarray]:
    """This rank's sequences of a CSV with a sequence-id column, read in chunks."""
    ids = pd.read_csv(path, usecols=[id_column])[id_column]
    mine = list(_block(list(pd.unique(ids)), shard))
    wanted = set(mine)
    parts: dict[Any, list[pd.DataFrame]] = {key: [] for key in mine}
    for chunk in pd.read_csv(path, chunksize=1 << 16):
        kept = chunk[chunk[id_column].isin(wanted)]
        for key, group in kept.groupby(id_column, sort=False):
            parts[key].append(group)
    return [pd.concat(parts[key]).drop(columns=id_column).to_numpy() for key in mine]


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


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as error:
        raise DataError(f"data file {str(path)!r} is not a plain numeric .npy array") from error


def _read_csv(path: Path, rows: range | None = None) -> pd.DataFrame:
    try:
        if rows is None:
            frame = pd.read_csv(path)
        else:  # a block of rows: skip those before it, stop after it
            frame = pd.read_csv(path, skiprows=range(1, rows.start + 1), nrows=len(rows))
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"data file {str(path)!r} could not be read as CSV: {error}") from error
    if frame.empty:
        raise DataError(f"data file {str(path)!r} has no rows")
    return frame
