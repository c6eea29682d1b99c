"""One optimisation loop for every neural model in probgen.

`fit_model` runs minibatch gradient descent on a loss `loss(model, batch) -> scalar` (a mean
negative log-likelihood, or a negative ELBO per example): seeded shuffling, Adam by default,
learning-rate schedules, gradient clipping, a held-out log-likelihood each epoch with early
stopping, a progress bar, checkpoints (safetensors + JSON, never pickle) and `resume=True`,
and a `FitError` that keeps the last good parameters when the loss stops being finite.
`fit_with_model_settings` runs it under a probgen model's own settings (epochs, batch size,
learning rate, seed) and records the fit on the model: the body of each neural model's `fit`.

`pyro_elbo_loss` turns a Pyro ELBO (`Trace_ELBO`, `TraceMeanField_ELBO`, `RenyiELBO`) into such
a loss for a model that has Pyro `model` and `guide` methods. Parameters stay in the model's
state dict; nothing goes through Pyro's global parameter store.

Example:
    >>> import torch
    >>> from probgen.fitting.training import fit_model
    >>> net = torch.nn.Linear(1, 1)
    >>> x = torch.linspace(-1, 1, 64)[:, None]
    >>> history = fit_model(net, (x, 3 * x), loss=lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(),
    ...                     epochs=3, batch_size=16, lr=0.1, seed=0)
    >>> [round(h["epoch"]) for h in history]
    [1, 2, 3]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from probgen.core.data import Sequences
from probgen.core.errors import DataError, FitError

if TYPE_CHECKING:
    from probgen.core.contract import Model

__all__ = ["fit_model", "pyro_elbo_loss", "load_checkpoint", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.safetensors"
_CHECKPOINT_FORMAT = "probgen-checkpoint"
_OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
_SCHEDULES = ("cosine", "exponential", "plateau")
# Data smaller than this is moved to the model's device once, so each step only indexes it.
_MOVE_WHOLE_DATA_BYTES = 1 << 30

LossFn = Callable[[nn.Module, Any], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------
def first_tensor(batch: Any) -> torch.Tensor:
    """The examples of a minibatch, which arrives as a tensor or a tuple/list of tensors.

    Example:
        >>> first_tensor((torch.zeros(2), torch.ones(2))).tolist()
        [0.0, 0.0]
    """
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def _is_loader(data: Any) -> bool:
    return isinstance(data, torch.utils.data.DataLoader)


def _as_parts(data: Any, name: str) -> tuple[Any, ...] | Any:
    """Check indexable data: a tensor, a `Sequences`, or a tuple/list of those."""
    if isinstance(data, (torch.Tensor, Sequences)):
        parts: tuple[Any, ...] = (data,)
    elif (
        isinstance(data, (tuple, list))
        and data
        and all(isinstance(p, (torch.Tensor, Sequences)) for p in data)
    ):
        parts = tuple(data)
    else:
        raise DataError(
            f"{name} must be a tensor, a Sequences, a tuple of tensors (first dimension = "
            f"examples) or a torch DataLoader; got {type(data).__name__}"
        )
    sizes = {len(p) for p in parts}
    if len(sizes) != 1:
        raise DataError(
            f"{name}: the tensors of the tuple have different numbers of examples {sorted(sizes)}"
        )
    if sizes.pop() == 0:
        raise DataError(f"{name} is empty")
    return parts


def _n_examples(parts: tuple[Any, ...]) -> int:
    return len(parts[0])


def _index(parts: tuple[Any, ...], index: torch.Tensor, single: bool) -> Any:
    picked = tuple(p[index] for p in parts)
    return picked[0] if single else picked


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, (torch.Tensor, Sequences)):
        return batch.to(device) if _device_of(batch) != device else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_move(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


def _device_of(value: Any) -> torch.device:
    return value.values.device if isinstance(value, Sequences) else value.device


def _batch_size_of(batch: Any) -> int:
    if isinstance(batch, (torch.Tensor, Sequences)):
        return len(batch)
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_size_of(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size_of(next(iter(batch.values())))
    return 1


def _nbytes(parts: tuple[Any, ...]) -> int:
    total = 0
    for part in parts:
        tensor = part.values if isinstance(part, Sequences) else part
        total += tensor.numel() * tensor.element_size()
    return total


class _Batches:
    """Yields minibatches on the model's device from tensors or a DataLoader."""

    def __init__(
        self,
        data: Any,
        name: str,
        batch_size: int,
        device: torch.device,
        collate: Callable[[Any], Any] | None,
    ) -> None:
        self.loader = data if _is_loader(data) else None
        self.batch_size = batch_size
        self.device = device
        self.collate = collate
        if self.loader is None:
            self.single = isinstance(data, (torch.Tensor, Sequences))
            parts = _as_parts(data, name)
            if _nbytes(parts) <= _MOVE_WHOLE_DATA_BYTES:
                parts = tuple(_move(p, device) for p in parts)
            self.parts = parts
            self.n = _n_examples(parts)

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        return math.ceil(self.n / self.batch_size)

    def iterate(self, generator: torch.Generator | None) -> Iterator[Any]:
        if self.loader is not None:
            for batch in self.loader:
                batch = _move(batch, self.device)
                yield self.collate(batch) if self.collate is not None else batch
            return
        if generator is None:
            order = torch.arange(self.n)
        else:
            order = torch.randperm(self.n, generator=generator)
        index_device = _device_of(self.parts[0])
        order = order.to(index_device)
        for start in range(0, self.n, self.batch_size):
            batch = _index(self.parts, order[start : start + self.batch_size], self.single)
            batch = _move(batch, self.device)
            yield self.collate(batch) if self.collate is not None else batch


# ---------------------------------------------------------------------------------------------
# Optimiser, schedule
# ---------------------------------------------------------------------------------------------
def _make_optimizer(
    optimizer: str | Callable[..., torch.optim.Optimizer],
    parameters: list[nn.Parameter],
    lr: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(parameters)
    # The multi-tensor ("foreach") update, which torch picks by itself only on GPUs: the same
    # arithmetic as the per-parameter loop (the same updates bit for bit), in a few batched
    # calls instead of about ten small ones per parameter tensor, which dominate on a CPU.
    options = {"lr": lr, "weight_decay": weight_decay, "foreach": True}
    if optimizer == "adam":
        return torch.optim.Adam(parameters, **options)
    if optimizer == "adamw":
        return torch.optim.AdamW(parameters, **options)
    if optimizer == "sgd":
        return torch.optim.SGD(parameters, momentum=0.9, **options)
    if optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, **options)
    raise DataError(
        f"optimizer must be one of {', '.join(map(repr, _OPTIMIZERS))} or a callable "
        f"(parameters -> torch.optim.Optimizer); got {optimizer!r}"
    )


def _make_schedule(lr_schedule: Any, optimizer: torch.optim.Optimizer, epochs: int) -> Any:
    if lr_schedule is None:
        return None
    if callable(lr_schedule) and not isinstance(lr_schedule, str):
        return lr_schedule(optimizer)
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if lr_schedule == "exponential":
        # Reaches a tenth of the starting rate at the last epoch.
        gamma = 0.1 ** (1.0 / max(epochs - 1, 1))
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    if lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    raise DataError(
        f"lr_schedule must be None, one of {', '.join(map(repr, _SCHEDULES))} or a callable "
        f"(optimizer -> scheduler); got {lr_schedule!r}"
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints (safetensors tensors + JSON metadata; never pickle)
# ---------------------------------------------------------------------------------------------
def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for param_id, entries in state["state"].items():
        plain[str(param_id)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{param_id}/{key}"] = value
            else:
                plain[str(param_id)][key] = value
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for param_id, entries in meta["state"].items():
        state[int(param_id)] = dict(entries)
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
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
    handle, temporary = tempfile.mkstemp(prefix=".checkpoint.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


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


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _default_validation_log_prob(model: nn.Module, batch: Any) -> torch.Tensor:
    if isinstance(batch, tuple):
        return model.log_prob(*batch)
    return model.log_prob(batch)


@torch.no_grad()
def _mean_log_prob(
    model: nn.Module,
    batches: _Batches,
    log_prob_fn: Callable[[nn.Module, Any], torch.Tensor],
) -> float:
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    try:
        for batch in batches.iterate(None):
            values = log_prob_fn(model, batch)
            total += values.detach().double().sum().cpu()
            count += values.numel()
    finally:
        model.train(was_training)
    return float(total) / max(count, 1)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def fit_model(
    model: nn.Module,
    data: Any,
    *,
    loss: LossFn,
    validation_data: Any = None,
    validation_log_prob: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str | Callable[..., torch.optim.Optimizer] = "adam",
    weight_decay: float = 0.0,
    lr_schedule: Any = None,
    grad_clip: float | None = None,
    early_stopping_patience: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool = False,
    seed: int | None = None,
    max_steps: int | None = None,
    collate: Callable[[Any], Any] | None = None,
) -> list[dict]:
    """Minimise `loss` over minibatches of `data`; the model's parameters are updated in place.

    Args:
        model: an `nn.Module` (a probgen model); its trainable parameters are optimised.
        data: a tensor, a `Sequences`, or a tuple of them (first dimension = examples, e.g.
            `(x, labels)`), or a torch `DataLoader` (then `batch_size` and shuffling are its own).
        loss: `loss(model, batch) -> scalar tensor` to minimise, a per-example mean (negative
            log-likelihood or negative ELBO).
        validation_data: held-out data in the same forms; its mean log-likelihood per example
            is recorded each epoch as `val_log_prob`.
        validation_log_prob: `fn(model, batch) -> per-example log-likelihood` used on
            `validation_data` (no gradients, eval mode); by default `model.log_prob(batch)`.
        epochs: passes over the data.
        batch_size: examples per step (tensor data).
        lr: learning rate.
        optimizer: "adam", "adamw", "sgd", "rmsprop", or `fn(parameters) -> Optimizer`.
        weight_decay: L2 penalty passed to the optimiser.
        lr_schedule: None, "cosine", "exponential", "plateau" (on the validation figure or the
            training loss), or `fn(optimizer) -> scheduler`; stepped once per epoch.
        grad_clip: clip the global gradient norm to this value.
        early_stopping_patience: stop after this many epochs without a better validation
            log-likelihood and restore the best parameters (needs `validation_data`).
        checkpoint_dir: folder for `checkpoint.safetensors`, written every `checkpoint_every`
            epochs (model, optimiser, schedule, random states, history).
        checkpoint_every: epochs between checkpoints.
        resume: continue from the checkpoint in `checkpoint_dir` when one exists; with the
            same arguments the result matches an uninterrupted run.
        progress: show a tqdm progress bar over epochs.
        seed: seeds the shuffling and, inside the fit only, torch's global generator (which
            Pyro and `torch.randn` draw from); the caller's global random state is restored.
        max_steps: stop after this many optimiser steps in total.
        collate: `fn(batch) -> batch` applied to each minibatch after it is on the device.

    Returns:
        The history: one dict per epoch with `epoch`, `train_loss`, `val_log_prob`, `lr`,
        `seconds` and `steps`.

    Raises:
        DataError: malformed data or settings.
        FitError: the loss became NaN or infinite; the model keeps its last good parameters.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
        >>> hist = fit_model(model, x, loss=lambda m, b: m(b).pow(2).mean(), epochs=2, seed=0)
        >>> sorted(hist[0])
        ['epoch', 'lr', 'seconds', 'steps', 'train_loss', 'val_log_prob']
    """
    from probgen.core.data import check_positive_int

    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if max_steps is not None:
        max_steps = check_positive_int(max_steps, "max_steps")
    if early_stopping_patience is not None:
        early_stopping_patience = check_positive_int(
            early_stopping_patience, "early_stopping_patience"
        )
        if validation_data is None:
            raise DataError("early_stopping_patience needs validation_data")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise DataError(f"lr must be a positive number, got {lr!r}")
    if grad_clip is not None and not (grad_clip > 0):
        raise DataError(f"grad_clip must be positive, got {grad_clip!r}")
    if resume and checkpoint_dir is None:
        raise DataError("resume=True needs checkpoint_dir")
    if not callable(loss):
        raise DataError("loss must be a callable loss(model, batch) -> scalar tensor")

    device = _model_device(model)
    train_batches = _Batches(data, "data", batch_size, device, collate)
    val_batches = None
    if validation_data is not None:
        val_batches = _Batches(
            validation_data, "validation_data", max(batch_size, 512), device, collate
        )
    val_fn = validation_log_prob or _default_validation_log_prob

    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise DataError(f"{type(model).__name__} has no trainable parameters")
    opt = _make_optimizer(optimizer, parameters, float(lr), float(weight_decay))
    schedule = _make_schedule(lr_schedule, opt, epochs)

    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    forked = seed is not None or resume
    cuda_devices = [device] if device.type == "cuda" else []
    rng_context = (
        torch.random.fork_rng(devices=cuda_devices) if forked else contextlib.nullcontext()
    )
    with rng_context:
        if seed is not None:
            torch.manual_seed(int(seed))
        shuffle = torch.Generator()
        shuffle.manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ())))
        state = _LoopState()
        if resume and checkpoint_path is not None and checkpoint_path.is_file():
            state = _restore(checkpoint_path, model, opt, schedule, shuffle, device)
        return _run(
            model,
            train_batches,
            val_batches,
            val_fn,
            loss,
            opt,
            schedule,
            shuffle,
            state,
            epochs=epochs,
            grad_clip=grad_clip,
            patience=early_stopping_patience,
            checkpoint_path=checkpoint_path,
            checkpoint_every=checkpoint_every,
            progress=progress,
            max_steps=max_steps,
            parameters=parameters,
        )


MODEL_SETTINGS = ("epochs", "batch_size", "lr", "seed")


def fit_with_model_settings(
    model: Model,
    data: Any,
    *,
    loss: LossFn,
    validation_data: Any = None,
    validation_log_prob: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    options: dict[str, Any] | None = None,
    setting_names: tuple[str, ...] = MODEL_SETTINGS,
) -> list[dict]:
    """`fit_model` under a probgen model's own training settings, then mark the model fitted.

    This is the body of the neural models' `fit`: the settings named in `setting_names` are
    read from the model's attributes of the same names (its constructor arguments) and the
    `options` given to `fit` override them. The model then holds `history_`, and `n_iter_`
    (the number of epochs run) where it saves that in its `fitted_attributes`.

    Args:
        model: a probgen `Model` with an attribute for each name in `setting_names`.
        data: training data for `fit_model`.
        loss: `loss(model, batch) -> scalar tensor` to minimise.
        validation_data: held-out data for `fit_model`, or None.
        validation_log_prob: per-example log-likelihood on held-out batches, or None for
            `model.log_prob(batch)`.
        options: the `fit_model` settings given to `fit` (override the model's).
        setting_names: the model attributes that are `fit_model` settings by default.

    Returns:
        The history (one dict per epoch), also stored as `model.history_`.

    Example:
        >>> from probgen.deep.made import MADE
        >>> x = torch.randint(0, 2, (32, 4)).float()
        >>> made = MADE(4, hidden_dims=[8], epochs=3, seed=0)
        >>> nll = lambda model, batch: -model.log_prob_under_mask(batch, 0).mean()
        >>> history = fit_with_model_settings(made, x, loss=nll, options={"epochs": 2})
        >>> len(history), made.n_iter_, made.fitted_
        (2, 2, True)
    """
    settings = {name: getattr(model, name) for name in setting_names}
    settings.update(options or {})
    history = fit_model(
        model,
        data,
        loss=loss,
        validation_data=validation_data,
        validation_log_prob=validation_log_prob,
        **settings,
    )
    model.history_ = history
    if "n_iter_" in model.fitted_attributes:
        model.n_iter_ = len(history)
    model._mark_fitted()
    return history


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


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _run(
    model: nn.Module,
    train_batches: _Batches,
    val_batches: _Batches | None,
    val_fn: Callable[[nn.Module, Any], torch.Tensor],
    loss_fn: LossFn,
    opt: torch.optim.Optimizer,
    schedule: Any,
    shuffle: torch.Generator,
    state: _LoopState,
    *,
    epochs: int,
    grad_clip: float | None,
    patience: int | None,
    checkpoint_path: Path | None,
    checkpoint_every: int,
    progress: bool,
    max_steps: int | None,
    parameters: list[nn.Parameter],
) -> list[dict]:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=state.epoch, desc=type(model).__name__, unit="epoch")
    model.train()
    try:
        while state.epoch < epochs and not state.stopped:
            if max_steps is not None and state.steps >= max_steps:
                break
            epoch_good_state = _clone_state(model)
            started = time.perf_counter()
            total = 0.0
            count = 0
            for batch in train_batches.iterate(shuffle):
                loss = loss_fn(model, batch)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    _fail(model, epoch_good_state, state, f"loss is {loss_value}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
                opt.step()
                size = _batch_size_of(batch)
                total += loss_value * size
                count += size
                state.steps += 1
                if max_steps is not None and state.steps >= max_steps:
                    break
            if not all(bool(torch.isfinite(p).all()) for p in parameters):
                _fail(model, epoch_good_state, state, "parameters became NaN or infinite")
            state.epoch += 1
            record = {
                "epoch": state.epoch,
                "train_loss": total / max(count, 1),
                "val_log_prob": None,
                "lr": float(opt.param_groups[0]["lr"]),
                "seconds": 0.0,
                "steps": state.steps,
            }
            if val_batches is not None:
                value = _mean_log_prob(model, val_batches, val_fn)
                record["val_log_prob"] = value
                if value > state.best_value:
                    state.best_value = value
                    state.epochs_without_improvement = 0
                    if patience is not None:
                        state.best_state = _clone_state(model)
                else:
                    state.epochs_without_improvement += 1
                    if patience is not None and state.epochs_without_improvement >= patience:
                        state.stopped = True
            if schedule is not None:
                if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    figure = record["val_log_prob"]
                    schedule.step(-figure if figure is not None else record["train_loss"])
                else:
                    schedule.step()
            record["seconds"] = time.perf_counter() - started
            state.history.append(record)
            if bar is not None:
                bar.update(1)
                shown = {"loss": f"{record['train_loss']:.4g}"}
                if record["val_log_prob"] is not None:
                    shown["val_log_prob"] = f"{record['val_log_prob']:.4g}"
                bar.set_postfix(shown)
            if checkpoint_path is not None and (
                state.epoch % checkpoint_every == 0 or state.epoch == epochs or state.stopped
            ):
                _write(checkpoint_path, model, opt, schedule, shuffle, state)
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    if patience is not None and state.best_state is not None:
        model.load_state_dict(state.best_state)
    return list(state.history)


def _fail(
    model: nn.Module, good_state: dict[str, torch.Tensor], state: _LoopState, reason: str
) -> None:
    if not all(
        bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point()
    ):
        model.load_state_dict(good_state)
    model.eval()
    raise FitError(
        f"{type(model).__name__} fit diverged at epoch {state.epoch + 1} (step {state.steps + 1}): "
        f"{reason}; the model keeps its last good parameters. Try a smaller lr or grad_clip."
    )


def _write(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    schedule: Any,
    shuffle: torch.Generator,
    state: _LoopState,
) -> None:
    optimizer_tensors, optimizer_meta = _split_optimizer_state(opt.state_dict())
    tensors = {
        **_prefixed("model", model.state_dict()),
        **optimizer_tensors,
        "rng/shuffle": shuffle.get_state(),
        "rng/global_cpu": torch.get_rng_state(),
    }
    device = _model_device(model)
    if device.type == "cuda":
        tensors["rng/global_cuda"] = torch.cuda.get_rng_state(device)
    if state.best_state is not None:
        tensors.update(_prefixed("best", state.best_state))
    meta = {
        "format": _CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "epoch": state.epoch,
        "steps": state.steps,
        "history": state.history,
        "best_value": state.best_value,
        "epochs_without_improvement": state.epochs_without_improvement,
        "stopped": state.stopped,
        "optimizer": optimizer_meta,
        "schedule": schedule.state_dict() if schedule is not None else None,
    }
    _save_checkpoint(path, tensors, meta)


def _restore(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    schedule: Any,
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
        opt.load_state_dict(_join_optimizer_state(tensors, meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as error:
        raise FitError(
            f"the checkpoint in {str(path.parent)!r} does not match this model or optimiser: "
            f"{error}"
        ) from error
    if schedule is not None and meta.get("schedule") is not None:
        schedule.load_state_dict(meta["schedule"])
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


# ---------------------------------------------------------------------------------------------
# Pyro ELBOs as losses
# ---------------------------------------------------------------------------------------------
def pyro_elbo_loss(elbo: Any) -> LossFn:
    """Turn a Pyro ELBO into a `loss(model, batch)` for `fit_model`: negative ELBO per example.

    The model must have Pyro programs `model(*batch)` and `guide(*batch)` whose data sites sit
    in a `pyro.plate` over the batch. `Trace_ELBO` gives the same values and gradients as its
    `differentiable_loss` with less work per step (see `_TraceElboLoss`) when Pyro's
    validation is off (`pyro.validation_enabled(False)`); other ELBOs (`TraceMeanField_ELBO`,
    ...) go through `elbo.differentiable_loss`; `RenyiELBO` (alpha=0 is the IWAE bound) is
    evaluated from its vectorised traces with reparameterised gradients. Use
    `vectorize_particles=True` with several particles so that they cost one pass. Parameters
    are the model's own (its state dict); Pyro's global parameter store is not used.

    Args:
        elbo: a `pyro.infer` ELBO instance.

    Returns:
        `loss(model, batch) -> scalar tensor`.

    Example:
        >>> import pyro
        >>> loss = pyro_elbo_loss(pyro.infer.Trace_ELBO())
        >>> callable(loss)
        True
    """
    import pyro.infer

    if isinstance(elbo, pyro.infer.RenyiELBO):
        return _RenyiLoss(elbo)
    if not hasattr(elbo, "differentiable_loss"):
        raise DataError(
            f"elbo must be a Pyro ELBO with differentiable_loss (Trace_ELBO, "
            f"TraceMeanField_ELBO) or a RenyiELBO; got {type(elbo).__name__}"
        )
    # Subclasses (JitTrace_ELBO, TraceMeanField_ELBO, ...) change the estimator: exact type only.
    if type(elbo) is pyro.infer.Trace_ELBO:
        return _TraceElboLoss(elbo)

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        args = batch if isinstance(batch, tuple) else (batch,)
        return elbo.differentiable_loss(model.model, model.guide, *args) / _batch_size_of(batch)

    return loss


class _TraceElboLoss:
    """`Trace_ELBO`'s estimator per example, with the same values and gradients and less work.

    Pyro's `Trace_ELBO.differentiable_loss` records full traces of the guide and of the model
    (through three effect handlers), copies both to drop subsample sites, scores every guide
    site twice (`log_prob_sum` for the reported value, `score_parts` for the surrogate), reads
    each site's sum back to Python (`.item()`, a device sync) and hooks a NaN check into the
    graph. For a fully reparameterised guide the surrogate is just the sum of the scaled,
    masked log-densities of the model's sites minus the guide's, which is also the ELBO's
    value. So this loss runs the guide, then the model with the guide's values replayed, each
    under one small recording handler, and sums those terms in Pyro's order (Pyro's own
    expressions, so the gradients match bit for bit). Particles are drawn in sequence or,
    with `vectorize_particles`, in one outer plate as Pyro does.

    Pyro's own `differentiable_loss` is used instead while Pyro's validation is on (it then
    checks shapes and model/guide agreement), while `max_plate_nesting` is still unknown for
    vectorised particles (Pyro guesses it on that call), and from the first guide site with a
    score-function term on (a site without a reparameterised sampler: that step's draws are
    discarded and redone by Pyro).
    """

    def __init__(self, elbo: Any) -> None:
        self.elbo = elbo
        self.use_pyro = False

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        from pyro.infer.util import is_validation_enabled

        args = batch if isinstance(batch, tuple) else (batch,)
        elbo = self.elbo
        vectorized = elbo.vectorize_particles and elbo.num_particles > 1
        if (
            self.use_pyro
            or is_validation_enabled()
            or (vectorized and elbo.max_plate_nesting == math.inf)
        ):
            return self._pyro_loss(model, args, batch)
        total: torch.Tensor | None = None
        for _ in range(1 if elbo.vectorize_particles else elbo.num_particles):
            try:
                surrogate_elbo = self._particle(model, args, vectorized)
            except _ScoreFunctionSite:
                self.use_pyro = True
                return self._pyro_loss(model, args, batch)
            # Pyro's arithmetic (negate, divide by the number of particles, add up), without
            # its exact no-ops (adding to zero, dividing by one) that only lengthen the graph.
            term = -surrogate_elbo
            if elbo.num_particles != 1:
                term = term / elbo.num_particles
            total = term if total is None else total + term
        assert total is not None
        return total / _batch_size_of(batch)

    def _pyro_loss(self, model: nn.Module, args: tuple, batch: Any) -> torch.Tensor:
        return self.elbo.differentiable_loss(model.model, model.guide, *args) / _batch_size_of(
            batch
        )

    def _run(self, program: Callable, args: tuple, vectorized: bool, replay: Any) -> Any:
        import pyro

        recorder = _site_recorder()(replay)
        with recorder:
            if vectorized:
                particles = pyro.plate(
                    "num_particles_vectorized",
                    self.elbo.num_particles,
                    dim=-self.elbo.max_plate_nesting,
                )
                with particles:
                    program(*args)
            else:
                program(*args)
        return recorder

    def _particle(self, model: nn.Module, args: tuple, vectorized: bool) -> torch.Tensor:
        """The surrogate ELBO of one (possibly vectorised) particle.

        Raises:
            _ScoreFunctionSite: a guide site needs a score-function term.
        """
        from pyro.distributions.util import is_identically_zero, scale_and_mask

        guide = self._run(model.guide, args, vectorized, None)
        if not guide.reparameterized:
            raise _ScoreFunctionSite
        generative = self._run(model.model, args, vectorized, guide.values)
        surrogate: torch.Tensor | None = None
        for site in generative.scored:
            log_prob = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            site_sum = scale_and_mask(log_prob, site["scale"], site["mask"]).sum()
            surrogate = site_sum if surrogate is None else surrogate + site_sum
        for site in guide.scored:
            parts = site["fn"].score_parts(site["value"], *site["args"], **site["kwargs"])
            parts = parts.scale_and_mask(site["scale"], site["mask"])
            if not is_identically_zero(parts.score_function):
                raise _ScoreFunctionSite
            if not is_identically_zero(parts.entropy_term):
                entropy_sum = parts.entropy_term.sum()
                surrogate = -entropy_sum if surrogate is None else surrogate - entropy_sum
        if surrogate is None:
            raise DataError("the model and guide have no sample sites to score")
        return surrogate


class _ScoreFunctionSite(Exception):
    """A guide site without a reparameterised sampler: `Trace_ELBO` needs Pyro's own path."""


_RECORDER: type | None = None


def _site_recorder() -> type:
    """The effect handler of `_TraceElboLoss` (defined on first use: Pyro loads lazily).

    At each sample site it replays the guide's value when given one (as `poutine.replay`)
    and keeps what `poutine.trace` would keep for scoring: the site's distribution after the
    plates have broadcast it, its value, scale and mask. Subsample sites are replayed but not
    scored, as `Trace_ELBO` drops them.
    """
    global _RECORDER
    if _RECORDER is not None:
        return _RECORDER
    from pyro.poutine.messenger import Messenger
    from pyro.poutine.util import site_is_subsample

    class SiteRecorder(Messenger):
        def __init__(self, replay: dict[str, torch.Tensor] | None) -> None:
            super().__init__()
            self.replay = replay
            self.values: dict[str, torch.Tensor] = {}
            self.scored: list[dict[str, Any]] = []
            self.reparameterized = True

        def _pyro_sample(self, msg: Any) -> None:
            if self.replay is None or msg["is_observed"]:
                return
            value = self.replay.get(msg["name"])
            if value is not None:
                msg["value"] = value
                msg["done"] = True

        def _pyro_post_sample(self, msg: Any) -> None:
            if msg["infer"].get("_do_not_trace"):
                return
            name = msg["name"]
            if name in self.values:
                raise RuntimeError(f"Multiple sample sites named '{name}'")
            self.values[name] = msg["value"]
            if site_is_subsample(msg):
                return
            self.scored.append(msg)
            if not msg["is_observed"] and not msg["fn"].has_rsample:
                self.reparameterized = False

    _RECORDER = SiteRecorder
    return SiteRecorder


class _RenyiLoss:
    """Negative Rényi bound per example with reparameterised gradients (IWAE at alpha=0)."""

    def __init__(self, elbo: Any) -> None:
        self.elbo = elbo

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        from pyro.infer.util import get_dependent_plate_dims, torch_sum

        args = batch if isinstance(batch, tuple) else (batch,)
        particles = []
        for model_trace, guide_trace in self.elbo._get_traces(model.model, model.guide, args, {}):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            value = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    value = value + torch_sum(site["log_prob"], sum_dims)
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    if not site["fn"].has_rsample:
                        raise DataError(
                            f"RenyiELBO loss needs reparameterised guide sites; "
                            f"site {site['name']!r} is not"
                        )
                    value = value - torch_sum(site["log_prob"], sum_dims)
            particles.append(value)
        vectorized = self.elbo.vectorize_particles and self.elbo.num_particles > 1
        stacked = particles[0] if vectorized else torch.stack(particles)
        alpha = self.elbo.alpha
        log_weights = (1.0 - alpha) * stacked
        bound = (torch.logsumexp(log_weights, dim=0) - math.log(self.elbo.num_particles)) / (
            1.0 - alpha
        )
        return -bound.sum() / _batch_size_of(batch)
