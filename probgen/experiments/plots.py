"""Plots of an experiment's results (PNG files through matplotlib's Agg-capable backends).

Example:
    >>> import tempfile, pathlib, pandas as pd
    >>> table = pd.DataFrame({"ess_per_s": [10.0, 100.0]}, index=["nuts", "mh"])
    >>> path = plot_comparison(table, pathlib.Path(tempfile.mkdtemp()) / "comparison.png")
    >>> path.exists()
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_samples(samples: Any, folder: str | Path) -> list[Path]:
    """Trace and posterior plots of one method's `Samples` in `folder`."""
    return samples.plot(folder)


def plot_comparison(table: Any, path: str | Path) -> Path:
    """Bar chart of ESS per second by method (log scale)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 0.6 + 0.5 * len(table)))
    axis = figure.add_subplot()
    axis.barh(list(map(str, table.index)), table["ess_per_s"].to_numpy())
    axis.set_xscale("log")
    axis.set_xlabel("min bulk ESS per second")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=80)
    return path
