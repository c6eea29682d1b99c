"""Helpers shared by the Boltzmann machine family: enumeration, checks, results, base classes.

`EnergyModel` holds what `RBM` and `BoltzmannMachine` do alike (AIS settings, the log-partition
cache key, `log_prob` and `sample` around model-specific hooks); `KeepsSavedDtype` makes a
loaded model take the floating dtype of its saved tensors.

Example:
    >>> from probgen.boltzmann.common import binary_codes
    >>> binary_codes(0, 4, 2).tolist()
    [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from probgen.boltzmann.ais import SCHEDULES, check_betas, temperature_schedule
from probgen.boltzmann.sharded import agree_on_seed
from probgen.core.contract import LogProbKind, Model
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError

# Enumeration works on chunks holding at most this many numbers (configurations x width).
ENUMERATION_CHUNK_ELEMENTS = 1 << 22
# Hard ceiling on the number of enumerated units (2**25 configurations).
MAX_ENUMERATED_UNITS = 25


@dataclass(frozen=True)
class LogPartition:
    """A log-partition function with its uncertainty.

    Attributes:
        estimate: log Z (nats).
        stderr: standard error of `estimate` (0 when exact).
        method: ``"exact"`` or ``"ais"``.
        n_runs: number of AIS runs (0 when exact).
        n_betas: number of AIS inverse temperatures (0 when exact).
    """

    estimate: float
    stderr: float
    method: str
    n_runs: int = 0
    n_betas: int = 0

    def __float__(self) -> float:
        return float(self.estimate)


def binary_codes(
    start: int,
    stop: int,
    n_units: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Rows ``start .. stop - 1`` of the table of all binary vectors of length `n_units`.

    Row r holds the bits of r, least significant first.
    """
    codes = torch.arange(start, stop, device=device, dtype=torch.long)
    shifts = torch.arange(n_units, device=device, dtype=torch.long)
    return ((codes[:, None] >> shifts[None, :]) & 1).to(dtype)


def enumerate_logsumexp(
    n_units: int,
    log_weight: Callable[[torch.Tensor], torch.Tensor],
    *,
    width: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """``log sum_x exp(log_weight(x))`` over every binary vector x of length `n_units`.

    The configurations are generated and scored in chunks so that memory stays bounded;
    `width` is the size of the other dimension the scoring function touches per configuration.
    """
    if n_units > MAX_ENUMERATED_UNITS:
        raise DataError(
            f"exact enumeration needs at most {MAX_ENUMERATED_UNITS} units in the enumerated "
            f"layer, this model has {n_units}; use method='ais'"
        )
    total = 1 << n_units
    chunk = max(1, min(total, ENUMERATION_CHUNK_ELEMENTS // max(1, width + n_units)))
    partial = []
    for start in range(0, total, chunk):
        configs = binary_codes(
            start, min(total, start + chunk), n_units, dtype=dtype, device=device
        )
        partial.append(torch.logsumexp(log_weight(configs), dim=0))
    return torch.logsumexp(torch.stack(partial), dim=0)


def check_binary(x: torch.Tensor, name: str) -> None:
    """Raise `DataError` unless every entry of `x` is 0 or 1."""
    if not ((x == 0) | (x == 1)).all():
        bad = x[(x != 0) & (x != 1)]
        raise DataError(
            f"{name} has values other than 0 and 1 (e.g. {bad.reshape(-1)[0].item():g}); "
            "binary units need {0,1} data: binarise it first, e.g. (x > 0.5)"
        )


def check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """`value` as a float; `DataError` naming `name` unless it is finite and > 0 (>= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise DataError(f"{name} must be a finite number {bound}, got {value!r}")
    if value > _FLOAT32_MAX:  # the machines compute in float32, where this overflows
        raise DataError(f"{name} must be at most {_FLOAT32_MAX:.3g}, got {value!r}")
    return value


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_fraction(value: Any, name: str) -> float:
    """`value` as a float in [0, 1); `DataError` naming `name` otherwise."""
    value = check_positive_float(value, name, allow_zero=True)
    if value >= 1:
        raise DataError(f"{name} must lie in [0, 1), got {value!r}")
    return value


def divergence(
    named_tensors: Iterable[tuple[str, torch.Tensor]], max_abs_weight: float, limit: str
) -> str | None:
    """Why training diverged (a non-finite tensor, or one above `max_abs_weight`), or None.

    `limit` is how the message names the threshold.
    """
    for name, tensor in named_tensors:
        if tensor.numel() == 0:
            continue
        # One reduction per tensor (it runs after every epoch): max propagates NaN.
        largest = float(tensor.abs().max())
        if not math.isfinite(largest):
            return f"{name} became NaN or infinite"
        if largest > max_abs_weight:
            return f"{name} reached magnitude {largest:.3g} > {limit}"
    return None


def warn_fit_settings(model: str, *, stacklevel: int = 4, **settings: Any) -> None:
    """Warn `DeprecationWarning` for each setting passed to `fit` (not None) instead of `__init__`.

    `stacklevel` 4 points at the caller of `fit` when `fit` calls a helper that calls this.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_fit_settings("RBM", n_epochs=3, seed=None)
        >>> [str(w.message).split(";")[0] for w in caught]
        ['RBM.fit(n_epochs=...) is deprecated']
    """
    for name, value in settings.items():
        if value is not None:
            warnings.warn(
                f"{model}.fit({name}=...) is deprecated; pass {name} to the {model} constructor "
                f"instead ({model}(..., {name}=...)). The fit argument will be removed in the "
                "next release.",
                DeprecationWarning,
                stacklevel=stacklevel,
            )


def adopt_saved_dtype(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Cast `module` to the floating dtype of saved tensors (so float64 models load as such)."""
    for tensor in tensors.values():
        if tensor.is_floating_point():
            module.to(tensor.dtype)
            return


class KeepsSavedDtype:
    """Mixin for a `Model`: loading saved tensors keeps their floating dtype."""

    def set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load saved tensors, keeping their floating dtype (float64 models stay float64)."""
        adopt_saved_dtype(self, tensors)
        super().set_tensors(tensors)


class EnergyModel(KeepsSavedDtype, Model):
    """Base of the binary-unit energy models (`RBM`, `BoltzmannMachine`).

    A subclass stores its parameters, calls `_store_partition_settings` and `_init_log_partition`
    in `__init__`, and provides the hooks `_check_visible` (validate data, return it as
    (rows, units) and its batch shape), `_enumerated_units`, `_unnormalized_log_prob64`,
    `_sample_exact`, `_sample_gibbs`, and a `log_partition(method)` returning a `LogPartition`.
    """

    def _store_partition_settings(
        self,
        exact_max_units: int,
        ais_runs: int,
        ais_betas: int,
        ais_schedule: str,
        ais_seed: int,
        max_abs_weight: float,
    ) -> None:
        """Check and store the settings of exact / AIS partition functions and of divergence."""
        self.exact_max_units = check_positive_int(exact_max_units, "exact_max_units", minimum=0)
        self.ais_runs = check_positive_int(ais_runs, "ais_runs", minimum=2)
        self.ais_betas = check_positive_int(ais_betas, "ais_betas", minimum=2)
        self.ais_schedule = check_choice(ais_schedule, "ais_schedule", SCHEDULES)
        self.ais_seed = int(ais_seed)
        self.max_abs_weight = check_positive_float(max_abs_weight, "max_abs_weight")

    def _init_log_partition(self) -> None:
        """`log_prob_kind` (EXACT when the enumerated layer has at most `exact_max_units`
        units, else ESTIMATE: log Z by AIS) and an empty log-partition cache."""
        self.log_prob_kind = (
            LogProbKind.EXACT
            if self._enumerated_units() <= self.exact_max_units
            else LogProbKind.ESTIMATE
        )
        self._log_partition_cache: dict[Any, LogPartition] = {}

    def _enumerated_units(self) -> int:
        """Units whose configurations exact computations enumerate."""
        raise NotImplementedError

    def _check_visible(self, x: Any, name: str = "x") -> tuple[torch.Tensor, torch.Size]:
        """Validate data; return it flattened to (rows, units) and its batch shape."""
        raise NotImplementedError

    def _unnormalized_log_prob64(self, flat: torch.Tensor) -> torch.Tensor:
        """log p*(x) of flat rows, in float64."""
        raise NotImplementedError

    def _sample_exact(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact independent draws by enumeration; shape (n, *event_shape)."""
        raise NotImplementedError

    def _sample_gibbs(self, n: int, steps: int, generator: torch.Generator) -> torch.Tensor:
        """n chains from the base-rate model after `steps` Gibbs sweeps; (n, *event_shape)."""
        raise NotImplementedError

    def _mark_set_by_hand(self) -> None:
        """Finish `set_parameters`: forget cached log Z and mark the model fitted."""
        self._log_partition_cache = {}
        if not hasattr(self, "history_"):
            self.history_ = []
            self.n_iter_ = 0
        self._mark_fitted()

    def _fingerprint(self) -> tuple:
        """Identifies the current parameter values (for the log-partition cache)."""
        return tuple(
            (t.data_ptr(), t._version, t.dtype, str(t.device))
            for t in (*self.parameters(), *self.buffers())
        )

    def _ais_arguments(
        self,
        n_runs: int | None,
        n_betas: int | None,
        schedule: str | None,
        betas: torch.Tensor | list[float] | None,
        seed: int | torch.Generator | None,
    ) -> tuple[int, torch.Tensor, int | torch.Generator]:
        """AIS runs, inverse temperatures and seed, the model's settings filling the gaps."""
        n_runs = check_positive_int(
            self.ais_runs if n_runs is None else n_runs, "n_runs", minimum=2
        )
        if betas is not None:
            betas = check_betas(betas)
        else:
            betas = temperature_schedule(
                self.ais_betas if n_betas is None else n_betas, schedule or self.ais_schedule
            )
        return n_runs, betas, self.ais_seed if seed is None else seed

    def _fit_arguments(
        self, n_epochs: int | None, seed: int | None, progress: bool | None
    ) -> tuple[int, torch.Generator, bool]:
        """Epochs, generator and progress display of one `fit` call (constructor defaults).

        The `fit` arguments are deprecated aliases of the constructor's: each one given warns
        (`warn_fit_settings`) and still overrides the constructor's value for this call.
        """
        warn_fit_settings(type(self).__name__, n_epochs=n_epochs, seed=seed, progress=progress)
        epochs = self.n_epochs if n_epochs is None else check_positive_int(n_epochs, "n_epochs")
        # Under torch.distributed every rank needs the same draws: rank 0's seed when none.
        generator = self.make_generator(agree_on_seed(self.seed if seed is None else seed))
        show = self.progress if progress is None else bool(progress)
        return epochs, generator, show

    def log_prob(self, x: Any) -> torch.Tensor:
        """log p(x): exact when `log_prob_kind` is EXACT, else with an AIS estimate of log Z."""
        self.check_fitted("log_prob")
        flat, batch_shape = self._check_visible(x)
        method = "exact" if self.log_prob_kind == LogProbKind.EXACT else "ais"
        log_z = self.log_partition(method).estimate
        with torch.no_grad():
            values = self._unnormalized_log_prob64(flat) - log_z
        return values.to(self.dtype).reshape(batch_shape)

    def sample(
        self,
        n: int,
        *,
        seed: int | torch.Generator | None = None,
        gibbs_steps: int | None = None,
        method: str = "auto",
    ) -> torch.Tensor:
        """Draw n events; shape (n, *event_shape).

        Args:
            n: number of draws.
            seed: seed or generator.
            gibbs_steps: Gibbs sweeps per chain (each draw is its own chain started from the
                base-rate model); default 1000.
            method: ``"exact"`` (enumerate the states of the enumerated layer: exact
                independent draws; at most 22 units), ``"gibbs"``, or ``"auto"`` (exact when
                the model is small enough and `gibbs_steps` is not given, else Gibbs).
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        method = check_choice(method, "method", ("auto", "exact", "gibbs"))
        if method == "auto":
            small = self._enumerated_units() <= min(self.exact_max_units, 22)
            method = "exact" if small and gibbs_steps is None else "gibbs"
        generator = self.make_generator(seed)
        with torch.no_grad():
            if method == "exact":
                return self._sample_exact(n, generator)
            steps = check_positive_int(1000 if gibbs_steps is None else gibbs_steps, "gibbs_steps")
            return self._sample_gibbs(n, steps, generator)
