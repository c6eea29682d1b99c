"""Warm-up adaptation of ChEES-HMC (`probgen.samplers.chees`): step size, trajectory length,
diagonal mass matrix.

- `DualAveraging`: Nesterov dual averaging of log step size (Hoffman & Gelman 2014), fed the
  harmonic mean of the chains' acceptance probabilities;
- `CheesAdaptation`: the whole warm-up state, updated after each warm-up iteration with the
  proposals of every chain (before accept/reject): Adam on log trajectory length following the
  ChEES-rate gradient, pooled variances over Stan's windows for the inverse mass matrix.

Example:
    >>> low, high = DualAveraging(1.0, target=0.65), DualAveraging(1.0, target=0.65)
    >>> low.update(0.1) < high.update(0.9)  # accepting too little: smaller steps
    True
"""

from __future__ import annotations

import math

import torch

from probgen.samplers.mh import covariance_window_ends

__all__ = ["CheesAdaptation", "DualAveraging"]


class DualAveraging:
    """Nesterov dual averaging of log step size (Hoffman & Gelman 2014), as Stan adapts it.

    Args:
        step_size: the starting step size; the iterates shrink toward log(10 step_size).
        target: the acceptance statistic to reach.

    Example:
        >>> low, high = DualAveraging(1.0, target=0.65), DualAveraging(1.0, target=0.65)
        >>> low.update(0.1) < high.update(0.9)  # accepting too little: smaller steps
        True
    """

    def __init__(
        self,
        step_size: float,
        target: float,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ) -> None:
        self.target = target
        self.mu = math.log(10.0 * step_size)
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.count = 0
        self.error_sum = 0.0
        self.log_step = math.log(step_size)
        self.log_step_average = math.log(step_size)

    def update(self, accept_statistic: float) -> float:
        """Take one acceptance statistic; returns the next step size."""
        self.count += 1
        eta = 1.0 / (self.count + self.t0)
        self.error_sum = (1 - eta) * self.error_sum + eta * (self.target - accept_statistic)
        self.log_step = self.mu - math.sqrt(self.count) / self.gamma * self.error_sum
        self.log_step = min(max(self.log_step, -30.0), 10.0)
        weight = self.count**-self.kappa
        self.log_step_average = weight * self.log_step + (1 - weight) * self.log_step_average
        return math.exp(self.log_step)

    @property
    def final_step_size(self) -> float:
        return math.exp(self.log_step_average)


class _Adam:
    """Adam on one scalar (log trajectory length), maximising; beta1 = 0 as in TFP's ChEES."""

    def __init__(self, learning_rate: float, beta1: float = 0.0, beta2: float = 0.95) -> None:
        self.learning_rate, self.beta1, self.beta2 = learning_rate, beta1, beta2
        self.first = 0.0
        self.second = 0.0
        self.count = 0

    def step(self, value: float, gradient: float) -> float:
        self.count += 1
        self.first = self.beta1 * self.first + (1 - self.beta1) * gradient
        self.second = self.beta2 * self.second + (1 - self.beta2) * gradient**2
        first = self.first / (1 - self.beta1**self.count)
        second = self.second / (1 - self.beta2**self.count)
        return value + self.learning_rate * first / (math.sqrt(second) + 1e-8)


class CheesAdaptation:
    """Warm-up state of ChEES-HMC: step size, trajectory length and diagonal inverse mass.

    Args:
        dim: length of the flat state.
        warmup: number of warm-up iterations.
        step_size: starting step size.
        trajectory_length: starting trajectory length (default: the step size; `run_chees`
            starts at ten steps).
        target_accept: harmonic-mean acceptance the step size aims at.
        learning_rate: Adam's rate on log trajectory length.
        max_leapfrog_steps: cap on the leapfrog steps of one iteration.
        adapt_step_size, adapt_trajectory_length, adapt_mass_matrix: which parts adapt.
        like: a tensor giving the dtype and device of the mass matrix.
    """

    def __init__(
        self,
        dim: int,
        warmup: int,
        *,
        step_size: float,
        trajectory_length: float | None,
        target_accept: float,
        learning_rate: float,
        max_leapfrog_steps: int,
        adapt_step_size: bool,
        adapt_trajectory_length: bool,
        adapt_mass_matrix: bool,
        like: torch.Tensor,
    ) -> None:
        self.step_size = step_size
        self.log_length = math.log(trajectory_length or step_size)
        self.target_accept = target_accept
        self.max_leapfrog_steps = max_leapfrog_steps
        self.adapt_step_size = adapt_step_size
        self.adapt_trajectory_length = adapt_trajectory_length
        self.adapt_mass_matrix = adapt_mass_matrix
        self.inverse_mass = torch.ones(dim, dtype=like.dtype, device=like.device)
        self.window_ends = covariance_window_ends(warmup) if adapt_mass_matrix else set()
        self.window_start = int(0.15 * warmup) if self.window_ends else warmup
        # T waits for the first mass-matrix window: during the initial transient (chains far
        # from the typical set, an unscaled metric) the criterion favours ever longer, costly
        # trajectories that the first new metric makes meaningless anyway.
        self.length_start = self.window_start if self.window_ends else 0
        self.averaging = DualAveraging(step_size, target_accept)
        self.adam = _Adam(learning_rate)
        self.gradient_size = 0.0
        self.length_average = self.log_length
        self.length_count = 0
        self._reset_moments(like)

    @property
    def trajectory_length(self) -> float:
        return math.exp(self.log_length)

    def num_steps(self, jitter: float) -> int:
        """Leapfrog steps of a trajectory of length jitter * T at the current step size."""
        steps = math.ceil(jitter * self.trajectory_length / self.step_size)
        return int(min(max(steps, 1), self.max_leapfrog_steps))

    def _reset_moments(self, like: torch.Tensor) -> None:
        self.count = 0
        self.total = torch.zeros_like(self.inverse_mass)
        self.total_squares = torch.zeros_like(self.inverse_mass)
        self.centre_total = torch.zeros_like(self.inverse_mass)
        self.centre_count = 0

    def centre(self, z: torch.Tensor) -> torch.Tensor:
        """Centre of the chains for the ChEES criterion: the mean of the recent warm-up states.

        With few chains the cross-chain mean of one iteration is too noisy (it shrinks the
        criterion); pooling the states since the last mass-matrix update is not.
        """
        self.centre_total = self.centre_total + z.sum(0)
        self.centre_count += z.shape[0]
        return self.centre_total / self.centre_count

    def update(
        self,
        iteration: int,
        z_start: torch.Tensor,
        proposal: torch.Tensor,
        proposal_momentum: torch.Tensor,
        accept_prob: torch.Tensor,
        diverged: torch.Tensor,
        jitter: float,
        num_steps: int,
    ) -> None:
        """Adapt after warm-up iteration `iteration` (proposals before accept/reject)."""
        usable = ~diverged & torch.isfinite(accept_prob)
        count = int(usable.sum())
        if self.adapt_step_size:
            if count == 0:
                harmonic = 0.0
            else:
                inverse = 1.0 / accept_prob[usable].clamp_min(1e-10)
                harmonic = float(1.0 / inverse.mean())
            self.step_size = self.averaging.update(harmonic)
        if self.adapt_trajectory_length and count > 0 and iteration >= self.length_start:
            scale = self.inverse_mass.sqrt()
            centre = self.centre(z_start)
            before = (z_start - centre) / scale
            after = (proposal - centre) / scale
            velocity = proposal_momentum * scale  # d(after)/dt
            change = (after**2).sum(-1) - (before**2).sum(-1)
            gradient = jitter * change * (after * velocity).sum(-1)
            weights = torch.where(usable, accept_prob, torch.zeros_like(accept_prob))
            gradient = torch.where(usable, gradient, torch.zeros_like(gradient))
            total_weight = float(weights.sum())
            if total_weight > 0:
                value = float((weights * gradient).sum()) / total_weight
                chees = float((weights * 0.25 * change**2).sum()) / total_weight
            else:
                value = chees = 0.0
            if math.isfinite(value) and math.isfinite(chees):
                # The ChEES *rate* (ChEES / T, TFP's default criterion): per gradient, not per
                # transition, so ill-conditioned targets do not drive T (and the cost) up
                # without bound. d(ChEES / T) / d log T is proportional to T ChEES' - ChEES.
                # Heavy-tailed: one outlier would inflate Adam's second moment and stall log T
                # for hundreds of iterations, so gradients are clipped at 3x their running size.
                log_gradient = self.trajectory_length * value - chees
                if self.gradient_size > 0:
                    bound = 3.0 * self.gradient_size
                    log_gradient = min(max(log_gradient, -bound), bound)
                    self.gradient_size = 0.9 * self.gradient_size + 0.1 * abs(log_gradient)
                else:
                    self.gradient_size = abs(log_gradient)
                self.log_length = self.adam.step(self.log_length, log_gradient)
            # At least one leapfrog step, at most max_leapfrog_steps.
            cap = math.log(self.max_leapfrog_steps * self.step_size)
            self.log_length = min(max(self.log_length, math.log(self.step_size)), cap)
            self.length_count += 1
            weight = self.length_count**-0.75
            self.length_average = weight * self.log_length + (1 - weight) * self.length_average
        if iteration >= self.window_start:
            self.count += z_start.shape[0]
            self.total = self.total + z_start.sum(0)
            self.total_squares = self.total_squares + z_start.pow(2).sum(0)

    def end_window(self, like: torch.Tensor) -> bool:
        """At a window end: new inverse mass from the pooled states; True when it changed."""
        if self.count < 2:
            return False
        mean = self.total / self.count
        variance = (self.total_squares / self.count - mean**2) * self.count / (self.count - 1)
        n = self.count
        variance = (n / (n + 5.0)) * variance.clamp_min(0) + 1e-3 * (5.0 / (n + 5.0))
        changed = bool(torch.isfinite(variance).all())
        if changed:
            self.inverse_mass = variance
        self._reset_moments(like)
        return changed

    def restart_averaging(self, step_size: float) -> None:
        """New dual averaging from `step_size` (after the mass matrix changed).

        The trajectory keeps its number of leapfrog steps: a new mass matrix changes the time
        scale of the dynamics, which the new step size measures.
        """
        if self.adapt_trajectory_length:
            previous = self.averaging.final_step_size if self.averaging.count else self.step_size
            self.log_length += math.log(step_size / previous)
            self.length_average = self.log_length
        # The criterion's scale changed with the metric: forget the old gradient sizes.
        self.gradient_size = 0.0
        self.adam = _Adam(self.adam.learning_rate)
        self.step_size = step_size
        self.averaging = DualAveraging(step_size, self.target_accept)
        self.length_count = 0

    def finish(self) -> None:
        """Fix the step size and trajectory length at their warm-up averages."""
        if self.adapt_step_size and self.averaging.count:
            self.step_size = self.averaging.final_step_size
        if self.adapt_trajectory_length and self.length_count:
            self.log_length = min(
                self.length_average, math.log(self.max_leapfrog_steps * self.step_size)
            )
