"""Training an RBM: the `fit` epoch loop, the learning-rate schedule, monitoring, divergence.

`RBMFitting` is a mixin of `probgen.boltzmann.rbm.RBM`; the per-batch updates are
`probgen.boltzmann.rbm_training.TrainingState`'s, which work on the parameter record
(`RBMParams`) rather than on the model. `history_` gets one dict per epoch: ``epoch``,
``learning_rate``, ``seconds``, the monitored figures and, with validation data, their
``validation_*`` counterparts.

Example:
    >>> import torch
    >>> from probgen.boltzmann.rbm import RBM
    >>> data = (torch.arange(40).reshape(10, 4) % 3 == 0).float()
    >>> rbm = RBM(4, 2, n_epochs=2, learning_rate_schedule="linear", seed=0).fit(data)
    >>> [(r["epoch"], r["learning_rate"]) for r in rbm.history_]
    [(1, 0.05), (2, 0.025)]
"""

from __future__ import annotations

import time
from typing import Any

import torch

from probgen.boltzmann.common import divergence
from probgen.boltzmann.rbm_functions import (
    enumerated_layer,
    exact_log_partition,
    free_energy,
    pseudo_log_likelihood,
)
from probgen.boltzmann.rbm_training import (
    LOG_VARIANCE_BOUNDS,
    TrainingSettings,
    TrainingState,
    parameter_list,
)
from probgen.core.errors import FitError

MONITORED_FIGURES = ("reconstruction_error", "pseudo_log_likelihood", "log_likelihood")
# Per-epoch exact log-likelihood monitoring only when enumeration costs at most this many
# numbers (2**units x width).
_MONITOR_ENUMERATION_BUDGET = 1 << 24


class RBMFitting:
    """`fit` and its helpers for an RBM (a mixin: it uses the model's `params()`)."""

    def fit(
        self,
        data: Any,
        *,
        validation_data: Any = None,
        n_epochs: int | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> RBMFitting:
        """Train by CD-k or PCD-k (with optional parallel tempering); returns self.

        Args:
            data: visible data (n, *event_shape).
            validation_data: optional held-out data monitored after every epoch.
            n_epochs: deprecated (set it in the constructor); overrides `n_epochs` for this call.
            seed: deprecated (set it in the constructor); overrides `seed` for this call.
            progress: deprecated (set it in the constructor); overrides `progress` for this
                call.

        Raises:
            DataError: malformed data.
            FitError: the parameters diverged; the model keeps the last good epoch's values.
        """
        x, _ = self._check_visible(data, "data")
        validation = None
        if validation_data is not None:
            validation, _ = self._check_visible(validation_data, "validation_data")
        epochs, generator, show = self._fit_arguments(n_epochs, seed, progress)
        with torch.no_grad():
            self._fit_tensor(
                x, validation=validation, n_epochs=epochs, generator=generator, progress=show
            )
        return self

    def _initialise(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Small random weights, zero hidden biases, visible biases at the data's base rates."""
        self.weights.copy_(
            torch.randn(
                self.weights.shape, generator=generator, dtype=self.dtype, device=self.device
            )
            * self.init_std
        )
        self.hidden_bias.zero_()
        if self.visible == "gaussian":
            mean = x.mean(0)
            log_variance = torch.log(x.var(0, unbiased=False).clamp_min(1e-4)).clamp(
                *LOG_VARIANCE_BOUNDS
            )
            self.visible_bias.copy_(mean)
            self.log_variance.copy_(log_variance)
            self.base_visible_bias.copy_(mean)
            self.base_log_variance.copy_(log_variance)
            return
        # Smoothed frequencies keep the logits of never-seen states finite.
        frequencies = (x.sum(0) + 1.0) / (x.shape[0] + 2.0)
        if self.visible == "bernoulli":
            logits = torch.log(frequencies) - torch.log1p(-frequencies)
        else:
            grouped = (x.sum(0) + 1.0).reshape(-1, self.n_categories)
            logits = torch.log(grouped / grouped.sum(-1, keepdim=True)).reshape(-1)
        self.visible_bias.copy_(logits)
        self.base_visible_bias.copy_(logits)

    def _monitored_figures(self) -> list[str]:
        if not isinstance(self.monitor, str):
            return list(self.monitor)
        figures = ["reconstruction_error"]
        if self.visible != "gaussian":
            figures.append("pseudo_log_likelihood")
        visible_enumerated = enumerated_layer(self.params()) == "visible"
        width = self.n_hidden if visible_enumerated else self.n_visible_units
        if self._enumerated_units() <= 22 and (1 << self._enumerated_units()) * width <= (
            _MONITOR_ENUMERATION_BUDGET
        ):
            figures.append("log_likelihood")
        return figures

    def _evaluate(self, figures: list[str], x: torch.Tensor) -> dict[str, float]:
        params = self.params()
        values: dict[str, float] = {}
        for figure in figures:
            if figure == "reconstruction_error":
                error = ((x - self._reconstruct_flat(x)) ** 2).sum(-1).mean()
                values[figure] = float(error)
            elif figure == "pseudo_log_likelihood":
                values[figure] = float(pseudo_log_likelihood(params, x).mean())
            elif figure == "log_likelihood":
                log_z = float(exact_log_partition(self.params(torch.float64)))
                values[figure] = float(
                    (-free_energy(self.params(torch.float64), x.double())).mean() - log_z
                )
        return values

    def _learning_rate_at(self, epoch: int, n_epochs: int) -> float:
        if self.learning_rate_schedule == "linear":
            return self.learning_rate * (n_epochs - epoch) / n_epochs
        if self.learning_rate_schedule == "exponential":
            return self.learning_rate * self.learning_rate_decay**epoch
        return self.learning_rate

    def _parameter_list(self) -> list[torch.Tensor]:
        return parameter_list(self.params())

    def training_settings(self) -> TrainingSettings:
        """The options the per-batch updates read, as the record `rbm_training` works on."""
        return TrainingSettings(
            method=self.method,
            cd_steps=self.cd_steps,
            n_temperatures=self.n_temperatures,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            learn_variance=self.learn_variance,
            variance_learning_rate_scale=self.variance_learning_rate_scale,
        )

    def _diverged(self) -> str | None:
        names = ("weights", "visible_bias", "hidden_bias", "log_variance")
        return divergence(
            zip(names, self._parameter_list()),
            self.max_abs_weight,
            f"max_abs_weight={self.max_abs_weight:g}",
        )

    def _fit_tensor(
        self,
        x: torch.Tensor,
        *,
        validation: torch.Tensor | None,
        n_epochs: int,
        generator: torch.Generator,
        progress: bool,
    ) -> None:
        from tqdm.auto import tqdm

        n_rows = x.shape[0]
        continuing = self.warm_start and self.fitted_
        if not continuing:
            self._initialise(x, generator)
            self.history_: list[dict[str, float]] = []
            self.n_iter_ = 0
        self._log_partition_cache = {}
        figures = self._monitored_figures()
        monitor_rows = x
        if n_rows > self.monitor_size:
            pick = torch.randperm(n_rows, generator=generator, device=x.device)[: self.monitor_size]
            monitor_rows = x[pick]
        monitor_validation = validation
        if validation is not None and validation.shape[0] > self.monitor_size:
            monitor_validation = validation[: self.monitor_size]
        batch_size = min(self.batch_size, n_rows)
        state = TrainingState(
            self.params(), self.base_rates(), self.training_settings(), batch_size, generator
        )
        epoch_bar = tqdm(
            range(n_epochs), desc=type(self).__name__, disable=not progress, leave=False
        )
        # Reused every epoch: the last good parameters and the shuffled data.
        snapshot = [torch.empty_like(tensor) for tensor in self._parameter_list()]
        shuffled = x.new_empty(x.shape)
        batch_starts = range(0, n_rows, batch_size)
        for local_epoch in epoch_bar:
            epoch = self.n_iter_
            learning_rate = self._learning_rate_at(local_epoch, n_epochs)
            for good, tensor in zip(snapshot, self._parameter_list()):
                good.copy_(tensor)
            started = time.perf_counter()
            order = torch.randperm(n_rows, generator=generator, device=x.device)
            torch.index_select(x, 0, order, out=shuffled)
            for start in batch_starts:
                state.update(shuffled[start : start + batch_size], learning_rate)
            elapsed = time.perf_counter() - started
            problem = self._diverged()
            if problem is not None:
                for tensor, good in zip(self._parameter_list(), snapshot):
                    tensor.copy_(good)
                self._log_partition_cache = {}
                if self.n_iter_ > 0:
                    self._mark_fitted()
                raise FitError(
                    f"RBM fit diverged in epoch {epoch + 1}: {problem}; the parameters of the "
                    f"last good epoch ({self.n_iter_}) are kept. Lower learning_rate or add "
                    "weight_decay."
                )
            self.n_iter_ += 1
            record = {"epoch": self.n_iter_, "learning_rate": learning_rate, "seconds": elapsed}
            record.update(self._evaluate(figures, monitor_rows))
            if monitor_validation is not None:
                for name, value in self._evaluate(figures, monitor_validation).items():
                    record[f"validation_{name}"] = value
            self.history_.append(record)
            if progress:
                epoch_bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in record.items() if k not in ("epoch",)}
                )
        self._log_partition_cache = {}
        self._mark_fitted()

