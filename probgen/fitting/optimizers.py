"""Optimisers, learning-rate schedules and the named steps of the gradient loop.

A `Step` is one loss minimised over one group of the model's parameters with its own
optimiser: `fit_model(model, data, loss=...)` runs a single step over every trainable
parameter; `fit_model(model, data, steps=[...])` runs several in turn on each minibatch (an
adversarial model: a discriminator step repeated `n_critic` times, then a generator step).

Example:
    >>> import torch
    >>> from probgen.fitting.optimizers import Step
    >>> step = Step("critic", lambda m, b: m(b).mean(), parameters="0", learning_rate=1e-4,
    ...             betas=(0.5, 0.9), repeats=5)
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    >>> [tuple(p.shape) for p in step.parameter_group(net)]
    [(2, 2), (2,)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn

from probgen.core.errors import DataError

_OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
_SCHEDULES = ("cosine", "exponential", "plateau")

LossFn = Callable[[nn.Module, Any], torch.Tensor]
# A step's parameters: a submodule's name, `fn(model) -> parameters`, or the parameters.
ParameterGroup = Union[str, Callable[[nn.Module], Iterable[nn.Parameter]], Iterable[nn.Parameter]]


@dataclass(frozen=True)
class Step:
    """One named loss of the gradient loop, minimised over its own parameters and optimiser.

    Args:
        name: the step's name: its loss is recorded as `history[i]["losses"][name]` and its
            optimiser saved under that name in checkpoints (no "/" in it).
        loss: `loss(model, batch) -> scalar tensor` to minimise.
        parameters: the parameters this step updates: the name of a submodule of the model
            (`model.get_submodule(name)`), `fn(model) -> parameters`, or the parameters
            themselves; None for every trainable parameter.
        learning_rate: this step's learning rate; None for `fit_model`'s `learning_rate`.
        betas: Adam's `(beta1, beta2)` for this step; None for torch's defaults.
        optimizer: "adam", "adamw", "sgd", "rmsprop" or `fn(parameters) -> Optimizer`; None
            for `fit_model`'s `optimizer`.
        weight_decay: L2 penalty for this step; None for `fit_model`'s `weight_decay`.
        repeats: how many times the step runs on each minibatch (e.g. `n_critic`).
        after_step: `fn(model) -> None` called after each of this step's optimiser updates
            (e.g. an exponential moving average of the generator's weights); it may raise
            `FitError` to stop a diverging fit.
    """

    name: str
    loss: LossFn
    parameters: ParameterGroup | None = None
    learning_rate: float | None = None
    betas: tuple[float, float] | None = None
    optimizer: str | Callable[..., torch.optim.Optimizer] | None = None
    weight_decay: float | None = None
    repeats: int = 1
    after_step: Callable[[nn.Module], None] | None = None

    def parameter_group(self, model: nn.Module) -> list[nn.Parameter]:
        """The trainable parameters this step updates, in the model's order."""
        if self.parameters is None:
            chosen: Iterable[nn.Parameter] = model.parameters()
        elif isinstance(self.parameters, str):
            try:
                chosen = model.get_submodule(self.parameters).parameters()
            except AttributeError as error:
                raise DataError(
                    f"step {self.name!r}: {type(model).__name__} has no submodule "
                    f"{self.parameters!r}"
                ) from error
        elif callable(self.parameters):
            chosen = self.parameters(model)
        else:
            chosen = self.parameters
        return [p for p in chosen if p.requires_grad]


def check_steps(steps: Sequence[Step]) -> tuple[Step, ...]:
    """Validate the steps given to `fit_model`: named uniquely, with callable losses.

    Raises:
        DataError: no steps, a repeated or malformed name, a bad loss or repeat count.
    """
    steps = tuple(steps)
    if not steps:
        raise DataError("steps must hold at least one Step")
    names = set()
    for step in steps:
        if not isinstance(step, Step):
            raise DataError(f"steps must be Step instances; got {type(step).__name__}")
        if not step.name or "/" in step.name or step.name in names:
            raise DataError(f"step names must be unique, non-empty, without '/': {step.name!r}")
        names.add(step.name)
        if not callable(step.loss):
            raise DataError(f"step {step.name!r}: loss must be callable loss(model, batch)")
        if not (isinstance(step.repeats, int) and step.repeats >= 1):
            raise DataError(f"step {step.name!r}: repeats must be a positive int")
        if step.after_step is not None and not callable(step.after_step):
            raise DataError(f"step {step.name!r}: after_step must be callable fn(model)")
    return steps


def _make_optimizer(
    optimizer: str | Callable[..., torch.optim.Optimizer],
    parameters: list[nn.Parameter],
    lr: float,
    weight_decay: float,
    betas: Sequence[float] | None = None,
) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(parameters)
    if betas is not None and optimizer not in ("adam", "adamw"):
        raise DataError(f"betas apply to 'adam' and 'adamw' only, not to {optimizer!r}")
    # The multi-tensor ("foreach") update, which torch picks by itself only on GPUs: the same
    # arithmetic as the per-parameter loop (the same updates bit for bit), in a few batched
    # calls instead of about ten small ones per parameter tensor, which dominate on a CPU.
    options: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay, "foreach": True}
    if optimizer in ("adam", "adamw") and betas is not None:
        options["betas"] = tuple(float(b) for b in betas)
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


class _Optimised:
    """A step at run time: its parameters, its optimiser and its schedule."""

    def __init__(
        self,
        step: Step,
        parameters: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        schedule: Any,
    ) -> None:
        self.step = step
        self.parameters = parameters
        self.optimizer = optimizer
        self.schedule = schedule
