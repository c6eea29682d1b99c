"""The one checkpoint format of the gradient loop: safetensors tensors + JSON metadata.

A checkpoint holds the model's state dict, every optimiser's state, the schedules, the random
states and the history, so that `fit_model(..., resume=True)` continues exactly where it
stopped. Never pickle; written atomically with `probgen.core.atomic.atomic_write_bytes`.

Example:
    >>> import tempfile
    >>> from probgen.fitting.checkpoint import load_checkpoint
    >>> try:
    ...     load_checkpoint(tempfile.mkdtemp())
    ... except Exception as error:
    ...     print(type(error).__name__)
    FitError
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probgen.core.atomic import atomic_write_bytes
from probgen.core.errors import FitError
from probgen.fitting.batching import _model_device
from probgen.fitting.optimizers import _Optimised

__all__ = ["load_checkpoint", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.safetensors"
_CHECKPOINT_FORMAT = "probgen-checkpoint"


def _split_optimizer_state(
    state: dict[str, Any], prefix: str = "optimizer"
) -> tuple[dict[str, torch.Tensor], Any]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for param_id, entries in state["state"].items():
        plain[str(param_id)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{param_id}/{key}"] = value
            else:
                plain[str(param_id)][key] = value
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def _join_optimizer_state(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "optimizer"
) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for param_id, entries in meta["state"].items():
        state[int(param_id)] = dict(entries)
    for name, value in tensors.items():
        if name.startswith(prefix + "/"):
            _, param_id, key = name.split("/", 2)
            state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save as safetensors_save

    payload = safetensors_save(
        {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()},
        metadata={"probgen_checkpoint": json.dumps(meta)},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, payload)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by `fit_model`: its tensors and its JSON metadata.

    Args:
        path: the checkpoint file, or the `checkpoint_dir` that holds it.

    Raises:
        FitError: the file is missing or is not a probgen checkpoint.
    """
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FitError(f"no checkpoint at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})["probgen_checkpoint"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:
        raise FitError(f"{str(path)!r} is not a readable probgen checkpoint: {error}") from error
    if meta.get("format") != _CHECKPOINT_FORMAT:
        raise FitError(f"{str(path)!r} is not a probgen checkpoint")
    return tensors, meta


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}



class _LoopState:
    """What the loop carries between epochs (and through a checkpoint)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.steps = 0
        self.history: list[dict] = []
        self.best_value = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epochs_without_improvement = 0
        self.stopped = False



def _write(
    path: Path,
    model: nn.Module,
    optimised: Sequence[_Optimised],
    shuffle: torch.Generator,
    state: _LoopState,
) -> None:
    tensors = _prefixed("model", model.state_dict())
    optimizer_meta: dict[str, Any] = {}
    for prefix, item in _optimizer_prefixes(optimised):
        optimizer_tensors, optimizer_meta[prefix] = _split_optimizer_state(
            item.optimizer.state_dict(), prefix
        )
        tensors.update(optimizer_tensors)
    tensors = {
        **tensors,
        "rng/shuffle": shuffle.get_state(),
        "rng/global_cpu": torch.get_rng_state(),
    }
    device = _model_device(model)
    if device.type == "cuda":
        tensors["rng/global_cuda"] = torch.cuda.get_rng_state(device)
    if state.best_state is not None:
        tensors.update(_prefixed("best", state.best_state))
    meta: dict[str, Any] = {
        "format": _CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "epoch": state.epoch,
        "steps": state.steps,
        "history": state.history,
        "best_value": state.best_value,
        "epochs_without_improvement": state.epochs_without_improvement,
        "stopped": state.stopped,
    }
    if len(optimised) == 1:
        # One loss keeps the original layout, so that older checkpoints resume unchanged.
        meta["optimizer"] = optimizer_meta["optimizer"]
        schedule = optimised[0].schedule
        meta["schedule"] = schedule.state_dict() if schedule is not None else None
    else:
        meta["optimizers"] = optimizer_meta
        meta["schedules"] = {
            prefix: item.schedule.state_dict() if item.schedule is not None else None
            for prefix, item in _optimizer_prefixes(optimised)
        }
    _save_checkpoint(path, tensors, meta)


def _restore(
    path: Path,
    model: nn.Module,
    optimised: Sequence[_Optimised],
    shuffle: torch.Generator,
    device: torch.device,
) -> _LoopState:
    tensors, meta = load_checkpoint(path)
    if meta.get("model_class") != type(model).__name__:
        raise FitError(
            f"the checkpoint in {str(path.parent)!r} is for a {meta.get('model_class')}, "
            f"not a {type(model).__name__}"
        )
    try:
        model.load_state_dict(_unprefixed("model", tensors))
        for prefix, item in _optimizer_prefixes(optimised):
            if len(optimised) == 1:
                optimizer_meta, schedule_meta = meta["optimizer"], meta.get("schedule")
            else:
                optimizer_meta = meta["optimizers"][prefix]
                schedule_meta = meta["schedules"].get(prefix)
            item.optimizer.load_state_dict(
                _join_optimizer_state(tensors, optimizer_meta, prefix)
            )
            if item.schedule is not None and schedule_meta is not None:
                item.schedule.load_state_dict(schedule_meta)
    except (RuntimeError, ValueError, KeyError) as error:
        raise FitError(
            f"the checkpoint in {str(path.parent)!r} does not match this model or optimiser: "
            f"{error}"
        ) from error
    shuffle.set_state(tensors["rng/shuffle"])
    torch.set_rng_state(tensors["rng/global_cpu"])
    if device.type == "cuda" and "rng/global_cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng/global_cuda"], device)
    state = _LoopState()
    state.epoch = int(meta["epoch"])
    state.steps = int(meta["steps"])
    state.history = list(meta["history"])
    state.best_value = float(meta["best_value"])
    state.epochs_without_improvement = int(meta["epochs_without_improvement"])
    state.stopped = bool(meta["stopped"])
    best = _unprefixed("best", tensors)
    state.best_state = {k: v.to(device) for k, v in best.items()} if best else None
    return state



def _optimizer_prefixes(optimised: Sequence[_Optimised]) -> list[tuple[str, _Optimised]]:
    """Where each optimiser's state goes: "optimizer" for one loss, "optimizer:<step>" else."""
    if len(optimised) == 1:
        return [("optimizer", optimised[0])]
    return [(f"optimizer:{item.step.name}", item) for item in optimised]
