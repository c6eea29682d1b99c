"""Restricted Boltzmann machines: CD/PCD training, exact and AIS partition functions.

`RBM` is the `nn.Module` that owns the parameters and speaks the density contract; its `fit`
loop and monitoring live in `rbm_fit` (the per-batch updates in `rbm_training`), its Gibbs
interface and exact sampling in `rbm_sampling`, and the algorithms are pure tensor functions
in `rbm_functions`.

Example:
    >>> import torch
    >>> from probgen.boltzmann.rbm import RBM
    >>> data = (torch.rand(256, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    >>> rbm = RBM(6, 3, n_epochs=2, seed=0).fit(data)
    >>> rbm.log_prob_kind.value, tuple(rbm.log_prob(data[:4]).shape)
    ('exact', (4,))
    >>> round(float(rbm.log_prob(rbm.enumerate_support()).exp().sum()), 4)
    1.0
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probgen.boltzmann.common import (
    EnergyModel,
    LogPartition,
    binary_codes,
    check_binary,
    check_fraction,
    check_positive_float,
)
from probgen.boltzmann.rbm_fit import MONITORED_FIGURES, RBMFitting
from probgen.boltzmann.rbm_functions import (
    BaseRates,
    RBMParams,
    ais_log_partition,
    bernoulli,
    exact_log_partition,
    free_energy,
    hidden_preactivation,
    pseudo_log_likelihood,
    sample_visible,
    visible_mean,
    visible_preactivation,
)
from probgen.boltzmann.rbm_sampling import RBMSampling
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError

VISIBLE_TYPES = ("bernoulli", "gaussian", "categorical")
TRAINING_METHODS = ("cd", "pcd")
LEARNING_RATE_SCHEDULES = ("constant", "linear", "exponential")


# ---- the model ---------------------------------------------------------------------------


class RBM(RBMSampling, RBMFitting, EnergyModel):
    """A restricted Boltzmann machine with binary hidden units.

    Args:
        n_visible: number of visible variables (for categorical units: of one-hot groups).
        n_hidden: number of binary hidden units (>= 1).
        visible: ``"bernoulli"`` ({0,1} data), ``"gaussian"`` (real data; learned variances
            when `learn_variance`; standardise the data and prefer ``method="cd"`` or a small
            learning rate, since the effective step grows as the variances shrink) or
            ``"categorical"`` (one-hot data of shape (n, n_visible, n_categories)).
        n_categories: states per categorical variable (only with ``visible="categorical"``).
        learning_rate: step size of the stochastic gradient.
        n_epochs: passes over the data per `fit`.
        batch_size: rows per update; updates are averages over the batch.
        method: ``"pcd"`` (persistent chains, Tieleman 2008) or ``"cd"`` (chains restart at
            the data, Hinton 2002).
        cd_steps: Gibbs sweeps per update (the k of CD-k / PCD-k).
        momentum: classical momentum on the updates (0 disables it).
        weight_decay: L2 penalty on the weights.
        learning_rate_schedule: ``"constant"``, ``"linear"`` (decays to learning_rate /
            n_epochs) or ``"exponential"`` (times `learning_rate_decay` each epoch).
        learning_rate_decay: factor of the exponential schedule.
        n_temperatures: > 1 samples the negative phase by parallel tempering (PCD only) with
            that many tempered chains per batch row, from the model (beta = 1) to the
            base-rate model (beta = 0), swapping neighbours after every sweep.
        learn_variance: learn Gaussian visible variances (else they stay at the data's).
        variance_learning_rate_scale: the variances' learning rate relative to the others.
        init_std: standard deviation of the initial weights.
        monitor: figures recorded in `history_` after every epoch. ``"auto"`` records the
            ``"reconstruction_error"`` of a fixed tenth of the rows (at most `monitor_size`),
            which costs a few percent of an epoch. A list chooses among
            ``"reconstruction_error"``, ``"pseudo_log_likelihood"`` (exact; about 70 training
            rows' work per monitored row with 64 visible units, so ~10x an epoch on 1000 rows)
            and ``"log_likelihood"`` (exact log Z: only where enumeration is cheap, and it can
            still cost many epochs), each over `monitor_size` rows. ``()`` or None records nothing.
        monitor_size: at most this many rows (a fixed random subset of the training data,
            and the first validation rows) are monitored.
        progress: show a tqdm progress bar over epochs.
        exact_max_units: log_prob is exact (EXACT kind) when the enumerated layer has at most
            this many units; beyond it log_prob uses AIS (ESTIMATE kind).
        ais_runs, ais_betas, ais_schedule, ais_seed: the AIS settings `log_prob` uses.
        max_abs_weight: a fit whose parameters exceed this magnitude (or become NaN) has
            diverged: it stops with `FitError` and keeps the last good parameters.
        warm_start: continue from the current parameters when `fit` is called again.
        seed: seed of initialisation and training (None: fresh randomness).

    Attributes:
        history_: one dict per epoch (``epoch``, ``learning_rate``, ``seconds`` and the
            monitored figures; ``validation_*`` too when `fit` gets validation data;
            ``swap_acceptance``, the share of tempering swaps accepted, with n_temperatures > 1).
        n_iter_: epochs completed.

    Example:
        >>> import torch
        >>> data = (torch.rand(200, 8, generator=torch.Generator().manual_seed(1)) > 0.3).float()
        >>> rbm = RBM(8, 4, method="cd", n_epochs=3, seed=0).fit(data)
        >>> rbm.sample(5, seed=0).shape, rbm.transform(data[:2]).shape
        (torch.Size([5, 8]), torch.Size([2, 4]))
    """

    fitted_attributes = ("history_", "n_iter_")
    distributed_fit = True  # data term summed over all ranks' rows (probgen.boltzmann.sharded)

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        visible: str = "bernoulli",
        *,
        n_categories: int | None = None,
        learning_rate: float = 0.05,
        n_epochs: int = 20,
        batch_size: int = 64,
        method: str = "pcd",
        cd_steps: int = 1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        learning_rate_schedule: str = "constant",
        learning_rate_decay: float = 0.95,
        n_temperatures: int = 1,
        learn_variance: bool = True,
        variance_learning_rate_scale: float = 0.1,
        init_std: float = 0.01,
        monitor: str | list[str] | tuple[str, ...] | None = "auto",
        monitor_size: int = 1000,
        progress: bool = False,
        exact_max_units: int = 20,
        ais_runs: int = 100,
        ais_betas: int = 10000,
        ais_schedule: str = "piecewise",
        ais_seed: int = 0,
        max_abs_weight: float = 1e4,
        warm_start: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.n_visible = check_positive_int(n_visible, "n_visible")
        self.n_hidden = check_positive_int(n_hidden, "n_hidden")
        self.visible = check_choice(visible, "visible", VISIBLE_TYPES)
        if self.visible == "categorical":
            if n_categories is None:
                raise DataError("n_categories is required with visible='categorical'")
            self.n_categories = check_positive_int(n_categories, "n_categories", minimum=2)
        else:
            if n_categories not in (None, 1):
                raise DataError(
                    f"n_categories only applies to visible='categorical', got {n_categories!r}"
                )
            self.n_categories = 1
        self.learning_rate = check_positive_float(learning_rate, "learning_rate")
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.method = check_choice(method, "method", TRAINING_METHODS)
        self.cd_steps = check_positive_int(cd_steps, "cd_steps")
        self.momentum = check_fraction(momentum, "momentum")
        self.weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)
        self.learning_rate_schedule = check_choice(
            learning_rate_schedule, "learning_rate_schedule", LEARNING_RATE_SCHEDULES
        )
        self.learning_rate_decay = check_positive_float(learning_rate_decay, "learning_rate_decay")
        self.n_temperatures = check_positive_int(n_temperatures, "n_temperatures")
        if self.n_temperatures > 1 and self.method != "pcd":
            raise DataError("n_temperatures > 1 (parallel tempering) needs method='pcd'")
        self.learn_variance = bool(learn_variance)
        self.variance_learning_rate_scale = check_positive_float(
            variance_learning_rate_scale, "variance_learning_rate_scale", allow_zero=True
        )
        self.init_std = check_positive_float(init_std, "init_std")
        if monitor is None:
            monitor = ()
        elif not isinstance(monitor, str | list | tuple):
            raise DataError(
                f"monitor must be 'auto', a list of {MONITORED_FIGURES} or None, got {monitor!r}"
            )
        self.monitor = monitor if isinstance(monitor, str) else list(monitor)
        if isinstance(self.monitor, str):
            check_choice(self.monitor, "monitor", ("auto",))
        else:
            for name in self.monitor:
                check_choice(name, "monitor", MONITORED_FIGURES)
        self.monitor_size = check_positive_int(monitor_size, "monitor_size")
        self.progress = bool(progress)
        self._store_partition_settings(
            exact_max_units, ais_runs, ais_betas, ais_schedule, ais_seed, max_abs_weight
        )
        self.warm_start = bool(warm_start)
        self.seed = seed

        width = self.n_visible * self.n_categories
        self.n_visible_units = width
        if self.visible == "categorical":
            self.event_shape = torch.Size([self.n_visible, self.n_categories])
        else:
            self.event_shape = torch.Size([self.n_visible])
        self.weights = nn.Parameter(torch.zeros(width, self.n_hidden), requires_grad=False)
        self.visible_bias = nn.Parameter(torch.zeros(width), requires_grad=False)
        self.hidden_bias = nn.Parameter(torch.zeros(self.n_hidden), requires_grad=False)
        if self.visible == "gaussian":
            self.log_variance = nn.Parameter(torch.zeros(width), requires_grad=False)
            self.register_buffer("base_log_variance", torch.zeros(width))
        else:
            self.log_variance = None
            self.base_log_variance = None
        self.register_buffer("base_visible_bias", torch.zeros(width))
        self._init_log_partition()

    # ---- configuration ---------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        # n_categories is stored as 1 for non-categorical units but was given (and saved) as None.
        config = super().get_config()
        config["n_categories"] = self.n_categories if self.visible == "categorical" else None
        return config

    # ---- tensors as tuples -------------------------------------------------------------------
    def params(self, dtype: torch.dtype | None = None) -> RBMParams:
        """The parameters as an `RBMParams` tuple (detached; cast to `dtype` if given)."""
        params = RBMParams(
            self.visible,
            self.n_categories,
            self.weights,
            self.visible_bias,
            self.hidden_bias,
            self.log_variance,
        )
        return params.to(dtype) if dtype is not None else params

    def set_parameters(
        self,
        *,
        weights: Any = None,
        visible_bias: Any = None,
        hidden_bias: Any = None,
        log_variance: Any = None,
    ) -> RBM:
        """Set parameters by hand (those given) and mark the model fitted; returns self.

        Shapes: weights (n_visible_units, n_hidden), visible_bias and log_variance
        (n_visible_units,), hidden_bias (n_hidden,), where n_visible_units is
        n_visible * n_categories. The base-rate model (AIS start) becomes the independent model
        with the given visible biases (and variances).
        """
        values = {
            "weights": (weights, (self.n_visible_units, self.n_hidden)),
            "visible_bias": (visible_bias, (self.n_visible_units,)),
            "hidden_bias": (hidden_bias, (self.n_hidden,)),
            "log_variance": (log_variance, (self.n_visible_units,)),
        }
        if log_variance is not None and self.visible != "gaussian":
            raise DataError("log_variance only applies to visible='gaussian'")
        with torch.no_grad():
            for name, (value, shape) in values.items():
                if value is None:
                    continue
                tensor = as_tensor(value, name)
                if tuple(tensor.shape) != shape:
                    raise DataError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")
                getattr(self, name).copy_(tensor.to(device=self.device, dtype=self.dtype))
            self.base_visible_bias.copy_(self.visible_bias)
            if self.visible == "gaussian":
                self.base_log_variance.copy_(self.log_variance)
        self._mark_set_by_hand()
        return self

    def base_rates(self, dtype: torch.dtype | None = None) -> BaseRates:
        """The base-rate model (fitted to the data's marginals by `fit`)."""
        dtype = dtype or self.dtype
        log_variance = self.base_log_variance
        return BaseRates(
            self.base_visible_bias.to(dtype),
            None if log_variance is None else log_variance.to(dtype),
        )

    def _enumerated_units(self) -> int:
        if self.visible == "bernoulli":
            return min(self.n_visible_units, self.n_hidden)
        return self.n_hidden

    # ---- input checking ----------------------------------------------------------------------
    def _check_visible(self, x: Any, name: str = "x") -> tuple[torch.Tensor, torch.Size]:
        """Validate visible data; return it flattened to (n, n_visible_units) and batch shape."""
        tensor = as_tensor(x, name)
        event_dims = len(self.event_shape)
        if tensor.dim() < event_dims or tuple(tensor.shape[tensor.dim() - event_dims :]) != tuple(
            self.event_shape
        ):
            if self.visible == "categorical":
                raise DataError(
                    f"{name} has shape {tuple(tensor.shape)}; categorical visible units need "
                    f"one-hot data of shape (n, {self.n_visible}, {self.n_categories})"
                )
            columns = tensor.shape[-1] if tensor.dim() else 0
            raise DataError(
                f"{name} has {columns} columns (shape {tuple(tensor.shape)}); the model has "
                f"{self.n_visible} visible units"
            )
        tensor = tensor.to(device=self.device, dtype=self.dtype)
        batch_shape = tensor.shape[: tensor.dim() - event_dims]
        if self.visible != "gaussian":
            check_binary(tensor, name)
        if self.visible == "categorical" and not (tensor.sum(-1) == 1).all():
            raise DataError(
                f"{name} is not one-hot: every (row, variable) needs exactly one 1 among its "
                f"{self.n_categories} categories"
            )
        return tensor.reshape(-1, self.n_visible_units), batch_shape

    def _check_hidden(self, h: Any, name: str = "h") -> torch.Tensor:
        tensor = as_tensor(h, name)
        if tensor.shape[-1] != self.n_hidden:
            raise DataError(
                f"{name} has {tensor.shape[-1]} columns, the model has {self.n_hidden} hidden units"
            )
        return tensor.to(device=self.device, dtype=self.dtype)

    def _to_event(self, flat: torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
        return flat.reshape(*batch_shape, *self.event_shape)

    # ---- energies and conditionals -----------------------------------------------------------
    def free_energy(self, x: Any) -> torch.Tensor:
        """Free energy ``F(v) = -log sum_h exp(-E(v, h))``; shape (*batch)."""
        self.check_fitted("free_energy")
        flat, batch_shape = self._check_visible(x)
        return free_energy(self.params(), flat).reshape(batch_shape)

    def unnormalized_log_prob(self, x: Any) -> torch.Tensor:
        """``-F(v)``: log p(v) up to the additive constant log Z."""
        return -self.free_energy(x)

    def transform(self, x: Any) -> torch.Tensor:
        """Hidden-unit probabilities p(h_j = 1 | v) as features; shape (*batch, n_hidden)."""
        self.check_fitted("transform")
        flat, batch_shape = self._check_visible(x)
        hidden = torch.sigmoid(hidden_preactivation(self.params(), flat))
        return hidden.reshape(*batch_shape, self.n_hidden)

    def reconstruct(self, x: Any) -> torch.Tensor:
        """Mean-field reconstruction ``E[v | h = p(h | x)]``; same shape as x."""
        self.check_fitted("reconstruct")
        flat, batch_shape = self._check_visible(x)
        return self._to_event(self._reconstruct_flat(flat), batch_shape)

    def _reconstruct_flat(self, flat: torch.Tensor) -> torch.Tensor:
        params = self.params()
        hidden = torch.sigmoid(hidden_preactivation(params, flat))
        return visible_mean(params, visible_preactivation(params, hidden))

    def sample_hidden(self, x: Any, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw of h ~ p(h | v) for each row of x; shape (*batch, n_hidden)."""
        flat, batch_shape = self._check_visible(x)
        generator = generator or self.make_generator(None)
        probabilities = torch.sigmoid(hidden_preactivation(self.params(), flat))
        return bernoulli(probabilities, generator=generator).reshape(*batch_shape, -1)

    def sample_visible(self, h: Any, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw of v ~ p(v | h) for each row of h; shape (*batch, *event_shape)."""
        hidden = self._check_hidden(h)
        generator = generator or self.make_generator(None)
        params = self.params()
        flat = sample_visible(
            params, visible_preactivation(params, hidden.reshape(-1, self.n_hidden)), generator
        )
        return self._to_event(flat, hidden.shape[:-1])

    # ---- partition function and densities ---------------------------------------------------
    def log_partition(
        self,
        method: str = "auto",
        *,
        n_runs: int | None = None,
        n_betas: int | None = None,
        schedule: str | None = None,
        betas: torch.Tensor | list[float] | None = None,
        seed: int | torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> LogPartition:
        """log Z, exact or by annealed importance sampling, with its standard error.

        Args:
            method: ``"exact"`` (enumerate the smaller layer; at most 25 units), ``"ais"``,
                or ``"auto"`` (exact when the enumerated layer has at most `exact_max_units`).
            n_runs: AIS runs (default `ais_runs`).
            n_betas: AIS inverse temperatures (default `ais_betas`).
            schedule: AIS schedule kind (default `ais_schedule`); see `temperature_schedule`.
            betas: an explicit AIS schedule (overrides `n_betas` and `schedule`).
            seed: AIS seed (default `ais_seed`, so repeated calls agree).
            dtype: precision of the computation (float32 halves the time of large AIS runs;
                the log weights are accumulated in float64 either way).

        Returns:
            A `LogPartition` (estimate, stderr, method, n_runs, n_betas), computed in float64.
        """
        self.check_fitted("log_partition")
        method = check_choice(method, "method", ("auto", "exact", "ais"))
        if method == "auto":
            method = "exact" if self._enumerated_units() <= self.exact_max_units else "ais"
        if method == "exact":
            key: tuple = ("exact", dtype, self._fingerprint())
        else:
            n_runs, betas, seed = self._ais_arguments(n_runs, n_betas, schedule, betas, seed)
            if isinstance(seed, torch.Generator):
                key = ()
            else:
                key = ("ais", n_runs, tuple(betas.tolist()), seed, dtype, self._fingerprint())
        if key and key in self._log_partition_cache:
            return self._log_partition_cache[key]
        with torch.no_grad():
            if method == "exact":
                value = exact_log_partition(self.params(dtype))
                result = LogPartition(float(value), 0.0, "exact")
            else:
                generator = self.make_generator(seed)
                result = ais_log_partition(
                    self.params(dtype),
                    self.base_rates(dtype),
                    betas.to(device=self.device),
                    n_runs,
                    generator,
                )
        if key:
            self._log_partition_cache = {key: result}
        return result

    def _unnormalized_log_prob64(self, flat: torch.Tensor) -> torch.Tensor:
        return -free_energy(self.params(torch.float64), flat.double())

    def pseudo_log_likelihood(self, x: Any) -> torch.Tensor:
        """Exact pseudo-log-likelihood ``sum_i log p(x_i | x_-i)`` per row (discrete units)."""
        self.check_fitted("pseudo_log_likelihood")
        flat, batch_shape = self._check_visible(x)
        with torch.no_grad():
            return pseudo_log_likelihood(self.params(), flat).reshape(batch_shape)

    @property
    def enumerate_support(self):
        """Every visible configuration (small discrete models only), as a method.

        Exists for Bernoulli units with n_visible <= 16 and categorical units with at most
        65536 joint states; otherwise the attribute is absent (``hasattr`` is False).
        """
        if self.visible == "bernoulli" and self.n_visible <= 16:
            return self._enumerate_support
        if self.visible == "categorical" and self.n_categories**self.n_visible <= 1 << 16:
            return self._enumerate_support
        raise AttributeError("enumerate_support is only defined for small discrete RBMs")

    def _enumerate_support(self) -> torch.Tensor:
        if self.visible == "bernoulli":
            return binary_codes(
                0, 1 << self.n_visible, self.n_visible, dtype=self.dtype, device=self.device
            )
        codes = torch.arange(self.n_categories**self.n_visible, device=self.device)
        digits = torch.stack(
            [(codes // self.n_categories**i) % self.n_categories for i in range(self.n_visible)], -1
        )
        return F.one_hot(digits, self.n_categories).to(self.dtype)


__all__ = ["RBM", "RBMParams", "BaseRates", "LogPartition"]
