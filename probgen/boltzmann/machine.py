"""A fully connected Boltzmann machine (Ising-type model on {0,1} units).

The energy of a binary vector x is ``E(x) = -b.x - 1/2 x^T W x`` with W symmetric and zero on
the diagonal. Training is maximum likelihood by gradient ascent: the model's expectations come
from exact enumeration on small machines (``method="exact"``, full-batch) or from persistent
Gibbs chains (``method="pcd"``, minibatches). The partition function is exact by enumeration
(at most 25 units) or estimated by AIS from the base-rate model.

Example:
    >>> import torch
    >>> from probgen.boltzmann.machine import BoltzmannMachine
    >>> data = (torch.rand(300, 5, generator=torch.Generator().manual_seed(0)) > 0.4).float()
    >>> bm = BoltzmannMachine(5, n_epochs=50, seed=0).fit(data)
    >>> round(float(bm.log_prob(bm.enumerate_support()).exp().sum()), 4)
    1.0
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from probgen.boltzmann.ais import annealed_importance_sampling, log_mean_exp_with_stderr
from probgen.boltzmann.common import (
    ENUMERATION_CHUNK_ELEMENTS,
    MAX_ENUMERATED_UNITS,
    EnergyModel,
    LogPartition,
    binary_codes,
    check_binary,
    check_fraction,
    check_positive_float,
    divergence,
    enumerate_logsumexp,
)
from probgen.boltzmann.rbm_functions import bernoulli
from probgen.boltzmann.sharded import RowShard, summed
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError, FitError
from probgen.core.progress import progress_bar
from probgen.core.threads import small_op_loop, small_op_threads

FIT_METHODS = ("auto", "exact", "pcd")


# ---- pure functions ----------------------------------------------------------------------


def bm_unnormalized_log_prob(
    couplings: torch.Tensor, biases: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """``-E(x) = b.x + 1/2 x^T W x`` for each row of x; shape (...,)."""
    return x @ biases + 0.5 * ((x @ couplings) * x).sum(-1)


def bm_tempered_log_unnormalized(
    couplings: torch.Tensor,
    biases: torch.Tensor,
    base_logits: torch.Tensor,
    x: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """log p*_beta(x) on the path ``(1 - beta) E_base + beta E`` from independent units."""
    return (1 - beta) * (x @ base_logits) + beta * bm_unnormalized_log_prob(couplings, biases, x)


def bm_gibbs_sweep(
    couplings: torch.Tensor,
    biases: torch.Tensor,
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    beta: float = 1.0,
    base_logits: torch.Tensor | None = None,
    clamped: frozenset[int] = frozenset(),
) -> torch.Tensor:
    """One systematic-scan Gibbs sweep over every unit not in `clamped`, for chains (n, n)."""
    x = x.clone()
    n_chains, n_units = x.shape
    uniform = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    for unit in range(n_units):
        if unit in clamped:
            continue
        # W has a zero diagonal, so the unit's own current value does not enter its field.
        logits = beta * (biases[unit] + x @ couplings[:, unit])
        if base_logits is not None:
            logits = logits + (1 - beta) * base_logits[unit]
        x[:, unit] = (uniform[:, unit] < torch.sigmoid(logits)).to(x.dtype)
    return x


def bm_exact_log_partition(couplings: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """log Z by enumerating all 2^n states (n <= 25)."""
    n_units = biases.shape[0]
    return enumerate_logsumexp(
        n_units,
        lambda x: bm_unnormalized_log_prob(couplings, biases, x),
        width=n_units,
        dtype=biases.dtype,
        device=biases.device,
    )


def bm_exact_moments(
    couplings: torch.Tensor, biases: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model expectations ``E[x]`` and ``E[x x^T]`` by enumeration (small machines)."""
    n_units = biases.shape[0]
    log_z = bm_exact_log_partition(couplings, biases)
    total = 1 << n_units
    chunk = max(1, ENUMERATION_CHUNK_ELEMENTS // (n_units * n_units + n_units))
    first = torch.zeros_like(biases)
    second = torch.zeros_like(couplings)
    for start in range(0, total, chunk):
        states = binary_codes(
            start, min(total, start + chunk), n_units, dtype=biases.dtype, device=biases.device
        )
        weights = torch.exp(bm_unnormalized_log_prob(couplings, biases, states) - log_z)
        first += weights @ states
        second += (states * weights[:, None]).T @ states
    return first, second


# ---- the model ---------------------------------------------------------------------------


class BoltzmannMachine(EnergyModel):
    """A fully connected Boltzmann machine on binary {0,1} units.

    Args:
        n_units: number of binary units (>= 1).
        learning_rate: gradient-ascent step on the mean log-likelihood.
        n_epochs: iterations (exact, full batch) or passes over the data (PCD).
        method: ``"exact"`` (model moments by enumeration, full batch), ``"pcd"`` (persistent
            Gibbs chains, minibatches), or ``"auto"`` (exact up to `exact_max_units`).
        batch_size: PCD minibatch size (and number of persistent chains).
        gibbs_sweeps: PCD Gibbs sweeps per update.
        momentum: classical momentum on the updates.
        weight_decay: L2 penalty on the couplings.
        exact_max_units: log_prob is exact up to this many units, an AIS estimate beyond.
        ais_runs, ais_betas, ais_schedule, ais_seed: AIS settings used by `log_prob`.
        max_abs_weight: divergence threshold (see `RBM`).
        progress: show a tqdm progress bar.
        seed: seed of training (None: fresh randomness).

    Attributes:
        history_: one dict per epoch: ``epoch``, ``learning_rate``, ``seconds`` and
            ``log_likelihood`` (training data, exact; only when enumeration is cheap).
        n_iter_: epochs completed.

    Example:
        >>> import torch
        >>> bm = BoltzmannMachine(3)
        >>> bm = bm.set_parameters(couplings=[[0, 1.0, 0], [1.0, 0, -1.0], [0, -1.0, 0]])
        >>> bm.gibbs_step(bm.initial_state(4, generator=torch.Generator().manual_seed(0))).shape
        torch.Size([4, 3])
    """

    fitted_attributes = ("history_", "n_iter_")
    distributed_fit = True  # data moments summed over all ranks' rows (probgen.boltzmann.sharded)

    def __init__(
        self,
        n_units: int,
        *,
        learning_rate: float = 0.1,
        n_epochs: int = 100,
        method: str = "auto",
        batch_size: int = 100,
        gibbs_sweeps: int = 1,
        momentum: float = 0.5,
        weight_decay: float = 0.0,
        exact_max_units: int = 20,
        ais_runs: int = 100,
        ais_betas: int = 5000,
        ais_schedule: str = "piecewise",
        ais_seed: int = 0,
        max_abs_weight: float = 1e4,
        progress: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.n_units = check_positive_int(n_units, "n_units")
        self.learning_rate = check_positive_float(learning_rate, "learning_rate")
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.method = check_choice(method, "method", FIT_METHODS)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.gibbs_sweeps = check_positive_int(gibbs_sweeps, "gibbs_sweeps")
        self.momentum = check_fraction(momentum, "momentum")
        self.weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)
        self._store_partition_settings(
            exact_max_units, ais_runs, ais_betas, ais_schedule, ais_seed, max_abs_weight
        )
        self.progress = bool(progress)
        self.seed = seed
        self.event_shape = torch.Size([self.n_units])
        self.couplings = nn.Parameter(torch.zeros(self.n_units, self.n_units), requires_grad=False)
        self.biases = nn.Parameter(torch.zeros(self.n_units), requires_grad=False)
        self.register_buffer("base_logits", torch.zeros(self.n_units))
        self._init_log_partition()

    # ---- parameters and input ----------------------------------------------------------------
    def set_parameters(self, *, couplings: Any = None, biases: Any = None) -> BoltzmannMachine:
        """Set W (symmetrised, zero diagonal) and/or b by hand and mark the model fitted.

        The base-rate model (AIS start) becomes the independent model with logits b.
        """
        with torch.no_grad():
            if couplings is not None:
                shape = (self.n_units, self.n_units)
                matrix = as_tensor(couplings, "couplings", event_shape=shape)
                if tuple(matrix.shape) != shape:
                    raise DataError(f"couplings has shape {tuple(matrix.shape)}, expected {shape}")
                matrix = matrix.to(device=self.device, dtype=self.dtype)
                matrix = 0.5 * (matrix + matrix.T)
                matrix.fill_diagonal_(0.0)
                self.couplings.copy_(matrix)
            if biases is not None:
                vector = as_tensor(biases, "biases", event_shape=(self.n_units,))
                if vector.dim() != 1:
                    raise DataError(f"biases must have shape ({self.n_units},)")
                self.biases.copy_(vector.to(device=self.device, dtype=self.dtype))
            self.base_logits.copy_(self.biases)
        self._mark_set_by_hand()
        return self

    def _enumerated_units(self) -> int:
        return self.n_units

    def _check_visible(self, x: Any, name: str = "x") -> tuple[torch.Tensor, torch.Size]:
        tensor = as_tensor(x, name)
        if tensor.dim() < 1 or tensor.shape[-1] != self.n_units:
            columns = tensor.shape[-1] if tensor.dim() else 0
            raise DataError(
                f"{name} has {columns} columns (shape {tuple(tensor.shape)}); the model has "
                f"{self.n_units} units"
            )
        tensor = tensor.to(device=self.device, dtype=self.dtype)
        check_binary(tensor, name)
        return tensor.reshape(-1, self.n_units), tensor.shape[:-1]

    # ---- densities ---------------------------------------------------------------------------
    def unnormalized_log_prob(self, x: Any) -> torch.Tensor:
        """``-E(x)``: log p(x) up to log Z; shape (*batch)."""
        self.check_fitted("unnormalized_log_prob")
        flat, batch_shape = self._check_visible(x)
        return bm_unnormalized_log_prob(self.couplings, self.biases, flat).reshape(batch_shape)

    def log_partition(
        self,
        method: str = "auto",
        *,
        n_runs: int | None = None,
        n_betas: int | None = None,
        schedule: str | None = None,
        betas: torch.Tensor | list[float] | None = None,
        seed: int | None = None,
    ) -> LogPartition:
        """log Z, exact by enumeration (<= 25 units) or by AIS; see `RBM.log_partition`."""
        self.check_fitted("log_partition")
        method = check_choice(method, "method", ("auto", "exact", "ais"))
        if method == "auto":
            method = "exact" if self.n_units <= self.exact_max_units else "ais"
        couplings = self.couplings.detach().double()
        biases = self.biases.detach().double()
        if method == "exact":
            key: tuple = ("exact", self._fingerprint())
            if key not in self._log_partition_cache:
                value = float(bm_exact_log_partition(couplings, biases))
                self._log_partition_cache = {key: LogPartition(value, 0.0, "exact")}
            return self._log_partition_cache[key]
        n_runs, betas, seed = self._ais_arguments(n_runs, n_betas, schedule, betas, seed)
        key = ("ais", n_runs, tuple(betas.tolist()), seed, self._fingerprint())
        if key in self._log_partition_cache:
            return self._log_partition_cache[key]
        generator = self.make_generator(seed)
        base_logits = self.base_logits.double()
        initial = bernoulli(torch.sigmoid(base_logits).expand(n_runs, -1), generator)
        log_weights = annealed_importance_sampling(
            initial,
            lambda x, beta: bm_tempered_log_unnormalized(couplings, biases, base_logits, x, beta),
            lambda x, beta, g: bm_gibbs_sweep(
                couplings, biases, x, g, beta=beta, base_logits=base_logits
            ),
            betas,
            generator,
        )
        log_ratio, stderr = log_mean_exp_with_stderr(log_weights)
        base_log_z = float(torch.nn.functional.softplus(base_logits).sum())
        result = LogPartition(base_log_z + log_ratio, stderr, "ais", n_runs, int(betas.numel()))
        self._log_partition_cache = {key: result}
        return result

    def _unnormalized_log_prob64(self, flat: torch.Tensor) -> torch.Tensor:
        return bm_unnormalized_log_prob(
            self.couplings.double(), self.biases.double(), flat.double()
        )

    @property
    def enumerate_support(self):
        """All 2^n states as a method (only for n_units <= 16; otherwise absent)."""
        if self.n_units <= 16:
            return self._enumerate_support
        raise AttributeError("enumerate_support is only defined for n_units <= 16")

    def _enumerate_support(self) -> torch.Tensor:
        return binary_codes(
            0, 1 << self.n_units, self.n_units, dtype=self.dtype, device=self.device
        )

    # ---- Gibbs interface and sampling ----------------------------------------------------------
    def _evidence(self, evidence: Any) -> dict[int, float]:
        if not evidence:
            return {}
        if not isinstance(evidence, Mapping):
            raise DataError("evidence must be a dict {unit index: 0 or 1}")
        clamped = {}
        for unit, value in evidence.items():
            if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < self.n_units:
                raise DataError(f"evidence key {unit!r} is not a unit index in [0, {self.n_units})")
            if float(value) not in (0.0, 1.0):
                raise DataError(f"evidence[{unit}] = {value!r}; units take 0 or 1")
            clamped[unit] = float(value)
        return clamped

    def initial_state(
        self,
        num_chains: int,
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[int, Any] | None = None,
    ) -> torch.Tensor:
        """Starting states for `num_chains` chains from the base-rate model (evidence clamped)."""
        num_chains = check_positive_int(num_chains, "num_chains")
        generator = generator or self.make_generator(None)
        state = bernoulli(torch.sigmoid(self.base_logits).expand(num_chains, -1), generator)
        for unit, value in self._evidence(evidence).items():
            state[:, unit] = value
        return state

    def gibbs_step(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        evidence: Mapping[int, Any] | None = None,
    ) -> torch.Tensor:
        """One systematic-scan Gibbs sweep over the free units for chains (*batch, n_units).

        Units in `evidence` ({unit index: 0 or 1}) are clamped to their values.
        """
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        if x.dim() < 1 or x.shape[-1] != self.n_units:
            raise DataError(f"x has shape {tuple(x.shape)}; chains need {self.n_units} columns")
        generator = generator or self.make_generator(None)
        clamped = self._evidence(evidence)
        flat = x.reshape(-1, self.n_units).clone()
        for unit, value in clamped.items():
            flat[:, unit] = value
        flat = bm_gibbs_sweep(
            self.couplings, self.biases, flat, generator, clamped=frozenset(clamped)
        )
        return flat.reshape(x.shape)

    # `sample` is EnergyModel's: exact (enumeration, <= 22 units) or Gibbs sweeps (default 1000).
    def _sample_exact(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.n_units > MAX_ENUMERATED_UNITS - 3:
            raise DataError("exact sampling needs at most 22 units; use method='gibbs'")
        states = binary_codes(
            0, 1 << self.n_units, self.n_units, dtype=torch.float64, device=self.device
        )
        scores = bm_unnormalized_log_prob(self.couplings.double(), self.biases.double(), states)
        index = torch.multinomial(
            torch.softmax(scores, 0), n, replacement=True, generator=generator
        )
        return states[index].to(self.dtype)

    @small_op_loop(lambda self, n, *_: n * self.n_units**2)
    def _sample_gibbs(self, n: int, steps: int, generator: torch.Generator) -> torch.Tensor:
        x = self.initial_state(n, generator=generator)
        for _ in range(steps):
            x = bm_gibbs_sweep(self.couplings, self.biases, x, generator)
        return x

    # ---- training -----------------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        *,
        n_epochs: int | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> BoltzmannMachine:
        """Maximum-likelihood training; see the class docstring for the methods.

        `n_epochs`, `seed` and `progress` are deprecated here (set them in the constructor);
        given, they warn and override the constructor's values for this call.

        Under `torch.distributed`, `data` is this rank's rows: the data moments are summed over
        the ranks and every rank runs the same chains, so every rank makes the updates of a
        single process on all ranks' rows with the same seed (`probgen.boltzmann.sharded`).

        Raises:
            DataError: malformed data.
            FitError: the parameters diverged; the last good values are kept.
        """
        x, _ = self._check_visible(data, "data")
        shard = RowShard.of(x.shape[0])  # None in a single process
        epochs, generator, show = self._fit_arguments(n_epochs, seed, progress)
        method = self.method
        if method == "auto":
            method = "exact" if self.n_units <= self.exact_max_units else "pcd"
        if method == "exact" and self.n_units > MAX_ENUMERATED_UNITS:
            raise DataError(f"method='exact' needs at most {MAX_ENUMERATED_UNITS} units")
        n_rows = x.shape[0] if shard is None else shard.total
        counts = x.sum(0) if shard is None else summed([x.sum(0)])[0]
        frequencies = (counts + 1.0) / (n_rows + 2.0)
        logits = torch.log(frequencies) - torch.log1p(-frequencies)
        with torch.no_grad():
            self.base_logits.copy_(logits)
            self.biases.copy_(logits)
            self.couplings.zero_()
        self.history_: list[dict[str, float]] = []
        self.n_iter_ = 0
        monitor = self.n_units <= 16
        velocity_w = torch.zeros_like(self.couplings)
        velocity_b = torch.zeros_like(self.biases)
        chains = bernoulli(
            torch.sigmoid(logits).expand(min(self.batch_size, n_rows), -1), generator
        )
        if shard is None:
            data_first = x.mean(0)
            data_second = x.T @ x / n_rows
        else:
            data_first = counts / n_rows  # `counts` is already summed over the ranks
            data_second = summed([x.T @ x])[0] / n_rows
        for _ in progress_bar(None, "BoltzmannMachine", show, iterable=range(epochs)):
            snapshot = (self.couplings.detach().clone(), self.biases.detach().clone())
            started = time.perf_counter()
            # One epoch of small ops: the library's thread policy (probgen.core.threads).
            with torch.no_grad(), small_op_threads(self.batch_size * self.n_units**2, x):
                if method == "exact":
                    model_first, model_second = bm_exact_moments(
                        self.couplings.double(), self.biases.double()
                    )
                    self._step(
                        data_first - model_first.to(self.dtype),
                        data_second - model_second.to(self.dtype),
                        velocity_w,
                        velocity_b,
                    )
                else:
                    order = torch.randperm(n_rows, generator=generator, device=x.device)
                    for start in range(0, n_rows, chains.shape[0]):
                        chosen = order[start : start + chains.shape[0]]
                        for _sweep in range(self.gibbs_sweeps):
                            chains = bm_gibbs_sweep(self.couplings, self.biases, chains, generator)
                        negative = chains[: chosen.shape[0]]
                        if shard is None:
                            batch = x[chosen]
                            first, second = batch.mean(0), batch.T @ batch / batch.shape[0]
                        else:  # this rank's rows of the batch; the sums over all ranks
                            batch = x[shard.local_rows(chosen)]
                            first, second = summed([batch.sum(0), batch.T @ batch])
                            first, second = first / chosen.shape[0], second / chosen.shape[0]
                        self._step(
                            first - negative.mean(0),
                            second - negative.T @ negative / negative.shape[0],
                            velocity_w,
                            velocity_b,
                        )
            elapsed = time.perf_counter() - started
            problem = self._diverged()
            if problem is not None:
                with torch.no_grad():
                    self.couplings.copy_(snapshot[0])
                    self.biases.copy_(snapshot[1])
                if self.n_iter_ > 0:
                    self._mark_fitted()
                raise FitError(
                    f"BoltzmannMachine fit diverged in epoch {self.n_iter_ + 1}: {problem}; the "
                    "last good parameters are kept. Lower learning_rate."
                )
            self.n_iter_ += 1
            record: dict[str, float] = {
                "epoch": self.n_iter_,
                "learning_rate": self.learning_rate,
                "seconds": elapsed,
            }
            if monitor:
                log_z = float(bm_exact_log_partition(self.couplings.double(), self.biases.double()))
                values = bm_unnormalized_log_prob(self.couplings, self.biases, x).double()
                if shard is None:
                    mean = float(values.mean())
                else:
                    mean = float(summed([values.sum()])[0]) / n_rows
                record["log_likelihood"] = mean - log_z
            self.history_.append(record)
        self._log_partition_cache = {}
        self._mark_fitted()
        return self

    def _step(
        self,
        gradient_b: torch.Tensor,
        gradient_w: torch.Tensor,
        velocity_w: torch.Tensor,
        velocity_b: torch.Tensor,
    ) -> None:
        gradient_w = gradient_w.clone()
        gradient_w.fill_diagonal_(0.0)
        if self.weight_decay > 0:
            gradient_w -= self.weight_decay * self.couplings
        velocity_w.mul_(self.momentum).add_(gradient_w, alpha=self.learning_rate)
        velocity_b.mul_(self.momentum).add_(gradient_b, alpha=self.learning_rate)
        self.couplings.add_(velocity_w)
        self.biases.add_(velocity_b)

    def _diverged(self) -> str | None:
        named = (("couplings", self.couplings), ("biases", self.biases))
        return divergence(named, self.max_abs_weight, "max_abs_weight")
