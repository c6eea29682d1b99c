"""Bayesian inference experiments run from a config: `run(config)` and `run_file(path)`."""

from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any):
    """See `probgen.experiments.runner.run`."""
    from probgen.experiments.runner import run as _run

    return _run(*args, **kwargs)


def run_file(*args: Any, **kwargs: Any):
    """See `probgen.experiments.runner.run_file`."""
    from probgen.experiments.runner import run_file as _run_file

    return _run_file(*args, **kwargs)
