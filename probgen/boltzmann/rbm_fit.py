"""Training an RBM: the `fit` epoch loop, the learning-rate schedule, monitoring, divergence.

`RBMFitting` is a mixin of `probgen.boltzmann.rbm.RBM`; the per-batch updates are
`probgen.boltzmann.rbm_training.TrainingState`'s, which work on the parameter record
(`RBMParams`) rather than on the model. `history_` gets one dict per epoch: ``epoch``,
``learning_rate``, ``seconds``, the monitored figures, with validation data their
``validation_*`` counterparts, and with parallel tempering ``swap_acceptance``.

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
from probgen.boltzmann.sharded import RowShard, column_moments, summed
from probgen.core.errors import FitError
from probgen.core.progress import progress_bar
from probgen.core.threads import small_op_loop


def _epoch_work(model: Any, x: torch.Tensor, **_: Any) -> int:
    """Per-step work of an epoch (`probgen.core.threads`): one mini-batch through the weights."""
    return min(model.batch_size, x.shape[0]) * int(model.weights.numel())


def _fit_work(model: Any, data: Any, *_: Any, **__: Any) -> int | None:
    """`_epoch_work` of `fit`'s raw data (None when its row count is unknown)."""
    try:
        rows = len(data)
    except TypeError:
        return None
    return min(model.batch_size, max(rows, 1)) * int(model.weights.numel())

MONITORED_FIGURES = ("reconstruction_error", "pseudo_log_likelihood", "log_likelihood")
# monitor="auto" records only the reconstruction error, of one row in AUTO_MONITOR_EVERY_ROWS
# (at most monitor_size rows): one reconstruction costs about a quarter of a training row, so
# this is about 3% of an epoch (1.3 ms for 1000 digits rows against a 9 ms epoch of
# RBM(64, 256)). The exact pseudo-likelihood costs ~70x a training row there (10x an epoch at
# 1000 rows) and exact log Z up to hundreds of epochs, so they are recorded only on request.
AUTO_MONITOR_EVERY_ROWS = 10


class RBMFitting:
    """`fit` and its helpers for an RBM (a mixin: it uses the model's `params()`)."""

    # the whole call, not only the epochs: checking and copying the data are small ops too,
    # and at torch's 2 threads beside another busy process they stalled for tens of ms
    @small_op_loop(_fit_work)
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

        Under `torch.distributed` (`probgen.distributed.is_distributed()`), `data` and
        `validation_data` are this rank's rows: every rank makes the updates of a single
        process on all ranks' rows (in rank order) with the same seed, up to rounding
        (`probgen.boltzmann.sharded`).

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

    def _initialise(
        self, x: torch.Tensor, generator: torch.Generator, shard: RowShard | None = None
    ) -> None:
        """Small random weights, zero hidden biases, visible biases at the data's base rates.

        With `shard`, the base rates are those of all ranks' rows.
        """
        self.weights.copy_(
            torch.randn(
                self.weights.shape, generator=generator, dtype=self.dtype, device=self.device
            )
            * self.init_std
        )
        self.hidden_bias.zero_()
        if self.visible == "gaussian":
            if shard is None:
                mean, variance = x.mean(0), x.var(0, unbiased=False)
            else:
                mean, variance = column_moments(x, shard.total)
            log_variance = torch.log(variance.clamp_min(1e-4)).clamp(
                *LOG_VARIANCE_BOUNDS
            )
            self.visible_bias.copy_(mean)
            self.log_variance.copy_(log_variance)
            self.base_visible_bias.copy_(mean)
            self.base_log_variance.copy_(log_variance)
            return
        # Smoothed frequencies keep the logits of never-seen states finite.
        counts = x.sum(0) if shard is None else summed([x.sum(0)])[0]
        n_rows = x.shape[0] if shard is None else shard.total
        frequencies = (counts + 1.0) / (n_rows + 2.0)
        if self.visible == "bernoulli":
            logits = torch.log(frequencies) - torch.log1p(-frequencies)
        else:
            grouped = (counts + 1.0).reshape(-1, self.n_categories)
            logits = torch.log(grouped / grouped.sum(-1, keepdim=True)).reshape(-1)
        self.visible_bias.copy_(logits)
        self.base_visible_bias.copy_(logits)

    def _monitored_figures(self) -> list[str]:
        if not isinstance(self.monitor, str):
            return list(self.monitor)
        return ["reconstruction_error"]

    def _monitor_subsets(
        self,
        x: torch.Tensor,
        validation: torch.Tensor | None,
        generator: torch.Generator,
        shard: RowShard | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fixed rows monitored every epoch: training rows, then validation rows.

        With `shard`, this rank's part of the rows a single process would monitor among all
        ranks' rows (`x` and `validation` are this rank's).
        """
        if shard is not None:
            return self._sharded_monitor_subsets(x, validation, generator, shard)
        n_rows = x.shape[0]
        monitor_rows = x
        if n_rows > self.monitor_size:
            pick = torch.randperm(n_rows, generator=generator, device=x.device)[: self.monitor_size]
            monitor_rows = x[pick]
        limit = self.monitor_size
        if isinstance(self.monitor, str):
            limit = min(limit, -(-n_rows // AUTO_MONITOR_EVERY_ROWS))
            # Evenly spaced rows: no draw from the training generator, so seeded fits are
            # the same whatever is monitored.
            monitor_rows = _evenly_spaced(monitor_rows, limit)
        if validation is not None and validation.shape[0] > limit:
            validation = _evenly_spaced(validation[: self.monitor_size], limit)
        return monitor_rows, validation

    def _sharded_monitor_subsets(
        self,
        x: torch.Tensor,
        validation: torch.Tensor | None,
        generator: torch.Generator,
        shard: RowShard,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # The selection of `_monitor_subsets`, made on global row numbers.
        rows = torch.arange(shard.total, device=x.device)
        if shard.total > self.monitor_size:
            pick = torch.randperm(shard.total, generator=generator, device=x.device)
            rows = rows[pick[: self.monitor_size]]
        limit = self.monitor_size
        if isinstance(self.monitor, str):
            limit = min(limit, -(-shard.total // AUTO_MONITOR_EVERY_ROWS))
            rows = _evenly_spaced(rows, limit)
        monitor_rows = x[shard.local_rows(rows)]
        if validation is None:
            return monitor_rows, None
        held = RowShard.of(validation.shape[0])
        assert held is not None
        validation_rows = torch.arange(held.total, device=x.device)
        if held.total > limit:
            validation_rows = _evenly_spaced(validation_rows[: self.monitor_size], limit)
        return monitor_rows, validation[held.local_rows(validation_rows)]

    def _evaluate(
        self, figures: list[str], x: torch.Tensor, sharded: bool = False
    ) -> dict[str, float]:
        """The monitored figures, means over the rows `x` (with `sharded`: over all ranks'
        rows, `x` being this rank's)."""
        if sharded:
            return self._evaluate_sharded(figures, x)
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

    def _evaluate_sharded(self, figures: list[str], x: torch.Tensor) -> dict[str, float]:
        params = self.params()
        sums: list[torch.Tensor] = []
        log_z = 0.0
        for figure in figures:
            if figure == "log_likelihood":
                log_z = float(exact_log_partition(self.params(torch.float64)))
            if x.shape[0] == 0:  # none of the monitored rows is on this rank
                sums.append(torch.zeros((), dtype=torch.float64, device=x.device))
            elif figure == "reconstruction_error":
                sums.append(((x - self._reconstruct_flat(x)) ** 2).sum(-1).double().sum())
            elif figure == "pseudo_log_likelihood":
                sums.append(pseudo_log_likelihood(params, x).double().sum())
            elif figure == "log_likelihood":
                sums.append((-free_energy(self.params(torch.float64), x.double())).sum())
        totals = torch.stack([*sums, x.new_tensor(x.shape[0], dtype=torch.float64)])
        summed([totals])
        count = float(totals[-1])
        return {
            figure: float(total) / count - (log_z if figure == "log_likelihood" else 0.0)
            for figure, total in zip(figures, totals[:-1])
        }

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

    @small_op_loop(_epoch_work)
    def _fit_tensor(
        self,
        x: torch.Tensor,
        *,
        validation: torch.Tensor | None,
        n_epochs: int,
        generator: torch.Generator,
        progress: bool,
    ) -> None:
        shard = RowShard.of(x.shape[0])  # None in a single process
        n_rows = x.shape[0] if shard is None else shard.total
        continuing = self.warm_start and self.fitted_
        if not continuing:
            self._initialise(x, generator, shard)
            self.history_: list[dict[str, float]] = []
            self.n_iter_ = 0
        self._log_partition_cache = {}
        figures = self._monitored_figures()
        monitor_rows, monitor_validation = self._monitor_subsets(
            x, validation, generator, shard
        )
        batch_size = min(self.batch_size, n_rows)
        state = TrainingState(
            self.params(),
            self.base_rates(),
            self.training_settings(),
            batch_size,
            generator,
            sharded=shard is not None,
        )
        epoch_bar = progress_bar(n_epochs, type(self).__name__, progress)
        # Reused every epoch: the last good parameters and the shuffled data.
        snapshot = [torch.empty_like(tensor) for tensor in self._parameter_list()]
        shuffled = x.new_empty(x.shape) if shard is None else x
        batch_starts = range(0, n_rows, batch_size)
        for local_epoch in range(n_epochs):
            epoch = self.n_iter_
            learning_rate = self._learning_rate_at(local_epoch, n_epochs)
            for good, tensor in zip(snapshot, self._parameter_list()):
                good.copy_(tensor)
            started = time.perf_counter()
            order = torch.randperm(n_rows, generator=generator, device=x.device)
            if shard is None:
                torch.index_select(x, 0, order, out=shuffled)
                for start in batch_starts:
                    state.update(shuffled[start : start + batch_size], learning_rate)
            else:  # each rank updates with its rows of the batch; the data term is summed
                for start in batch_starts:
                    chosen = order[start : start + batch_size]
                    mine = (chosen >= shard.offset) & (chosen < shard.offset + shard.n_local)
                    state.update(
                        x[chosen[mine] - shard.offset],
                        learning_rate,
                        batch=chosen.shape[0],
                        rows=mine.nonzero().squeeze(1),
                    )
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
            swap_acceptance = state.take_swap_acceptance()
            if swap_acceptance is not None:
                record["swap_acceptance"] = swap_acceptance
            record.update(self._evaluate(figures, monitor_rows, shard is not None))
            if monitor_validation is not None:
                validation_figures = self._evaluate(figures, monitor_validation, shard is not None)
                for name, value in validation_figures.items():
                    record[f"validation_{name}"] = value
            self.history_.append(record)
            epoch_bar.update(1)
            if progress:
                epoch_bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in record.items() if k not in ("epoch",)}
                )
        epoch_bar.close()
        self._log_partition_cache = {}
        self._mark_fitted()



def _evenly_spaced(rows: torch.Tensor, count: int) -> torch.Tensor:
    """`count` rows spread evenly over `rows` (all of them when there are no more)."""
    if rows.shape[0] <= count:
        return rows
    index = torch.linspace(0, rows.shape[0] - 1, count, device=rows.device).round().long()
    return rows[index]
