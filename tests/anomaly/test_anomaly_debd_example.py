"""examples/anomaly_debd.py: its contamination protocols, and a --smoke run that beats chance."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "anomaly_debd.py"


@pytest.fixture(scope="module")
def example():
    return runpy.run_path(str(EXAMPLE))  # the module's functions, main() not run


def _table(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows, dtype=np.uint8)


def test_shuffled_anomalies_keep_marginals_and_break_dependence(example):
    rng = np.random.default_rng(0)
    bit = rng.integers(0, 2, 2000)
    test = _table(np.stack([bit, bit, 1 - bit, rng.integers(0, 2, 2000)], 1))  # x1 = x0
    rows, truth = example["contaminated"](test, 1000, 0.2, "shuffled", seed=0)
    assert rows.shape == (1000, 4) and truth.sum() == 200 and not truth[:800].any()
    inliers, anomalies = rows[~truth], rows[truth]
    assert (inliers[:, 0] == inliers[:, 1]).all()  # inliers are untouched test rows
    # Shuffled columns: the copy x1 = x0 holds only by chance (about half the rows).
    assert 0.3 < (anomalies[:, 0] == anomalies[:, 1]).mean() < 0.7
    # ...while each column's frequency stays that of test rows.
    np.testing.assert_allclose(anomalies.mean(0), test.mean(0), atol=0.1)


def test_flipped_anomalies_differ_from_real_rows_by_one_block(example):
    test = _table(np.zeros((400, 40)))
    rows, truth = example["contaminated"](test, 200, 0.1, "flipped", seed=1)
    anomalies = rows[truth]
    assert len(anomalies) == 20 and not rows[~truth].any()
    for row in anomalies:
        ones = np.flatnonzero(row)
        assert len(ones) == 4 and (np.diff(ones) == 1).all()  # 10% of 40 bits, contiguous
    with pytest.raises(ValueError, match="protocol"):
        example["contaminated"](test, 200, 0.1, "mirrored", seed=0)


def test_smoke_run_beats_chance_and_plots(tmp_path, monkeypatch, capsys):
    from probgen.recipes._shared_data import SharedDataMissing, debd

    try:
        debd("nltcs", "test")
    except SharedDataMissing as error:
        pytest.skip(str(error))
    png = tmp_path / "scores.png"
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--smoke", "--plot", str(png)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    output = capsys.readouterr().out
    rows = [line.split() for line in output.splitlines() if line.startswith("nltcs ")]
    assert [row[1] for row in rows] == ["shuffled", "flipped"]
    aucs = np.array([[float(value) for value in row[2:]] for row in rows])
    assert aucs.shape == (2, 4)  # MADE, RBM, Gaussian mixture, autoencoder
    assert (aucs > 0.5).all(), output
    assert aucs.max() > 0.75, output
    assert png.stat().st_size > 1000
