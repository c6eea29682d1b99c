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
    """Bar chart of ESS per second by method (log scale), written to `path`.

    Methods whose ``converged`` column is False are drawn as hatched grey bars labelled
    "NOT CONVERGED", so they never look like the winner.
    """
    path = Path(path)
    comparison_figure(table).savefig(path, dpi=80)
    return path


def comparison_figure(table: Any) -> Any:
    """The matplotlib `Figure` of `plot_comparison`."""
    from matplotlib.figure import Figure

    labels = list(map(str, table.index))
    values = table["ess_per_s"].to_numpy(dtype=float)
    converged = (
        table["converged"].to_numpy(dtype=bool)
        if "converged" in table
        else [True] * len(labels)
    )
    figure = Figure(figsize=(5.5, 0.6 + 0.5 * len(table)))
    axis = figure.add_subplot()
    bars = axis.barh(labels, values)
    for bar, ok, value in zip(bars, converged, values, strict=True):
        if ok:
            continue
        bar.set_facecolor("lightgrey")
        bar.set_edgecolor("dimgrey")
        bar.set_hatch("//")
        bar.set_label("NOT CONVERGED")
        axis.annotate(
            " NOT CONVERGED",
            (value, bar.get_y() + bar.get_height() / 2),
            va="center",
            fontsize=8,
            color="firebrick",
        )
    axis.set_xscale("log")
    axis.set_xlabel("min bulk ESS per second")
    figure.tight_layout()
    return figure
