"""One optimisation loop for every neural model in probgen.

`fit_model` runs minibatch gradient descent on a loss `loss(model, batch) -> scalar` (a mean
negative log-likelihood, or a negative ELBO per example): seeded shuffling, Adam by default,
learning-rate schedules, gradient clipping, a held-out log-likelihood each epoch with early
stopping, a progress bar, checkpoints (`probgen.fitting.checkpoint`) and `resume=True`, and a
`FitError` that keeps the last good parameters when the loss stops being finite. With
`steps=[Step(...), ...]` instead of `loss` it minimises several losses in turn on each
minibatch, each over its own parameters with its own optimiser (an adversarial model).
`fit_with_model_settings` runs it under a probgen model's own settings (n_epochs, batch size,
learning rate, seed) and records the fit on the model: the body of each neural model's `fit`.

Example:
    >>> import torch
    >>> from probgen.fitting.loop import fit_model
    >>> net = torch.nn.Linear(1, 1)
    >>> x = torch.linspace(-1, 1, 64)[:, None]
    >>> history = fit_model(net, (x, 3 * x), loss=lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(),
    ...                     n_epochs=3, batch_size=16, learning_rate=0.1, seed=0)
    >>> [round(h["epoch"]) for h in history]
    [1, 2, 3]
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from probgen.core.errors import DataError, FitError
from probgen.core.threads import small_op_threads
from probgen.fitting.batching import _batch_size_of, _Batches, _model_device
from probgen.fitting.checkpoint import (
    CHECKPOINT_NAME,
    _clone_state,
    _LoopState,
    _restore,
    _write,
)
from probgen.fitting.data_parallel import DataParallel
from probgen.fitting.optimizers import (
    LossFn,
    Step,
    _make_optimizer,
    _make_schedule,
    _Optimised,
    check_steps,
)
from probgen.fitting.settings import MODEL_SETTINGS, renamed_options

if TYPE_CHECKING:
    from probgen.core.contract import Model

__all__ = ["fit_model", "fit_with_model_settings", "MODEL_SETTINGS", "Step"]


def _default_validation_log_prob(model: nn.Module, batch: Any) -> torch.Tensor:
    if isinstance(batch, tuple):
        return model.log_prob(*batch)
    return model.log_prob(batch)


@torch.no_grad()
def _mean_log_prob(
    model: nn.Module,
    batches: _Batches,
    log_prob_fn: Callable[[nn.Module, Any], torch.Tensor],
    parallel: DataParallel | None = None,
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
    if parallel is not None:
        if parallel.by_row:
            parallel.share_stream()  # each rank drew noise for its own validation rows
        return parallel.reduce_mean(float(total), count)
    return float(total) / max(count, 1)




def _step_work(model: Any, *_: Any, batch_size: Any = 128, **__: Any) -> int | None:
    """Per-step work of the loop (`probgen.core.threads`): examples x parameters."""
    parameters = getattr(model, "parameters", None)
    if not callable(parameters) or not isinstance(batch_size, int):
        return None
    return batch_size * sum(int(p.numel()) for p in parameters())


def fit_model(
    model: nn.Module,
    data: Any,
    *,
    loss: LossFn | None = None,
    steps: Sequence[Step] | None = None,
    validation_data: Any = None,
    validation_log_prob: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    n_epochs: int = 10,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
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
    epoch_end: Callable[[nn.Module, dict], None] | None = None,
    epochs: int | None = None,
    lr: float | None = None,
) -> list[dict]:
    """Minimise `loss` (or each of `steps`) over minibatches of `data`, updating the model.

    Args:
        model: an `nn.Module` (a probgen model); its trainable parameters are optimised.
        data: a tensor, a `Sequences`, or a tuple of them (first dimension = examples, e.g.
            `(x, labels)`), or a torch `DataLoader` (then `batch_size` and shuffling are its own).
            Under `torch.distributed` (2+ ranks) it is this rank's shard and the fit is
            data-parallel (`probgen.fitting.data_parallel`): `batch_size` is the global batch,
            checkpoints are written by rank 0 and resume at any world size.
        loss: `loss(model, batch) -> scalar tensor` to minimise, a per-example mean (negative
            log-likelihood or negative ELBO), over every trainable parameter.
        steps: instead of `loss`, several `Step`s run in turn on each minibatch, each
            `repeats` times, each minimising its own loss over its own parameter group with its
            own optimiser (learning rate, betas); e.g. a GAN's discriminator step with
            `repeats=n_critic`, then its generator step. Each optimiser is checkpointed.
        validation_data: held-out data in the same forms; its mean log-likelihood per example
            is recorded each epoch as `val_log_prob`.
        validation_log_prob: `fn(model, batch) -> per-example log-likelihood` used on
            `validation_data` (no gradients, eval mode); by default `model.log_prob(batch)`.
        n_epochs: passes over the data.
        batch_size: examples per step (tensor data).
        learning_rate: learning rate (of every step that sets none).
        optimizer: "adam", "adamw", "sgd", "rmsprop", or `fn(parameters) -> Optimizer`.
        weight_decay: L2 penalty passed to the optimiser.
        lr_schedule: None, "cosine", "exponential", "plateau" (on the validation figure or the
            training loss), or `fn(optimizer) -> scheduler`; stepped once per epoch (one
            schedule per step's optimiser).
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
        max_steps: stop after this many minibatches in total (optimiser steps, for one loss).
        collate: `fn(batch) -> batch` applied to each minibatch after it is on the device.
        epoch_end: `fn(model, record) -> None` called at the end of each epoch with that
            epoch's history record before it is stored, to add the model's own diagnostics
            (they are then checkpointed with the history); it may raise `FitError`.
        epochs: deprecated name of `n_epochs`.
        lr: deprecated name of `learning_rate`.

    Returns:
        The history: one dict per epoch with `epoch`, `train_loss`, `val_log_prob`, `lr`,
        `seconds` and `steps`. With `steps`, also `losses` (each step's mean loss, by name),
        `grad_norms` (each step's mean gradient norm before clipping) and `lrs` (each step's
        learning rate); `train_loss` is then the sum of `losses` and `lr` the first step's.

    Raises:
        DataError: malformed data or settings.
        FitError: the loss became NaN or infinite, or a step's loss, `after_step` or
            `epoch_end` raised `FitError` (a model's own divergence test); the model keeps its
            last good parameters (those at the start of the epoch).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
        >>> hist = fit_model(model, x, loss=lambda m, b: m(b).pow(2).mean(), n_epochs=2, seed=0)
        >>> sorted(hist[0])
        ['epoch', 'lr', 'seconds', 'steps', 'train_loss', 'val_log_prob']
    """
    from probgen.core.data import check_positive_int

    old = {name: value for name, value in (("epochs", epochs), ("lr", lr)) if value is not None}
    if old:
        current = renamed_options("fit_model", old, stacklevel=3)
        n_epochs = current.get("n_epochs", n_epochs)
        learning_rate = current.get("learning_rate", learning_rate)
    n_epochs = check_positive_int(n_epochs, "n_epochs")
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
    if not _positive_number(learning_rate):
        raise DataError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if grad_clip is not None and not (grad_clip > 0):
        raise DataError(f"grad_clip must be positive, got {grad_clip!r}")
    if resume and checkpoint_dir is None:
        raise DataError("resume=True needs checkpoint_dir")
    if (loss is None) == (steps is None):
        raise DataError("give fit_model either loss or steps")
    if steps is None and not callable(loss):
        raise DataError("loss must be a callable loss(model, batch) -> scalar tensor")
    if epoch_end is not None and not callable(epoch_end):
        raise DataError("epoch_end must be a callable fn(model, record)")

    device = _model_device(model)
    train_batches = _Batches(data, "data", batch_size, device, collate)
    # In a process group of 2+ ranks `data` is this rank's shard and the fit is data-parallel.
    parallel = DataParallel(model, train_batches) if DataParallel.wanted(data) else None
    val_batches = None
    if validation_data is not None:
        val_batches = _Batches(
            validation_data, "validation_data", max(batch_size, 512), device, collate
        )
    val_fn = validation_log_prob or _default_validation_log_prob

    single = steps is None
    chosen = (Step("loss", loss),) if steps is None else check_steps(steps)  # type: ignore[arg-type]
    optimised = []
    for step in chosen:
        parameters = step.parameter_group(model)
        if not parameters:
            where = "" if single else f" for step {step.name!r}"
            raise DataError(f"{type(model).__name__} has no trainable parameters{where}")
        step_lr = learning_rate if step.learning_rate is None else step.learning_rate
        if not _positive_number(step_lr):
            raise DataError(f"step {step.name!r}: learning_rate must be positive, got {step_lr!r}")
        opt = _make_optimizer(
            optimizer if step.optimizer is None else step.optimizer,
            parameters,
            float(step_lr),
            float(weight_decay if step.weight_decay is None else step.weight_decay),
            betas=step.betas,
        )
        schedule = _make_schedule(lr_schedule, opt, n_epochs)
        optimised.append(_Optimised(step, parameters, opt, schedule))

    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    forked = seed is not None or resume
    cuda_devices = [device] if device.type == "cuda" else []
    rng_context = (
        torch.random.fork_rng(devices=cuda_devices) if forked else contextlib.nullcontext()
    )
    with rng_context, small_op_threads(_step_work(model, batch_size=batch_size), device):
        if seed is not None:
            torch.manual_seed(int(seed))
        shuffle_seed = int(seed) if seed is not None else int(torch.randint(2**62, ()))
        if parallel is not None:
            shuffle_seed = parallel.shared_seed(shuffle_seed)
        shuffle = torch.Generator()
        shuffle.manual_seed(shuffle_seed)
        state = _LoopState()
        if resume and checkpoint_path is not None and checkpoint_path.is_file():
            state = _restore(checkpoint_path, model, optimised, shuffle, device)
        if parallel is not None:
            if DataParallel.draws_by_row([item.step for item in optimised]):
                parallel.by_row = True
                parallel.share_stream()
            else:
                parallel.seed_rank_stream()
        return _run(
            model,
            train_batches,
            val_batches,
            val_fn,
            optimised,
            shuffle,
            state,
            epochs=n_epochs,
            grad_clip=grad_clip,
            patience=early_stopping_patience,
            checkpoint_path=checkpoint_path,
            checkpoint_every=checkpoint_every,
            progress=progress,
            max_steps=max_steps,
            single=single,
            epoch_end=epoch_end,
            parallel=parallel,
        )


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value > 0 and math.isfinite(value)


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
        >>> made = MADE(4, hidden_dims=[8], n_epochs=3, seed=0)
        >>> nll = lambda model, batch: -model.log_prob_under_mask(batch, 0).mean()
        >>> history = fit_with_model_settings(made, x, loss=nll, options={"n_epochs": 2})
        >>> len(history), made.n_iter_, made.fitted_
        (2, 2, True)
    """
    settings = {name: getattr(model, name) for name in setting_names}
    settings.update(renamed_options(f"{type(model).__name__}.fit", options or {}, stacklevel=4))
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


def _run(
    model: nn.Module,
    train_batches: _Batches,
    val_batches: _Batches | None,
    val_fn: Callable[[nn.Module, Any], torch.Tensor],
    optimised: list[_Optimised],
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
    single: bool,
    epoch_end: Callable[[nn.Module, dict], None] | None = None,
    parallel: DataParallel | None = None,
) -> list[dict]:
    # Every parameter some step updates, once each, for the end-of-epoch finiteness check.
    parameters = list({id(p): p for item in optimised for p in item.parameters}.values())
    bar = None
    if progress and (parallel is None or parallel.rank == 0):
        from probgen.core.progress import progress_bar

        bar = progress_bar(
            epochs, type(model).__name__, initial=state.epoch, unit="epoch", leave=True
        )
    model.train()
    try:
        while state.epoch < epochs and not state.stopped:
            if max_steps is not None and state.steps >= max_steps:
                break
            epoch_good_state = _clone_state(model)
            started = time.perf_counter()
            totals = [0.0] * len(optimised)
            counts = [0] * len(optimised)
            # Summed on the device and read once per epoch: no synchronisation per step.
            norm_totals: list[Any] = [0.0] * len(optimised)
            updates = [0] * len(optimised)
            for batch, n_local, n_global in _minibatches(train_batches, parallel, shuffle):
                for index, item in enumerate(optimised):
                    where = "" if single else f"step {item.step.name!r}: "
                    for _ in range(item.step.repeats):
                        # Only this step's gradients are cleared and used: a generator loss
                        # also reaches the discriminator, whose step clears them before its own.
                        item.optimizer.zero_grad(set_to_none=True)
                        try:
                            loss_value = _backward(item, model, batch, n_local, n_global, parallel)
                        except FitError as error:  # the model's own divergence test
                            _fail(model, epoch_good_state, state, f"{where}{error}", restore=True)
                        if not math.isfinite(loss_value):
                            _fail(model, epoch_good_state, state, f"{where}loss is {loss_value}")
                        if grad_clip is not None:
                            norm = torch.nn.utils.clip_grad_norm_(item.parameters, grad_clip)
                        elif not single:
                            norm = _grad_norm(item.parameters)
                        if not single:
                            norm_totals[index] = norm_totals[index] + norm.detach()
                            updates[index] += 1
                        item.optimizer.step()
                        if parallel is not None:
                            parallel.sync_buffers()
                        if item.step.after_step is not None:
                            try:
                                item.step.after_step(model)
                            except FitError as error:
                                _fail(
                                    model, epoch_good_state, state, f"{where}{error}", restore=True
                                )
                        totals[index] += loss_value * n_global
                        counts[index] += n_global
                state.steps += 1
                if max_steps is not None and state.steps >= max_steps:
                    break
            if not all(bool(torch.isfinite(p).all()) for p in parameters):
                _fail(model, epoch_good_state, state, "parameters became NaN or infinite")
            state.epoch += 1
            means = [total / max(count, 1) for total, count in zip(totals, counts)]
            record: dict[str, Any] = {
                "epoch": state.epoch,
                "train_loss": means[0] if single else sum(means),
                "val_log_prob": None,
                "lr": float(optimised[0].optimizer.param_groups[0]["lr"]),
                "seconds": 0.0,
                "steps": state.steps,
            }
            if not single:
                record["losses"] = {i.step.name: m for i, m in zip(optimised, means)}
                record["grad_norms"] = {
                    i.step.name: float(total) / max(count, 1)
                    for i, total, count in zip(optimised, norm_totals, updates)
                }
                record["lrs"] = {
                    i.step.name: float(i.optimizer.param_groups[0]["lr"]) for i in optimised
                }
            if epoch_end is not None:
                try:
                    epoch_end(model, record)
                except FitError as error:
                    state.epoch -= 1  # the epoch did not complete
                    _fail(model, epoch_good_state, state, str(error), restore=True)
            if val_batches is not None:
                value = _mean_log_prob(model, val_batches, val_fn, parallel)
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
            for item in optimised:
                schedule = item.schedule
                if schedule is None:
                    continue
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
            writes = parallel is None or parallel.writes_checkpoints
            if writes and checkpoint_path is not None and (
                state.epoch % checkpoint_every == 0 or state.epoch == epochs or state.stopped
            ):
                _write(checkpoint_path, model, optimised, shuffle, state)
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    if patience is not None and state.best_state is not None:
        model.load_state_dict(state.best_state)
    return list(state.history)


def _minibatches(
    batches: _Batches, parallel: DataParallel | None, shuffle: torch.Generator
) -> Any:
    """``(batch, local rows, global rows)`` per step: this rank's part of each global batch."""
    if parallel is not None:
        yield from parallel.iterate(shuffle)
        return
    for batch in batches.iterate(shuffle):
        size = _batch_size_of(batch)
        yield batch, size, size


def _backward(
    item: _Optimised,
    model: nn.Module,
    batch: Any,
    n_local: int,
    n_global: int,
    parallel: DataParallel | None,
) -> float:
    """Back-propagate one step's loss on `batch`; the (global) mean loss.

    Data-parallel, each rank weights its mean loss by its share of the global batch and the
    gradients are summed over the ranks, so they are the global batch's mean gradient.
    """
    if parallel is None:
        loss = item.step.loss(model, batch)
        value = float(loss.detach())
        if math.isfinite(value):
            loss.backward()
        return value
    weighted = torch.zeros(())
    if not parallel.by_row:
        if n_local:
            weighted = item.step.loss(model, batch) * (n_local / n_global)
            weighted.backward()
        return parallel.reduce_gradients(item.parameters, weighted)
    if n_local:
        with parallel.row_noise(n_global):
            weighted = item.step.loss(model, batch) * (n_local / n_global)
        weighted.backward()
    value = parallel.reduce_gradients(item.parameters, weighted)
    parallel.after_row_noise_step()
    return value


def _grad_norm(parameters: list[nn.Parameter]) -> torch.Tensor:
    """The global 2-norm of the parameters' gradients (as `clip_grad_norm_` measures it)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _fail(
    model: nn.Module,
    good_state: dict[str, torch.Tensor],
    state: _LoopState,
    reason: str,
    *,
    restore: bool = False,
) -> None:
    # `restore`: the model itself judged its (finite) parameters diverged; else only NaN or
    # infinite parameters are replaced by the epoch's starting ones.
    if restore or not all(
        bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point()
    ):
        model.load_state_dict(good_state)
    model.eval()
    raise FitError(
        f"{type(model).__name__} fit diverged at epoch {state.epoch + 1} (step {state.steps + 1}): "
        f"{reason}; the model keeps its last good parameters. Try a smaller learning_rate or "
        "grad_clip."
    )

