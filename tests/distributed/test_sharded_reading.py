"""Each process reads only its shard of a data file or folder (`read_data(..., shard=)`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probgen import distributed
from probgen.datafiles import read_data, write_data
from probgen.errors import DataError

WORLDS = [1, 2, 3, 4]


def _join(parts):
    return [item for part in parts for item in part]


@pytest.mark.parametrize("world", WORLDS)
def test_npy_table_shards_are_the_shard_indices_blocks(tmp_path, world):
    array = np.arange(22.0).reshape(11, 2)
    write_data(tmp_path / "x.npy", array)
    for rank in range(world):
        rows = distributed.shard_indices(11, rank, world)
        np.testing.assert_array_equal(
            read_data(tmp_path / "x.npy", shard=(rank, world)), array[rows.start : rows.stop]
        )


@pytest.mark.parametrize("world", WORLDS)
def test_csv_table_shards_concatenate_to_the_table(tmp_path, world):
    frame = pd.DataFrame({"a": np.arange(13), "b": np.arange(13) * 0.5, "c": list("xyz" * 4 + "x")})
    frame.to_csv(tmp_path / "t.csv", index=False)
    parts = [read_data(tmp_path / "t.csv", shard=(rank, world)) for rank in range(world)]
    assert [len(p) for p in parts] == [
        len(distributed.shard_indices(13, r, world)) for r in range(world)
    ]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), frame)


@pytest.mark.parametrize("world", WORLDS)
def test_sequence_files_folders_and_arrays_shard_by_sequence(tmp_path, world):
    rng = np.random.default_rng(0)
    sequences = [rng.normal(size=(int(n), 2)) for n in rng.integers(2, 6, size=7)]
    rows = [np.column_stack([np.full(len(s), 10 - i), s]) for i, s in enumerate(sequences)]
    # ids in an order that is not sorted, and one sequence split over two places in the file
    table = np.concatenate(rows[:3] + rows[3:][::-1])
    frame = pd.DataFrame(table, columns=["sequence_id", "x0", "x1"])
    frame.to_csv(tmp_path / "s.csv", index=False)
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, s in enumerate(sequences):
        np.save(folder / f"seq{i:02d}.npy", s)
    stacked = np.stack([rng.normal(size=(4, 3)) for _ in range(7)])
    np.save(tmp_path / "stacked.npy", stacked)
    for source in (tmp_path / "s.csv", folder, tmp_path / "stacked.npy"):
        whole = read_data(source, sequences=True)
        parts = [read_data(source, sequences=True, shard=(r, world)) for r in range(world)]
        assert [len(p) for p in parts] == [
            len(distributed.shard_indices(7, r, world)) for r in range(world)
        ]
        for ours, theirs in zip(_join(parts), whole, strict=True):
            np.testing.assert_allclose(ours, theirs)


def test_one_sequence_is_not_split_and_bad_shards_are_refused(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((5, 2)))
    with pytest.raises(DataError, match="one sequence"):
        read_data(tmp_path / "one.npy", sequences=True, shard=(0, 2))
    assert len(read_data(tmp_path / "one.npy", sequences=True, shard=(0, 1))) == 1
    for shard in [(2, 2), (-1, 2), (0, 0), "ab"]:
        with pytest.raises(DataError, match="shard"):
            read_data(tmp_path / "one.npy", shard=shard)
