"""Run a Bayesian inference experiment from a config and write its results folder.

The folder holds: ``config.toml`` (a copy, when run from a file) and ``config.json`` (the checked
config), one folder per method with ``samples.safetensors`` (written as the run goes, so an
interrupted run leaves its draws readable), ``summary.csv``, ``trace.png`` and
``posterior.png``; ``comparison.csv`` / ``comparison.md`` (time, min bulk ESS, ESS per second,
max R-hat, divergences per method), ``comparison.png``, and ``README.md`` saying what ran.
Same config and seed, same numbers.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probgen.core.errors import DataError
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
)
"""Columns of ``comparison.csv`` and ``comparison.md``, one row per method label."""


def run_file(path: str | Path, out_dir: str | Path | None = None, *, progress: bool = True) -> Path:
    """Run the experiment in the TOML file `path`; results go to `out_dir`.

    Default folder: ``results/NAME`` beside the config file. Returns the folder.
    """
    path = Path(path)
    raw = load_toml(path)
    config = parse_config(raw, base_dir=path.parent)
    folder = Path(out_dir) if out_dir is not None else path.parent / "results" / config.name
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
    """Run the experiment described by the dict `config` (same keys as the TOML file)."""
    checked = parse_config(config, base_dir=base_dir)
    folder = Path(out_dir) if out_dir is not None else Path(base_dir) / "results" / checked.name
    folder.mkdir(parents=True, exist_ok=True)
    return _run(checked, folder, progress)


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

    (folder / "config.json").write_text(json.dumps(config.raw, indent=2, default=str))
    target, extra = build_target(config)
    rows = {}
    for method in config.methods:
        method_folder = folder / method.label
        method_folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
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
        rows[method.label] = {
            "method": method.method,
            "chains": method.chains,
            "draws": method.draws,
            "time_s": elapsed,
            "min_ess_bulk": min_ess,
            "ess_per_s": min_ess / elapsed if elapsed > 0 else float("nan"),
            "max_r_hat": float(np.nanmax(summary["r_hat"].to_numpy())),
            "divergences": samples.num_divergences,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "label"
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
    readme = (
        f"# {config.name}\n\n"
        f"probgen infer ran {methods} on model {what} with seed {config.seed}, "
        f"on {stamp}.\n\n{_markdown(table)}"
    )
    (folder / "README.md").write_text(readme)
    return folder


def _markdown(table: Any) -> str:
    columns = COMPARISON_COLUMNS
    lines = ["| label | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for label, row in table.iterrows():
        cells = [f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
