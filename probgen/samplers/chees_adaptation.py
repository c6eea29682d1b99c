"""Warm-up adaptation of ChEES-HMC (`probgen.samplers.chees`): step size, trajectory length,
diagonal mass matrix.

- `DualAveraging`: Nesterov dual averaging of log step size (Hoffman & Gelman 2014), fed the
  harmonic mean of the chains' acceptance probabilities;
- `CheesAdaptation`: the whole warm-up state, updated after each warm-up iteration with the
  proposals of every chain (before accept/reject): Adam on log trajectory length following the
  ChEES-rate (or ChEES) gradient pooled over at least `TRAJECTORIES_PER_UPDATE` trajectories,
  pooled variances over Stan's windows for the inverse mass matrix;
- `pooled_sum`: the single point where statistics are summed across chains.

Example:
    >>> low, high = DualAveraging(1.0, target=0.65), DualAveraging(1.0, target=0.65)
    >>> low.update(0.1) < high.update(0.9)  # accepting too little: smaller steps
    True
"""

from __future__ import annotations

import math

import torch

from probgen.samplers.mh import covariance_window_ends

__all__ = ["TRAJECTORIES_PER_UPDATE", "CheesAdaptation", "DualAveraging", "pooled_sum"]


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
    """Adam on one scalar (log trajectory length), maximising; beta1 = 0 as in TFP's ChEES.

    `step` returns the normalised move ``rate * m / sqrt(v)``, not the new value, so that the
    caller can clip it (TFP clips each move of log T to +-0.35).
    """

    def __init__(self, learning_rate: float, beta1: float = 0.0, beta2: float = 0.95) -> None:
        self.learning_rate, self.beta1, self.beta2 = learning_rate, beta1, beta2
        self.first = 0.0
        self.second = 0.0
        self.count = 0

    def step(self, gradient: float, rate_multiplier: float = 1.0) -> float:
        self.count += 1
        self.first = self.beta1 * self.first + (1 - self.beta1) * gradient
        self.second = self.beta2 * self.second + (1 - self.beta2) * gradient**2
        first = self.first / (1 - self.beta1**self.count)
        second = self.second / (1 - self.beta2**self.count)
        return rate_multiplier * self.learning_rate * first / (math.sqrt(second) + 1e-30)


TRAJECTORIES_PER_UPDATE = 32
"""Chain trajectories pooled into one estimate of the ChEES gradient before Adam moves log T.

With few chains one iteration's estimate is dominated by a chain or two (the criterion is a
fourth moment); Adam's normalisation of such heavy-tailed single estimates drifts T long (4
chains took eight schools to 55 leapfrog steps per trajectory where 64 chains settle at 4).
Pooling consecutive iterations until 32 trajectories are in (one iteration with 32+ chains, 8
with 4) gives every update the quality of a 32-chain estimate; the learning rate is multiplied
by the iterations pooled so that T moves as fast per iteration as with many chains.
"""

MAX_LOG_MOVE = 0.35
"""Largest move of log T in one update (TFP's clip, about log(2) / 2)."""


def pooled_sum(per_chain: torch.Tensor) -> torch.Tensor:
    """Sum over the chains (axis 0) of per-chain statistics (chains, k) -> (k,).

    The one point where the warm-up pools statistics across chains: the acceptance statistic of
    the step size, the ChEES gradient, the centre of the chains and the mass-matrix moments all
    go through it (a run whose chains are split over processes all-reduces here).

    Example:
        >>> pooled_sum(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
        [4.0, 6.0]
    """
    return per_chain.sum(0)


class CheesAdaptation:
    """Warm-up state of ChEES-HMC: step size, trajectory length and diagonal inverse mass.

    Args:
        dim: length of the flat state.
        warmup: number of warm-up iterations.
        step_size: starting step size.
        trajectory_length: starting trajectory length (default: the step size; `run_chees`
            starts at ten steps).
        target_accept: harmonic-mean acceptance the step size aims at.
        learning_rate: Adam's rate on log trajectory length (per iteration).
        max_leapfrog_steps: cap on the leapfrog steps of one iteration.
        adapt_step_size, adapt_trajectory_length, adapt_mass_matrix: which parts adapt.
        like: a tensor giving the dtype and device of the mass matrix.
        criterion: "chees_rate" (TFP's default: ChEES per unit of trajectory length, which
            prefers shorter, cheaper trajectories) or "chees" (the paper's: expected change
            in squared distance per transition).
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
        criterion: str = "chees_rate",
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
        # T waits for the first mass-matrix estimate: during the initial transient (chains far
        # from the typical set, an unscaled metric) the criterion is huge and favours ever
        # longer, costly trajectories that the first estimated metric makes meaningless anyway.
        self.length_start = min(self.window_ends) if self.window_ends else 0
        # Step size found by the heuristic at the last metric change (see restart_averaging).
        self._found_step: float | None = None
        self.averaging = DualAveraging(step_size, target_accept)
        self.adam = _Adam(learning_rate)
        self.rate = criterion == "chees_rate"
        self.length_average = self.log_length
        self.length_count = 0
        # Pooled ChEES statistics since the last update of T: sums of weight * gradient,
        # weight * ChEES, weight, trajectories, and the iterations they span.
        self._criterion = torch.zeros(4, dtype=like.dtype, device=like.device)
        self._criterion_iterations = 0
        self._reset_moments(like)

    @property
    def trajectory_length(self) -> float:
        return math.exp(self.log_length)

    def num_steps(self, jitter: float) -> int:
        """Leapfrog steps of a trajectory of length jitter * T at the current step size."""
        steps = math.ceil(jitter * self.trajectory_length / self.step_size)
        return int(min(max(steps, 1), self.max_leapfrog_steps))

    def _reset_moments(self, like: torch.Tensor) -> None:
        dim = self.inverse_mass.shape[0]
        # Pooled sums of z and z**2 (2 dim) and the number of states, over the window.
        self.moments = torch.zeros(2 * dim + 1, dtype=like.dtype, device=like.device)
        # Pooled sum of the states and their number since the last metric change.
        self.centre_sums = torch.zeros(dim + 1, dtype=like.dtype, device=like.device)

    @property
    def count(self) -> int:
        """Number of states pooled in the current mass-matrix window."""
        return int(self.moments[-1])

    def centre(self, z: torch.Tensor) -> torch.Tensor:
        """Centre of the chains for the ChEES criterion: the mean of the recent warm-up states.

        With few chains the cross-chain mean of one iteration is too noisy (it shrinks the
        criterion); pooling the states since the last mass-matrix update is not.
        """
        ones = torch.ones_like(z[:, :1])
        self.centre_sums = self.centre_sums + pooled_sum(torch.cat([z, ones], 1))
        return self.centre_sums[:-1] / self.centre_sums[-1]

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
        """Adapt after warm-up iteration `iteration` (proposals before accept/reject).

        `jitter` is the iteration's Halton factor; the criterion uses the length the
        trajectories actually ran, `num_steps` times the step size they ran with.
        """
        usable = ~diverged & torch.isfinite(accept_prob)
        # The length the trajectories actually ran (jitter * T rounded up to whole steps).
        length = num_steps * self.step_size
        if self.adapt_step_size:
            # Harmonic mean of the usable chains' acceptance: their number / sum of 1 / accept.
            inverse = torch.where(usable, 1.0 / accept_prob.clamp_min(1e-10), 0.0)
            pooled = pooled_sum(torch.stack([inverse, usable.to(inverse.dtype)], 1))
            total_inverse, count = pooled.tolist()
            harmonic = count / total_inverse if count > 0 else 0.0
            self.step_size = self.averaging.update(harmonic)
        if self.adapt_trajectory_length and iteration >= self.length_start:
            self._add_criterion(z_start, proposal, proposal_momentum, accept_prob, usable, length)
            if float(self._criterion[3]) >= TRAJECTORIES_PER_UPDATE:
                self._update_length()
        if iteration >= self.window_start:
            ones = torch.ones_like(z_start[:, :1])
            self.moments = self.moments + pooled_sum(torch.cat([z_start, z_start**2, ones], 1))

    def _add_criterion(
        self,
        z_start: torch.Tensor,
        proposal: torch.Tensor,
        proposal_momentum: torch.Tensor,
        accept_prob: torch.Tensor,
        usable: torch.Tensor,
        length: float,
    ) -> None:
        """Pool one iteration's acceptance-weighted ChEES and ``t dChEES/dt`` (paper, eq. 6),
        t the length the trajectories ran."""
        scale = self.inverse_mass.sqrt()
        centre = self.centre(z_start)
        before = (z_start - centre) / scale
        after = (proposal - centre) / scale
        velocity = proposal_momentum * scale  # d(after)/dt
        change = (after**2).sum(-1) - (before**2).sum(-1)
        # t d ChEES / dt of each chain = d ChEES / d log T (t = jitter * T).
        gradient = length * change * (after * velocity).sum(-1)
        chees = 0.25 * change**2
        keep = usable & torch.isfinite(gradient) & torch.isfinite(chees)
        weights = torch.where(keep, accept_prob, 0.0)
        per_chain = torch.stack(
            [
                weights * torch.where(keep, gradient, 0.0),
                weights * torch.where(keep, chees, 0.0),
                weights,
                torch.ones_like(weights),
            ],
            1,
        )
        self._criterion = self._criterion + pooled_sum(per_chain)
        self._criterion_iterations += 1

    def _update_length(self) -> None:
        """One Adam move of log T from the pooled ChEES statistics, then iterate averaging."""
        gradient_sum, chees_sum, weight_sum, _ = self._criterion.tolist()
        iterations = self._criterion_iterations
        self._criterion = torch.zeros_like(self._criterion)
        self._criterion_iterations = 0
        if weight_sum > 0 and math.isfinite(gradient_sum) and math.isfinite(chees_sum):
            # d E[ChEES] / d log T = E[t ChEES'(t)] over the jittered lengths t. The ChEES
            # *rate* (E[ChEES] / T, per gradient rather than per transition) has a derivative
            # proportional to E[t ChEES'(t)] - E[ChEES]. The lengths the trajectories actually
            # ran keep both honest when T is below a step (a whole step runs, not jitter * T).
            # Measured on the 90-parameter radon posterior: the rate settles at ~6 steps, ChEES
            # at 80-110 (its fourth moment is dominated by log sigma_alpha's tail) for 4x fewer
            # effective draws per gradient; on eight schools both give the same ESS per
            # gradient. Hence the rate is the default, as in TFP.
            log_gradient = (gradient_sum - (chees_sum if self.rate else 0.0)) / weight_sum
            move = self.adam.step(log_gradient, rate_multiplier=iterations)
            self.log_length += min(max(move, -MAX_LOG_MOVE), MAX_LOG_MOVE)
        # Between one step and max_leapfrog_steps, of the *averaged* step size: dual averaging's
        # exploring iterates (10x the start after each metric change) would cut T to one step.
        step = self.averaging.final_step_size if self.adapt_step_size else self.step_size
        low, high = math.log(step), math.log(self.max_leapfrog_steps * self.step_size)
        self.log_length = min(max(self.log_length, low), high)
        self.length_count += 1
        weight = self.length_count**-0.75
        self.length_average = weight * self.log_length + (1 - weight) * self.length_average

    def end_window(self, like: torch.Tensor) -> bool:
        """At a window end: new inverse mass from the pooled states; True when it changed."""
        n = self.count
        if n < 2:
            return False
        dim = self.inverse_mass.shape[0]
        mean = self.moments[:dim] / n
        variance = (self.moments[dim : 2 * dim] / n - mean**2) * n / (n - 1)
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
        if self.adapt_trajectory_length and self._found_step is not None:
            # Heuristic against heuristic: the dual-averaged step is systematically smaller
            # than the heuristic's (it aims at the acceptance of whole trajectories), and
            # scaling by that ratio would lengthen T at every window end.
            self.log_length += math.log(step_size / self._found_step)
            # ... but no longer than the new metric allows: under it every coordinate has
            # about unit variance, so no direction has an sd above sqrt(dim) and the ChEES-rate
            # optimum (about 1.2 sds of the slowest direction for a Gaussian) stays below
            # 2 sqrt(dim). A first metric fitted to chains still far from the typical set
            # leaves long trajectories that the better one no longer needs (kidiq with 4
            # chains: 14 -> 68 carried over, against 2 with 64 chains), and Adam's noisy
            # moves would take the rest of the warm-up to shorten them.
            ceiling = math.log(2.0 * math.sqrt(self.inverse_mass.shape[0]))
            self.log_length = min(self.log_length, max(ceiling, math.log(step_size)))
            self.length_average = self.log_length
        self._found_step = step_size
        # The criterion's scale changed with the metric: forget the old gradient sizes and
        # the statistics pooled under the old metric.
        self.adam = _Adam(self.adam.learning_rate)
        self._criterion = torch.zeros_like(self._criterion)
        self._criterion_iterations = 0
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
