"""`Diffusion`: a DDPM whose `log_prob` is its variational bound, honestly labelled.

Ho et al. (2020)'s denoising diffusion model with a noise-prediction network (an MLP for
vectors, a small U-Net for images), linear or cosine noise schedules, training by the simple
loss or by Nichol & Dhariwal (2021)'s hybrid loss with learned variances, ancestral (DDPM) and
DDIM sampling.

`log_prob` is the negative variational bound, `-L = -(L_T + sum_t L_{t-1} + L_0)`: for real data
a lower bound on the log-density (after the model's standardisation, whose Jacobian is
included), for data on K levels (`n_levels=2` binary, `256` 8-bit) with the discretised decoder
at t = 1 a lower bound on the log-mass. With `bound_steps="all"` every one of the T terms is
computed (`log_prob_kind` "lower_bound"; each term at one draw of x_t, seeded, as the VAE's
ELBO is); with `bound_steps=k` the sum over steps is estimated without bias from k uniformly drawn
steps (kind "estimate"). With `log_prob_estimator="ode"` it is the probability-flow ODE
log-likelihood with a Hutchinson trace (kind "estimate"). `bits_per_dim` converts.

Example:
    >>> import torch
    >>> from probgen.diffusion import Diffusion
    >>> x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    >>> model = Diffusion((2,), hidden_dims=(32,), n_steps=20, n_epochs=2, seed=0).fit(x)
    >>> model.log_prob(x[:3]).shape, model.log_prob_kind.value
    (torch.Size([3]), 'lower_bound')
    >>> model.sample(4, seed=0, method="ddim", steps=5).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.diffusion.bound import (
    counter_normal,
    counter_uniform,
    prior_kl,
    reverse_params,
    step_term,
)
from probgen.diffusion.networks import TimeMLP, UNet
from probgen.diffusion.ode import ode_log_likelihood
from probgen.diffusion.sampling import ddim_path, ddpm_path
from probgen.diffusion.schedules import SCHEDULES, Schedule
from probgen.fitting.loop import fit_with_model_settings

__all__ = ["Diffusion"]

_NETWORKS = ("mlp", "unet")
_LOSSES = ("simple", "hybrid")
_VARIANCES = ("fixed_small", "fixed_large", "learned")
_ESTIMATORS = ("bound", "ode")
_TRACES = ("hutchinson", "exact")
_METHODS = ("ddpm", "ddim")
# Nichol & Dhariwal's weight of the bound in the hybrid loss (lambda = 0.001).
_HYBRID_WEIGHT = 1e-3
# Network inputs held at once while scoring: about this many activations per block.
_BLOCK_ACTIVATIONS = 1 << 22


class Diffusion(Model):
    """Denoising diffusion probabilistic model (DDPM) with its variational bound as `log_prob`.

    Args:
        input_shape: event shape of one example: (d,) for vectors, (H, W) or (C, H, W) images.
        n_levels: None for real data; K >= 2 for data coded 0..K-1 (2 binary, 256 8-bit),
            mapped to K levels in [-1, 1] with the discretised decoder at t = 1.
        network: "mlp" (any shape, flattened) or "unet" (images).
        hidden_dims: the MLP's hidden sizes, or the U-Net's channels per resolution.
        n_steps: T, the number of diffusion steps.
        schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal).
        loss: "simple" (noise regression) or "hybrid" (simple + 0.001 x the bound, which trains
            the learned variances; needs variance="learned").
        variance: reverse-step variance: "fixed_small" (beta_tilde_t), "fixed_large" (beta_t),
            or "learned" (an interpolation between them, with loss="hybrid").
        bound_steps: "all" (the bound over every step, kind "lower_bound") or k (an unbiased
            estimate from k sampled steps per example, kind "estimate").
        log_prob_estimator: "bound" or "ode" (probability-flow ODE, real data only).
        ode_steps: RK4 steps of the ODE.
        ode_trace: "hutchinson" or "exact" divergence on the ODE.
        standardize: real data only: fit per-feature means and scales and model the
            standardised data (the log-Jacobian enters `log_prob`).
        n_epochs, batch_size, learning_rate: training settings (overridable in `fit`).
        seed: seed of the initial weights and of training; None draws fresh randomness.
    """

    fitted_attributes = ("history_", "n_iter_")
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int] | int,
        n_levels: int | None = None,
        network: str = "mlp",
        hidden_dims: tuple[int, ...] | list[int] = (128, 128, 128),
        n_steps: int = 1000,
        schedule: str = "linear",
        loss: str = "simple",
        variance: str = "fixed_small",
        bound_steps: str | int = "all",
        log_prob_estimator: str = "bound",
        ode_steps: int = 100,
        ode_trace: str = "hutchinson",
        standardize: bool = True,
        n_epochs: int = 100,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        self.input_shape = tuple(
            check_positive_int(d, f"input_shape[{i}]") for i, d in enumerate(input_shape)
        )
        if not self.input_shape:
            raise DataError("input_shape must have at least one dimension")
        if n_levels is not None:
            n_levels = check_positive_int(n_levels, "n_levels", minimum=2)
        self.n_levels = n_levels
        self.network = check_choice(network, "network", _NETWORKS)
        if self.network == "unet" and len(self.input_shape) not in (2, 3):
            raise DataError(f"network='unet' needs input_shape (H, W) or (C, H, W), got "
                            f"{self.input_shape}")
        self.hidden_dims = tuple(
            check_positive_int(d, f"hidden_dims[{i}]") for i, d in enumerate(hidden_dims)
        )
        if not self.hidden_dims:
            raise DataError("hidden_dims must hold at least one size")
        self.n_steps = check_positive_int(n_steps, "n_steps", minimum=2)
        self.schedule = check_choice(schedule, "schedule", SCHEDULES)
        self.loss = check_choice(loss, "loss", _LOSSES)
        self.variance = check_choice(variance, "variance", _VARIANCES)
        if (self.variance == "learned") != (self.loss == "hybrid"):
            raise DataError(
                "variance='learned' and loss='hybrid' go together: the simple loss does not "
                f"train variances (got loss={loss!r}, variance={variance!r})"
            )
        if bound_steps != "all":
            if isinstance(bound_steps, str):
                raise DataError(f"bound_steps must be 'all' or a positive int, got {bound_steps!r}")
            bound_steps = check_positive_int(bound_steps, "bound_steps")
        self.bound_steps = bound_steps
        self.log_prob_estimator = check_choice(
            log_prob_estimator, "log_prob_estimator", _ESTIMATORS
        )
        if self.log_prob_estimator == "ode" and n_levels is not None:
            raise DataError("log_prob_estimator='ode' gives a density: it needs n_levels=None")
        self.ode_steps = check_positive_int(ode_steps, "ode_steps")
        self.ode_trace = check_choice(ode_trace, "ode_trace", _TRACES)
        self.standardize = bool(standardize)
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        self.seed = seed
        self.event_shape = torch.Size(self.input_shape)

        if self.network == "unet":
            shape = self.input_shape
            self._net_shape = shape if len(shape) == 3 else (1, *shape)
        else:
            self._net_shape = (math.prod(self.input_shape),)
        learned = self.variance == "learned"
        with seeded_initialisation(seed):
            if self.network == "unet":
                self.denoiser: nn.Module = UNet(self._net_shape[0], self.hidden_dims, learned)
            else:
                self.denoiser = TimeMLP(self._net_shape[0], self.hidden_dims, learned)
        self.register_buffer("data_mean", torch.zeros(self.input_shape))
        self.register_buffer("data_scale", torch.ones(self.input_shape))
        self._schedules: dict[str, Schedule] = {}
        self.eval()

    # ---- configuration ---------------------------------------------------------------------
    @property
    def log_prob_kind(self) -> LogProbKind:  # type: ignore[override]
        """`lower_bound` for the bound over all steps, `estimate` for sampled steps or the ODE."""
        if self.log_prob_estimator == "bound" and self.bound_steps == "all":
            return LogProbKind.LOWER_BOUND
        return LogProbKind.ESTIMATE

    @property
    def noise_schedule(self) -> Schedule:
        """The schedule's tensors (float64) on the model's device."""
        key = str(self.device)
        if key not in self._schedules:
            self._schedules[key] = Schedule.make(self.schedule, self.n_steps).to(self.device)
        return self._schedules[key]

    @property
    def _dimension(self) -> int:
        return math.prod(self.input_shape)

    @property
    def _clip(self) -> bool:
        return self.n_levels is not None

    # ---- data ------------------------------------------------------------------------------
    def _check_x(self, x: Any, name: str = "x") -> tuple[torch.Tensor, torch.Size]:
        """x as network-shaped values in the model's space (n, *net_shape), and its batch shape."""
        if self.n_levels is None:
            tensor = as_tensor(x, name, event_shape=self.input_shape)
        else:
            tensor = as_tensor(
                x, name, event_shape=self.input_shape, integer=True, min_value=0,
                max_value=self.n_levels - 1,
            )
        if tensor.dim() == len(self.input_shape):
            raise DataError(
                f"{name} has shape {tuple(tensor.shape)}; give a batch of shape "
                f"(n, {', '.join(map(str, self.input_shape))})".replace(", )", ")")
            )
        batch_shape = tensor.shape[: tensor.dim() - len(self.input_shape)]
        values = tensor.reshape(-1, *self.input_shape).to(device=self.device, dtype=self.dtype)
        if self.n_levels is None:
            values = (values - self.data_mean) / self.data_scale
        else:
            values = values * (2.0 / (self.n_levels - 1)) - 1.0
        return values.reshape(-1, *self._net_shape), batch_shape

    def _from_model_space(self, y: torch.Tensor) -> torch.Tensor:
        y = y.reshape(-1, *self.input_shape)
        if self.n_levels is None:
            return y * self.data_scale + self.data_mean
        codes = torch.round((y + 1) * (self.n_levels - 1) / 2)
        # + 0.0 turns the -0.0 that rounding gives just below zero into 0.0.
        return codes.clamp(0, self.n_levels - 1) + 0.0

    def _log_jacobian(self) -> torch.Tensor:
        """log |dy/dx| of the standardisation (0 for discrete data)."""
        if self.n_levels is not None:
            return self.data_scale.new_zeros(())
        return -self.data_scale.log().sum()

    # ---- the reverse process ---------------------------------------------------------------
    def _eps(self, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.denoiser(xt, t.to(xt.dtype))

    def _params(self, xt: torch.Tensor, steps: torch.Tensor) -> dict[str, torch.Tensor]:
        eps, frac = self._eps(xt, steps)
        return reverse_params(
            self.noise_schedule, xt, steps, eps, self.variance, frac, clip=self._clip
        )

    def _noisy(self, y: torch.Tensor, steps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        alpha_bar = self.noise_schedule.alpha_bars[steps].to(y.dtype)
        alpha_bar = alpha_bar.reshape(-1, *([1] * (y.dim() - 1)))
        return alpha_bar.sqrt() * y + (1 - alpha_bar).sqrt() * noise

    # ---- fitting ---------------------------------------------------------------------------
    def _training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        y = batch[0] if isinstance(batch, (tuple, list)) else batch
        steps = torch.randint(0, self.n_steps, (y.shape[0],), device=y.device)
        noise = torch.randn_like(y)
        xt = self._noisy(y, steps, noise)
        eps, frac = self._eps(xt, steps)
        loss = (eps - noise).pow(2).mean()
        if self.loss == "hybrid":
            # The bound trains the variances only: the mean's gradient is stopped (as in
            # Nichol & Dhariwal), so the simple loss alone shapes the noise prediction.
            params = reverse_params(
                self.noise_schedule, xt, steps, eps.detach(), "learned", frac, clip=self._clip
            )
            terms = step_term(self.noise_schedule, y, xt, steps, params, self.n_levels)
            loss = loss + _HYBRID_WEIGHT * self.n_steps * terms.mean() / self._dimension
        return loss

    def fit(self, data: Any, *, validation_data: Any = None, **options: Any) -> Diffusion:
        """Fit the noise predictor (Adam, minibatches) by the chosen loss.

        Args:
            data: examples (n, *input_shape): real values, or codes 0..n_levels-1.
            validation_data: held-out examples; a one-step estimate of their bound per example
                is recorded each epoch as `val_log_prob` (and drives early stopping).
            **options: settings for `probgen.fitting.fit_model` (n_epochs, batch_size,
                learning_rate, lr_schedule, grad_clip, early_stopping_patience,
                checkpoint_dir, resume, progress, seed, max_steps, ...).

        Returns:
            self, with `history_`.
        """
        if self.n_levels is None:
            raw = as_tensor(data, "data", event_shape=self.input_shape)
            if raw.dim() != len(self.input_shape) + 1 or raw.shape[0] < 2:
                raise DataError(
                    f"data must be a batch (n >= 2, {', '.join(map(str, self.input_shape))})"
                )
            raw = raw.to(device=self.device, dtype=self.dtype)
            if self.standardize:
                self.data_mean.copy_(raw.mean(0))
                self.data_scale.copy_(raw.std(0).clamp(min=1e-6))
            else:
                self.data_mean.zero_()
                self.data_scale.fill_(1.0)
        training, _ = self._check_x(data, "data")
        validation = None
        if validation_data is not None:
            validation, _ = self._check_x(validation_data, "validation_data")
            validation = (validation,)
        fit_with_model_settings(
            self,
            (training,),
            loss=self._training_loss,
            validation_data=validation,
            validation_log_prob=_validation_bound,
            options=options,
        )
        return self

    # ---- the bound -------------------------------------------------------------------------
    def _block_rows(self) -> int:
        width = max(self.hidden_dims) * (4 if self.network == "unet" else 1)
        return max(1, min(65536, _BLOCK_ACTIVATIONS // (self._dimension * width)))

    def _step_terms(self, y: torch.Tensor, steps: torch.Tensor, seed: int) -> torch.Tensor:
        """Terms L_{t-1} (n, k) at 0-based `steps` (n, k), x_t drawn by `counter_normal`."""
        n, k = steps.shape
        rows = torch.arange(n, device=y.device)[:, None].expand(n, k).reshape(-1)
        flat_steps = steps.reshape(-1)
        out = torch.empty(n * k, dtype=y.dtype, device=y.device)
        block = self._block_rows()
        for start in range(0, n * k, block):
            r = rows[start : start + block]
            s = flat_steps[start : start + block]
            x0 = y[r]
            noise = counter_normal(seed, r, s, self._net_shape, y.dtype)
            xt = self._noisy(x0, s, noise)
            params = self._params(xt, s)
            out[start : start + block] = step_term(
                self.noise_schedule, x0, xt, s, params, self.n_levels
            )
        return out.reshape(n, k)

    def _bound(self, y: torch.Tensor, steps: Any, seed: int) -> torch.Tensor:
        """The bound's estimate in the model's space (n,) (no standardisation Jacobian)."""
        n, T = y.shape[0], self.n_steps
        if isinstance(steps, str):
            chosen = torch.arange(T, device=y.device).expand(n, T)
        elif isinstance(steps, int):
            rows = torch.arange(n, device=y.device)
            draws = counter_uniform(seed, rows, torch.full_like(rows, -1), steps)
            chosen = (draws * T).long().clamp(max=T - 1)
        else:
            chosen = steps.to(y.device).long()
            if chosen.dim() == 1:
                chosen = chosen.expand(n, -1)
        terms = self._step_terms(y, chosen, seed)
        weight = T / chosen.shape[1]
        return -(prior_kl(y, self.noise_schedule) + weight * terms.sum(1))

    def _seed(self, seed: int | None) -> int:
        if seed is None:
            return 0
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise DataError(f"seed must be an int or None, got {seed!r}")
        return seed

    @torch.no_grad()
    def variational_bound(
        self, x: Any, *, steps: str | int | Any = "all", seed: int | None = None
    ) -> torch.Tensor:
        """The negative variational bound per example in nats (a lower bound on log p(x)).

        Args:
            x: examples (*batch, *input_shape).
            steps: "all" (exact sum over the T steps), k (unbiased estimate from k steps drawn
                uniformly per example), or explicit steps t in 1..T, shape (k,) or (n, k).
            seed: seed of the draws of x_t (and of the steps), 0 when None; x_t at step t
                for the i-th example is the same in every mode.

        Returns:
            Tensor (*batch): for real data a bound on the log-density of x, for n_levels data
            a bound on the log-mass of the codes.
        """
        self.check_fitted("variational_bound")
        y, batch_shape = self._check_x(x)
        if isinstance(steps, str):
            if steps != "all":
                raise DataError(f"steps must be 'all', an int or a tensor of steps, got {steps!r}")
        elif isinstance(steps, int) and not isinstance(steps, bool):
            steps = check_positive_int(steps, "steps")
        else:
            steps = as_tensor(steps, "steps", integer=True, min_value=1, max_value=self.n_steps)
            if steps.dim() not in (1, 2) or steps.shape[-1] == 0:
                raise DataError("steps must have shape (k,) or (n, k)")
            if steps.dim() == 2 and steps.shape[0] != y.shape[0]:
                raise DataError(f"steps has {steps.shape[0]} rows for {y.shape[0]} examples")
            steps = steps.long() - 1
        bound = self._bound(y, steps, self._seed(seed)) + self._log_jacobian()
        return bound.reshape(batch_shape)

    @torch.no_grad()
    def ode_log_likelihood(
        self,
        x: Any,
        *,
        seed: int | None = None,
        n_steps: int | None = None,
        trace: str | None = None,
    ) -> torch.Tensor:
        """log p(x) by the probability-flow ODE (real data): an estimate, in nats.

        Args:
            x: examples (*batch, *input_shape).
            seed: seed of the Hutchinson probes (0 when None).
            n_steps: RK4 steps (default `ode_steps`).
            trace: "hutchinson" or "exact" (default `ode_trace`).
        """
        self.check_fitted("ode_log_likelihood")
        if self.n_levels is not None:
            raise DataError("ode_log_likelihood needs real data (n_levels=None)")
        y, batch_shape = self._check_x(x)
        trace = check_choice(trace or self.ode_trace, "trace", _TRACES)
        steps = check_positive_int(n_steps or self.ode_steps, "n_steps")
        generator = self.make_generator(self._seed(seed))

        def eps_fn(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self._eps(xt, t)[0]

        values = ode_log_likelihood(
            eps_fn, self.noise_schedule, y, n_steps=steps, trace=trace, generator=generator
        )
        return (values + self._log_jacobian()).reshape(batch_shape)

    def log_prob(self, x: Any, *, seed: int | None = None) -> torch.Tensor:
        """What `log_prob_kind` says: the bound over all steps, its sampled-step estimate, or the
        ODE estimate (nats; seeded, 0 by default, so repeated calls agree)."""
        self.check_fitted("log_prob")
        if self.log_prob_estimator == "ode":
            return self.ode_log_likelihood(x, seed=seed)
        return self.variational_bound(x, steps=self.bound_steps, seed=seed)

    def bits_per_dim(self, x: Any, *, seed: int | None = None) -> torch.Tensor:
        """-log_prob / (D log 2): bits per dimension (per pixel for images), per example."""
        return -self.log_prob(x, seed=seed) / (self._dimension * math.log(2))

    # ---- sampling --------------------------------------------------------------------------
    def _check_sampler(self, method: str, steps: int | None, eta: float) -> tuple[str, int, float]:
        method = check_choice(method, "method", _METHODS)
        if method == "ddpm":
            if steps not in (None, self.n_steps):
                raise DataError("steps applies to method='ddim'; DDPM runs all n_steps")
            if eta not in (None, 0, 0.0, 1, 1.0):
                raise DataError("eta applies to method='ddim'")
            return method, self.n_steps, 1.0
        steps = self.n_steps if steps is None else check_positive_int(steps, "steps")
        if steps > self.n_steps:
            raise DataError(f"steps={steps} exceeds n_steps={self.n_steps}")
        if not isinstance(eta, (int, float)) or not eta >= 0 or not math.isfinite(eta):
            raise DataError(f"eta must be a number >= 0, got {eta!r}")
        return method, steps, float(eta)

    @torch.no_grad()
    def sample_path(
        self,
        n: int,
        *,
        seed: int | None = None,
        method: str = "ddpm",
        steps: int | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """The latent path [x_T, ..., x_1] of `sample` (model space), (len, n, *net_shape)."""
        self.check_fitted("sample_path")
        return torch.stack(self._reverse(n, seed, method, steps, eta, keep_path=True)[1])

    def _reverse(
        self, n: int, seed: Any, method: str, steps: int | None, eta: float, keep_path: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Generator, str]:
        n = check_positive_int(n, "n")
        method, steps, eta = self._check_sampler(method, steps, eta)
        generator = self.make_generator(seed)
        start = torch.randn(
            (n, *self._net_shape), generator=generator, device=self.device, dtype=self.dtype
        )
        if method == "ddpm":
            x1, path = ddpm_path(self._params, self.noise_schedule, start, generator, keep_path)
        else:
            x1, path = ddim_path(
                self._params, self.noise_schedule, start, generator, steps, eta, keep_path
            )
        return x1, path, generator, method

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        method: str = "ddpm",
        steps: int | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """Draw n examples.

        Args:
            n: number of draws.
            seed: seed of the draws.
            method: "ddpm" (ancestral: a draw from the model whose bound `log_prob` reports,
                decoder noise included) or "ddim" (returns the final x_0 prediction).
            steps: DDIM steps (default n_steps).
            eta: DDIM noise scale: 0 deterministic given the seed, 1 with all steps is DDPM.

        Returns:
            Tensor (n, *input_shape): real values, or codes 0..n_levels-1 as floats.
        """
        self.check_fitted("sample")
        x1, _, generator, method = self._reverse(n, seed, method, steps, eta, keep_path=False)
        first = torch.zeros(x1.shape[0], dtype=torch.long, device=x1.device)
        params = self._params(x1, first)
        if method == "ddpm":
            noise = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
            x0 = params["mean"] + torch.exp(0.5 * params["log_var"]) * noise
        else:
            x0 = params["x0"]
        return self._from_model_space(x0)


def _validation_bound(model: Diffusion, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One-step unbiased estimate of the bound per held-out example (cheap, each epoch)."""
    return model._bound(batch[0], 1, 0) + model._log_jacobian()
