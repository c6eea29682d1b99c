"""Experiment configs: read a TOML file (or take a dict) and check every key.

A config names a model, its data, the inference methods with their settings, and the run's
chains, draws, warmup and seed::

    name = "eight_schools"
    seed = 0
    chains = 4
    draws = 1000
    warmup = 1000

    [model]
    recipe = "eight_schools"        # a recipe in models/, or
    # file = "my_model.py"          # a Python file with a Pyro model
    # function = "model"            # its name in that file (default "model")

    [data]                          # optional
    # file = "data.json"            # JSON data: the recipe's `observed=` or the model's kwargs

    [methods.mh]                    # one table per method; keys other than chains, draws,
    chains = 64                     # warmup, thin and method go to sample_chains as options
    draws = 2000

    [methods.nuts]

``plots = false`` skips the trace and posterior plots. A method table may set
``method = "mh"`` to run one method twice under two labels.

Example:
    >>> config = parse_config({"model": {"recipe": "eight_schools"}, "methods": {"mh": {}}})
    >>> config.methods[0].method, config.chains
    ('mh', 4)
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probgen.core.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TOP_KEYS = {
    "name",
    "seed",
    "chains",
    "draws",
    "warmup",
    "thin",
    "model",
    "data",
    "methods",
    "description",
    "plots",
}
MODEL_KEYS = {"recipe", "file", "function", "options"}
DATA_KEYS = {"file", "values"}
RUN_KEYS = {"chains", "draws", "warmup", "thin", "method"}
METHOD_NAMES = ("mh", "gibbs", "nuts", "hmc", "chees", "svi")


@dataclass
class MethodConfig:
    """One inference run of an experiment."""

    label: str
    method: str
    chains: int
    draws: int
    warmup: int
    thin: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """A checked experiment config (see the module docstring)."""

    name: str
    seed: int
    chains: int
    draws: int
    warmup: int
    thin: int
    model: dict[str, Any]
    data: dict[str, Any]
    methods: list[MethodConfig]
    base_dir: Path
    raw: dict[str, Any]
    plots: bool = True


def _unknown(keys: set[str], allowed: set[str], where: str) -> None:
    extra = sorted(keys - allowed)
    if not extra:
        return
    hints = []
    for key in extra:
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise DataError(
        f"config: unknown key(s) {', '.join(hints)} in {where}; "
        f"allowed: {', '.join(sorted(allowed))}"
    )


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"config: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file, with clear errors for a missing file or bad syntax."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise DataError(f"config file {str(path)!r} is not valid TOML: {error}") from error


def parse_config(raw: dict[str, Any], base_dir: str | Path = ".") -> ExperimentConfig:
    """Check a config dict and fill in defaults.

    Raises:
        DataError: unknown keys (with a suggestion), missing model, missing files, bad values.
    """
    if not isinstance(raw, dict):
        raise DataError(f"config must be a dict (a TOML table), got {type(raw).__name__}")
    base = Path(base_dir)
    _unknown(set(raw), TOP_KEYS, "the top level")
    model = raw.get("model")
    if not isinstance(model, dict):
        raise DataError("config: a [model] table with recipe = NAME or file = PATH is required")
    _unknown(set(model), MODEL_KEYS, "[model]")
    if ("recipe" in model) == ("file" in model):
        raise DataError("config: [model] needs exactly one of recipe = NAME or file = PATH")
    model = dict(model)
    if "file" in model:
        model["file"] = _existing(base, model["file"], "[model] file")
    data = dict(raw.get("data") or {})
    _unknown(set(data), DATA_KEYS, "[data]")
    if "file" in data:
        data["file"] = _existing(base, data["file"], "[data] file")
    chains = _int(raw.get("chains", 4), "chains", 1)
    draws = _int(raw.get("draws", 1000), "draws", 1)
    warmup = _int(raw.get("warmup", 1000), "warmup", 0)
    thin = _int(raw.get("thin", 1), "thin", 1)
    seed = _int(raw.get("seed", 0), "seed", 0)
    methods_table = raw.get("methods")
    if not isinstance(methods_table, dict) or not methods_table:
        raise DataError("config: at least one [methods.NAME] table is required")
    methods = []
    for label, settings in methods_table.items():
        if not isinstance(settings, dict):
            raise DataError(f"config: [methods.{label}] must be a table")
        method = settings.get("method", label)
        if method not in METHOD_NAMES:
            close = difflib.get_close_matches(str(method), METHOD_NAMES, n=1)
            raise DataError(
                f"config: [methods.{label}] names unknown method {method!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; known: {', '.join(METHOD_NAMES)}"
            )
        options = {k: v for k, v in settings.items() if k not in RUN_KEYS}
        methods.append(
            MethodConfig(
                label=str(label),
                method=method,
                chains=_int(settings.get("chains", chains), f"methods.{label}.chains", 1),
                draws=_int(settings.get("draws", draws), f"methods.{label}.draws", 1),
                warmup=_int(settings.get("warmup", warmup), f"methods.{label}.warmup", 0),
                thin=_int(settings.get("thin", thin), f"methods.{label}.thin", 1),
                options=options,
            )
        )
    name = str(raw.get("name", model.get("recipe") or Path(model["file"]).stem))
    return ExperimentConfig(
        name=name,
        seed=seed,
        chains=chains,
        draws=draws,
        warmup=warmup,
        thin=thin,
        model=model,
        data=data,
        methods=methods,
        base_dir=base,
        raw=raw,
    )


def _existing(base: Path, value: Any, what: str) -> Path:
    if not isinstance(value, str):
        raise DataError(f"config: {what} must be a path string, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise DataError(f"config: {what} {str(path)!r} does not exist")
    return path
