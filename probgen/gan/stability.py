"""Training stability of adversarial fits: diagnostics, a divergence test, EMA of weights.

GAN training is the part the field finds hard, so a fit records, per epoch, what shows whether
it is healthy (the gradient loop adds each step's mean loss and gradient norm):

* ``discriminator_accuracy``: the fraction of real (packed) samples scored positive and fake
  ones scored negative (non-saturating and hinge losses); near 1 the generator gets no signal,
  near 0.5 the discriminator is fooled;
* ``critic_gap``: mean critic score of real minus fake samples (WGAN-GP), the critic's estimate
  of the Wasserstein-1 distance;
* ``gradient_penalty`` (WGAN-GP) and ``max_abs_score``.

`check_scores` stops a fit whose discriminator scores stop being finite or explode past a
threshold with `FitError` (the shared loop then restores the parameters the epoch started
from). `update_ema` keeps an exponential moving average of the generator's weights (Yazıcı et
al. 2019), which `probgen.GAN` samples from when its ``ema`` setting is on.

Example:
    >>> import torch
    >>> from probgen.gan.stability import Diagnostics, update_ema
    >>> log = Diagnostics()
    >>> log.add(discriminator_accuracy=torch.tensor(0.5))
    >>> log.add(discriminator_accuracy=torch.tensor(1.0))
    >>> log.flush()
    {'discriminator_accuracy': 0.75}
    >>> net, average = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(1.0), average.weight.fill_(0.0)
    >>> update_ema(average, net, decay=0.9)
    >>> round(float(average.weight.detach()), 4)
    0.1
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from probgen.core.errors import FitError
from probgen.fitting.loop import fit_model
from probgen.fitting.optimizers import Step

__all__ = ["Diagnostics", "check_scores", "update_ema", "ema_decay", "fit_adversarial"]


class Diagnostics:
    """Running means of per-step figures over an epoch, kept as tensors (no sync per step)."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, **values: Tensor) -> None:
        """Add one step's value of each named figure."""
        for name, value in values.items():
            value = value.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value
            self._counts[name] = self._counts.get(name, 0) + 1

    def flush(self) -> dict[str, float]:
        """The epoch's means, by name; then start afresh."""
        means = {name: float(total) / self._counts[name] for name, total in self._sums.items()}
        self._sums, self._counts = {}, {}
        return means


def check_scores(scores: Tensor, threshold: float, what: str = "discriminator scores") -> Tensor:
    """Largest absolute score; `FitError` when it is not finite or exceeds `threshold`.

    Args:
        scores: the scores of a step (already centred for a WGAN critic, whose output has a
            free offset).
        threshold: the largest absolute score still taken as healthy.
        what: how the message names the scores.

    Returns:
        The largest absolute score (a 0-dimensional tensor).
    """
    largest = scores.detach().abs().max()
    value = float(largest)
    if not math.isfinite(value) or value > threshold:
        raise FitError(
            f"the {what} exploded (largest magnitude {value:.3g} > divergence_threshold="
            f"{threshold:g})"
        )
    return largest


def ema_decay(decay: float, n_updates: int) -> float:
    """The decay used at update number `n_updates` (1, 2, ...): ``min(decay, (1+t)/(10+t))``.

    The warm-up (as TensorFlow's `ExponentialMovingAverage` with `num_updates`) keeps the
    average from dwelling on the random initial weights in short fits.
    """
    return min(float(decay), (1.0 + n_updates) / (10.0 + n_updates))


@torch.no_grad()
def update_ema(average: nn.Module, current: nn.Module, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * current`` for parameters; buffers copied.

    Buffers (batch-norm running statistics) are copied rather than averaged: they describe
    the current weights' activations.
    """
    targets = list(average.parameters())
    sources = [p.detach() for p in current.parameters()]
    if targets:
        torch._foreach_lerp_(targets, sources, 1.0 - float(decay))
    for target, source in zip(average.buffers(), current.buffers()):
        target.copy_(source)


def fit_adversarial(
    gan: Any,
    data: Any,
    discriminator_step: Callable[[Any, Any], Tensor],
    generator_step: Callable[[Any, Any], Tensor],
    **settings: Any,
) -> list[dict]:
    """The two-player fit the GAN family shares, through the shared loop; returns the history.

    The discriminator (critic) step runs `gan.n_critic` times per minibatch, then the generator
    step, each with its own learning rate (`gan.discriminator_learning_rate`,
    `gan.generator_learning_rate`) and `gan.betas`; with `gan.ema` set, each generator update
    also updates `gan.generator_ema`. `gan._diagnostics` (a fresh `Diagnostics`) collects the
    steps' figures, added to each epoch's record. `settings` go to `fit_model`.
    """
    steps = [
        Step(
            "discriminator",
            discriminator_step,
            parameters="discriminator",
            learning_rate=gan.discriminator_learning_rate,
            betas=gan.betas,
            repeats=gan.n_critic,
        ),
        Step(
            "generator",
            generator_step,
            parameters="generator",
            learning_rate=gan.generator_learning_rate,
            betas=gan.betas,
            after_step=_ema_step if gan.ema is not None else None,
        ),
    ]
    gan._diagnostics = Diagnostics()
    return fit_model(gan, data, steps=steps, epoch_end=_record_diagnostics, **settings)


def _ema_step(gan: Any) -> None:
    gan.ema_updates += 1
    update_ema(gan.generator_ema, gan.generator, ema_decay(gan.ema, int(gan.ema_updates)))


def _record_diagnostics(gan: Any, record: dict) -> None:
    record.update(gan._diagnostics.flush())
