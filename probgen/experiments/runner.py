"""Run a Bayesian inference experiment from a config and write its results folder.

The folder holds: ``config.toml`` (a copy, when run from a file) and ``config.json`` (the checked
config), one folder per method with ``samples.safetensors`` (written as the run goes, so an
interrupted run leaves its draws readable), ``summary.csv``, ``trace.png`` and
``posterior.png``; ``comparison.csv`` / ``comparison.md`` (time, min bulk ESS, ESS per second,
max R-hat, divergences, convergence verdict per method), ``comparison.png``, and ``README.md``
saying what ran. Same config and seed, same numbers.

A method whose max R-hat exceeds `MAX_R_HAT` (1.01) or whose minimum bulk ESS is below
`MIN_ESS_BULK` (400) has not converged: its ESS per second means nothing, so it is flagged in the
table ("NOT CONVERGED"), the README, the plot (a hatched grey bar) and by a
`ConvergenceWarning`, and it is never named the fastest method.

Example:
    >>> import tempfile
    >>> config = {
    ...     "model": {"recipe": "eight_schools"},
    ...     "chains": 8, "draws": 200, "warmup": 200,
    ...     "methods": {"mh": {}},
    ... }
    >>> folder = run(config, out_dir=tempfile.mkdtemp(), progress=False)  # doctest: +SKIP
    >>> (folder / "comparison.csv").exists()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probgen.core import distributed
from probgen.core.distributed import single_process
from probgen.core.errors import ConvergenceWarning, DataError
from probgen.experiments.config import ExperimentConfig, load_toml, parse_config

COMPARISON_COLUMNS = (
    "method",
    "chains",
    "draws",
    "time_s",
    "min_ess_bulk",
    "ess_per_s",
    "max_r_hat",
    "divergences",
    "converged",
)
"""Columns of ``comparison.csv`` and ``comparison.md``, one row per method label."""

MAX_R_HAT = 1.01
"""Largest max R-hat (rank-normalised split R-hat) of a converged method."""
MIN_ESS_BULK = 400
"""Smallest minimum bulk ESS of a converged method."""


def run_file(path: str | Path, out_dir: str | Path | None = None, *, progress: bool = True) -> Path:
    """Run the experiment in the TOML file `path`; results go to `out_dir`.

    Default folder: ``results/NAME`` in the current directory (relative paths inside the
    config are read relative to the config file). Returns the folder.
    """
    path = Path(path)
    raw = load_toml(path)
    config = parse_config(raw, base_dir=path.parent)
    folder = Path(out_dir) if out_dir is not None else default_out_dir(config.name)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, folder / "config.toml")
    return _run(config, folder, progress)


def run(
    config: dict[str, Any],
    out_dir: str | Path | None = None,
    *,
    base_dir: str | Path = ".",
    progress: bool = True,
) -> Path:
    """Run the experiment described by the dict `config` (same keys as the TOML file).

    Default folder: ``results/NAME`` in the current directory.
    """
    checked = parse_config(config, base_dir=base_dir)
    folder = Path(out_dir) if out_dir is not None else default_out_dir(checked.name)
    folder.mkdir(parents=True, exist_ok=True)
    return _run(checked, folder, progress)


def default_out_dir(name: str) -> Path:
    """``results/NAME`` under the current directory, where a command-line tool writes."""
    return Path.cwd() / "results" / name


def convergence_problems(max_r_hat: float, min_ess_bulk: float) -> list[str]:
    """Why a method with these diagnostics has not converged (empty when it has).

    Example:
        >>> convergence_problems(1.02, 5000.0)
        ['max R-hat 1.02 > 1.01']
        >>> convergence_problems(1.001, 5000.0)
        []
    """
    problems = []
    if not max_r_hat <= MAX_R_HAT:
        problems.append(f"max R-hat {max_r_hat:.3g} > {MAX_R_HAT}")
    if not min_ess_bulk >= MIN_ESS_BULK:
        problems.append(f"min bulk ESS {min_ess_bulk:.3g} < {MIN_ESS_BULK}")
    return problems


def build_target(config: ExperimentConfig) -> tuple[Any, dict[str, Any]]:
    """The target the config names and the keyword arguments sample_chains needs for it."""
    observed = _observed(config)
    options = dict(config.model.get("options", {}))
    if "recipe" in config.model:
        from probgen.recipes import registry

        recipe = registry.get(config.model["recipe"])
        if observed is not None:
            options["observed"] = observed
        return recipe.build(**options), {}
    module = _load_module(config.model["file"])
    function_name = config.model.get("function", "model")
    model = getattr(module, function_name, None)
    if not callable(model):
        raise DataError(
            f"config: {config.model['file']} has no callable {function_name!r} (set [model] "
            "function = NAME)"
        )
    kwargs = {key: _as_tensor(value) for key, value in (observed or {}).items()}
    kwargs.update(options)
    from probgen.samplers.pyro_density import PyroDensity

    return PyroDensity(model, model_kwargs=kwargs), {}


def _observed(config: ExperimentConfig) -> dict[str, Any] | None:
    if "file" in config.data:
        try:
            return json.loads(Path(config.data["file"]).read_text())
        except json.JSONDecodeError as error:
            raise DataError(f"config: [data] file is not valid JSON: {error}") from error
    if "values" in config.data:
        return dict(config.data["values"])
    return None


def _as_tensor(value: Any) -> Any:
    if isinstance(value, list):
        return torch.as_tensor(value, dtype=torch.float64)
    return value


def _load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"probgen_experiment_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise DataError(f"config: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise DataError(f"config: importing {path} failed: {error}") from error
    return module


def _run(config: ExperimentConfig, folder: Path, progress: bool) -> Path:
    import pandas as pd

    from probgen.experiments.plots import plot_comparison, plot_samples
    from probgen.samplers.chains import sample_chains

    # Under torch.distributed each rank runs its share of the methods (method i on rank
    # i mod world size), each whole and seeded as in one process; rank 0 gathers their rows
    # and writes the comparison. On one machine the ranks share its cores: give each rank its
    # own cores (or machine) before comparing ESS per second.
    me, world = distributed.rank(), distributed.world_size()
    if me == 0:
        (folder / "config.json").write_text(json.dumps(config.raw, indent=2, default=str))
    target, extra = build_target(config)
    rows: dict[str, dict[str, Any]] = {}
    for index, method in enumerate(config.methods):
        if index % world != me:
            continue
        method_folder = folder / method.label
        method_folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            # an experiment writes its own folder: every process runs it whole, never split
            with single_process():
                samples = sample_chains(
                    target,
                    method.method,
                    num_chains=method.chains,
                    num_samples=method.draws,
                    warmup=method.warmup,
                    seed=config.seed,
                    thin=method.thin,
                    progress=progress,
                    checkpoint=method_folder / "samples.safetensors",
                    **extra,
                    **method.options,
                )
        except DataError as error:
            raise DataError(f"method {method.label!r}: {error}") from error
        elapsed = time.perf_counter() - started
        summary = samples.summary()
        summary.to_csv(method_folder / "summary.csv")
        if config.plots:
            plot_samples(samples, method_folder)
        min_ess = float(np.nanmin(summary["ess_bulk"].to_numpy()))
        max_r_hat = float(np.nanmax(summary["r_hat"].to_numpy()))
        problems = convergence_problems(max_r_hat, min_ess)
        if problems:
            warnings.warn(
                f"method {method.label!r} has not converged ({'; '.join(problems)}): its ESS "
                "per second is meaningless; run more warmup/draws or change its settings",
                ConvergenceWarning,
                stacklevel=2,
            )
        rows[method.label] = {
            "method": method.method,
            "chains": method.chains,
            "draws": method.draws,
            "time_s": elapsed,
            "min_ess_bulk": min_ess,
            "ess_per_s": min_ess / elapsed if elapsed > 0 else float("nan"),
            "max_r_hat": max_r_hat,
            "divergences": samples.num_divergences,
            "converged": not problems,
            "problems": "; ".join(problems),
            "rank": me,
        }
    if world > 1:
        parts = distributed.all_gather_object(rows)
        gathered = {label: row for part in parts for label, row in part.items()}
        rows = {m.label: gathered[m.label] for m in config.methods}
        if me != 0:
            return folder
    table = pd.DataFrame.from_dict(rows, orient="index")
    ranks = table.pop("rank")
    table.index.name = "label"
    problems = table.pop("problems")
    table.to_csv(folder / "comparison.csv")
    (folder / "comparison.md").write_text(_markdown(table))
    if config.plots:
        plot_comparison(table, folder / "comparison.png")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    what = config.model.get("recipe") or str(config.model.get("file"))
    methods = ", ".join(
        f"{m.label} ({m.method}, {m.chains} chains x {m.draws} draws after {m.warmup} warmup)"
        for m in config.methods
    )
    where = (
        f" on {world} ranks (method on rank: "
        + ", ".join(f"{label} {int(rank)}" for label, rank in ranks.items())
        + ")"
        if world > 1
        else ""
    )
    readme = (
        f"# {config.name}\n\n"
        f"probgen infer ran {methods} on model {what} with seed {config.seed}, "
        f"on {stamp}{where}.\n\n{_markdown(table)}\n{_verdict(table, problems)}"
    )
    (folder / "README.md").write_text(readme)
    return folder


def _markdown(table: Any) -> str:
    columns = COMPARISON_COLUMNS
    lines = ["| label | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for label, row in table.iterrows():
        cells = [f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        cells[columns.index("converged")] = "yes" if row["converged"] else "**NOT CONVERGED**"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _verdict(table: Any, problems: Any) -> str:
    """README paragraph: which methods did not converge, and the fastest one that did."""
    lines = []
    for label, row in table.iterrows():
        if not row["converged"]:
            lines.append(
                f"**Warning: {label} has NOT CONVERGED** ({problems[label]}; the bar is max "
                f"R-hat <= {MAX_R_HAT} and min bulk ESS >= {MIN_ESS_BULK}): ignore its ESS per "
                "second.\n"
            )
    converged = table[table["converged"].astype(bool)]
    if len(converged):
        best = converged["ess_per_s"].astype(float).idxmax()
        lines.append(f"Fastest converged method (min bulk ESS per second): {best}.\n")
    else:
        lines.append("No method converged.\n")
    return "\n".join(lines)
