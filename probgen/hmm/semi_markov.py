"""Hidden semi-Markov models: hidden states with explicit duration distributions.

`HSMM` is an HMM whose states last a number of steps drawn from a per-state duration
distribution on 1..max_duration (`probgen.hmm.durations`: non-parametric, Poisson or negative
binomial) instead of the geometric durations of an HMM's self-transitions; a state is then
left for another through the transition matrix (zero diagonal once fitted). Emissions are the
HMM's families (`probgen.hmm.emissions`). The last segment of each sequence is right-censored,
so `log_prob` is the exact log-density of the sequence as observed, and an HSMM with
geometric durations is the HMM with those self-transitions. Inference is
`probgen.hmm.hsmm_inference` (segment forward recursion, gradients for the e-step, Viterbi
over segments), batched over sequences of different lengths.

Example:
    >>> import torch
    >>> from probgen.hmm.semi_markov import HSMM
    >>> truth = HSMM(2, "categorical", n_symbols=2, duration="poisson", max_duration=8)
    >>> truth = truth.double().set_parameters(
    ...     start_probs=[0.5, 0.5], transition_probs=[[0.0, 1.0], [1.0, 0.0]],
    ...     duration_parameters=[[3.0, 0.0], [1.0, 0.0]], emission_probs=[[0.9, 0.1], [0.2, 0.8]])
    >>> x = truth.sample(4, length=30, seed=0)
    >>> model = HSMM(2, "categorical", duration="poisson", max_duration=8, seed=0, max_iter=5)
    >>> model.double().fit(x).log_prob(x).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any

import torch

import probgen.hmm.durations as durations
import probgen.hmm.hsmm_inference as hsmm_inference
from probgen.core.contract import LogProbKind, Model
from probgen.core.data import Sequences, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.fitting.em import EMResult, fit_restarts, record_fit, run_em
from probgen.hmm.emissions import COVARIANCE_TYPES
from probgen.hmm.hosting import EmissionHostMixin
from probgen.hmm.parameters import HMMParametersMixin, _check_probabilities
from probgen.hmm.sequences import _Batch, _check_nonnegative

EMISSION_FAMILIES = ("categorical", "gaussian", "gmm", "poisson", "multinomial")


class HSMM(EmissionHostMixin, HMMParametersMixin, Model):
    """A hidden semi-Markov model (explicit-duration HMM), fitted by EM.

    Args:
        n_states: number of hidden states.
        emission: ``"categorical"``, ``"gaussian"``, ``"gmm"``, ``"poisson"`` or
            ``"multinomial"`` (as `probgen.HMM`).
        duration: ``"nonparametric"`` (a pmf per state on 1..max_duration), ``"poisson"``
            (d - 1 Poisson) or ``"negative_binomial"`` (d - 1 negative binomial), the last two
            truncated to 1..max_duration.
        max_duration: longest duration of a state.
        n_symbols, n_features, covariance, n_mix, n_trials: the emission's sizes, as `HMM`.
        n_init: EM restarts; the best log-likelihood is kept.
        max_iter: most EM iterations per restart.
        tol: stop when the log-likelihood per step improves by less than this.
        pseudocount: added to start, transition, non-parametric duration and categorical
            counts.
        covariance_prior, covariance_floor: as `HMM`.
        seed: seed of the random starts.

    Attributes:
        start_probs: (n_states,); transition_probs: (n_states, n_states) between segments.
        duration_probs: (n_states, max_duration) the duration pmf, column d - 1 for d.
        duration_parameters: (n_states, 2) rate (Poisson) or (count, prob) (negative
            binomial); unused for non-parametric durations.
        history_: one ``{"iteration", "log_likelihood"}`` record per EM iteration.
    """

    log_prob_kind = LogProbKind.EXACT
    is_sequence_model = True
    fitted_attributes = ("history_", "n_iter_", "converged_")

    def __init__(
        self,
        n_states: int,
        emission: str = "categorical",
        *,
        duration: str = "nonparametric",
        max_duration: int = 20,
        n_symbols: int | None = None,
        n_features: int | None = None,
        covariance: str = "diag",
        n_mix: int = 1,
        n_trials: int | None = None,
        n_init: int = 1,
        max_iter: int = 100,
        tol: float = 1e-6,
        pseudocount: float = 0.0,
        covariance_prior: float = 1e-2,
        covariance_floor: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.n_states = check_positive_int(n_states, "n_states")
        if not isinstance(emission, str):
            raise DataError(f"emission must be one of {EMISSION_FAMILIES}, got {emission!r}")
        self.emission_spec = check_choice(emission, "emission", EMISSION_FAMILIES)
        self.duration = check_choice(duration, "duration", durations.DURATION_FAMILIES)
        self.max_duration = check_positive_int(max_duration, "max_duration")
        self.n_symbols = None if n_symbols is None else check_positive_int(n_symbols, "n_symbols")
        self.n_features = (
            None if n_features is None else check_positive_int(n_features, "n_features")
        )
        self.covariance = check_choice(covariance, "covariance", COVARIANCE_TYPES)
        self.n_mix = check_positive_int(n_mix, "n_mix")
        self.n_trials = None if n_trials is None else check_positive_int(n_trials, "n_trials")
        self.n_init = check_positive_int(n_init, "n_init")
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = _check_nonnegative(tol, "tol")
        self.pseudocount = _check_nonnegative(pseudocount, "pseudocount")
        self.covariance_prior = _check_nonnegative(covariance_prior, "covariance_prior")
        self.covariance_floor = _check_nonnegative(covariance_floor, "covariance_floor")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise DataError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        states, longest = self.n_states, self.max_duration
        self.register_buffer("start_probs", torch.full((states,), 1.0 / states))
        off_diagonal = 1.0 - torch.eye(states) if states > 1 else torch.ones(1, 1)
        self.register_buffer("transition_probs", off_diagonal / off_diagonal.sum(1, keepdim=True))
        self.register_buffer("duration_probs", torch.full((states, longest), 1.0 / longest))
        self.register_buffer("duration_parameters", torch.ones(states, 2))
        self.emission = self._build_emission()
        self._refresh_event_shape()
        self.history_: list[dict[str, Any]] = []
        self.n_iter_ = 0
        self.converged_ = False

    # ---- parameters ------------------------------------------------------------------------
    def set_parameters(self, **parameters: Any) -> HSMM:
        """Set parameters directly (the model then counts as fitted); returns self.

        Keywords: those of `HMM.set_parameters`, and ``duration_probs`` ((n_states,
        max_duration) rows summing to one; non-parametric durations) or
        ``duration_parameters`` ((n_states, 2): rate and 0 for Poisson durations; count > 0
        and prob in (0, 1) for negative binomial ones).
        """
        probs = parameters.pop("duration_probs", None)
        values = parameters.pop("duration_parameters", None)
        shape = (self.n_states, self.max_duration)
        if probs is not None:
            if self.duration != "nonparametric":
                raise DataError("duration_probs applies to duration='nonparametric'")
            tensor = torch.as_tensor(probs, dtype=self.dtype, device=self.device)
            self.duration_probs = _check_probabilities(tensor, "duration_probs", shape).clone()
        if values is not None:
            if self.duration == "nonparametric":
                raise DataError("duration_parameters applies to parametric durations")
            tensor = torch.as_tensor(values, dtype=self.dtype, device=self.device)
            if tuple(tensor.shape) != (self.n_states, 2) or not torch.isfinite(tensor).all():
                raise DataError(f"duration_parameters must be finite, shape ({self.n_states}, 2)")
            bad = (tensor[:, 0] <= 0).any() or (
                self.duration == "negative_binomial"
                and ((tensor[:, 1] <= 0) | (tensor[:, 1] >= 1)).any()
            )
            if bad:
                raise DataError("duration_parameters out of range (rate/count > 0, 0 < prob < 1)")
            self.duration_parameters = tensor.clone()
            self.duration_probs = durations.duration_pmf(self.duration, tensor, self.max_duration)
        if parameters or self.emission is None:
            super().set_parameters(**parameters)
        self._mark_fitted()
        return self

    def _log_parameters(self) -> tuple[torch.Tensor, ...]:
        return (
            self.start_probs.log(),
            self.transition_probs.log(),
            self.duration_probs.log(),
            durations.survival(self.duration_probs).log(),
        )

    # ---- inference -------------------------------------------------------------------------
    def log_prob(self, sequences: Any) -> torch.Tensor:
        """Exact log-likelihood of each sequence, shape (n_sequences,)."""
        self.check_fitted("log_prob")
        with torch.no_grad(), self._threads_for(sequences):
            data = self._prepare(sequences)
            return hsmm_inference.segment_forward(
                *self._log_parameters(), self._emission_log_probs(data), data.lengths
            )

    def score(self, sequences: Any) -> float:
        """Total log-likelihood of the sequences."""
        return float(self.log_prob(sequences).sum())

    def posterior(self, sequences: Any) -> torch.Tensor:
        """State marginals p(z_t | x), shape (n_sequences, max_length, n_states), 0 on padding."""
        self.check_fitted("posterior")
        with self._threads_for(sequences):
            data = self._prepare(sequences)
            return self._statistics(data).posteriors

    def viterbi(self, sequences: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The most probable segmentation of each sequence (Viterbi over segments).

        Returns:
            `(paths, log_probs)`: per-step states (n_sequences, max_length), -1 past each end,
            and log p(x, best segmentation). `segments(path)` lists a path's segments.
        """
        self.check_fitted("viterbi")
        with self._threads_for(sequences):
            data = self._prepare(sequences)
            return hsmm_inference.segment_viterbi(
                *self._log_parameters(), self._emission_log_probs(data), data.lengths
            )

    def predict(self, sequences: Any) -> torch.Tensor:
        """Viterbi state paths."""
        return self.viterbi(sequences)[0]

    def n_parameters(self) -> int:
        """Free parameters: start, transitions (zero diagonal), durations and emissions."""
        self.check_fitted("n_parameters")
        states = self.n_states
        duration = {"nonparametric": states * (self.max_duration - 1), "poisson": states}
        return (
            (states - 1)
            + states * max(states - 2, 0)
            + duration.get(self.duration, 2 * states)
            + self._ensure_emission().n_parameters()
        )

    def _statistics(self, data: Sequences) -> hsmm_inference.SegmentStatistics:
        stats = hsmm_inference.segment_statistics(
            *self._log_parameters(), self._emission_log_probs(data).detach(), data.lengths
        )
        stats.posteriors = stats.posteriors * data.mask.unsqueeze(-1)
        return stats

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, sequences: Any) -> HSMM:
        """Fit by EM (segment forward-backward e-step); returns self.

        Raises:
            DataError: malformed sequences.
            FitError: the log-likelihood became NaN or infinite.
        """
        with self._threads_for(sequences):
            data = self._prepare(sequences, fitting=True)
            batch = _Batch.of(data)
            generator = torch.Generator(device=self.device)
            if self.seed is None:
                generator.seed()
            else:
                generator.manual_seed(int(self.seed))
            n_steps = int(data.lengths.sum())

            def iterate() -> float:
                stats = self._statistics(data)
                total = float(stats.log_likelihood.sum())
                if torch.isfinite(stats.log_likelihood).all():
                    self._m_step(stats, data)
                return total

            def run() -> EMResult:
                return run_em(
                    iterate,
                    max_iter=self.max_iter,
                    tol=self.tol,
                    scale=n_steps,
                    criterion="increase",
                    guard=self,
                    what="HSMM EM",
                    hint="try pseudocount > 0 or a larger max_duration",
                )

            result = fit_restarts(
                self,
                self.n_init,
                lambda restart: self._initialize(batch, generator),
                run,
                # The model is not marked fitted until record_fit: score the restart directly.
                score=None
                if self.n_init == 1
                else lambda _: float(self._statistics(data).log_likelihood.sum()),
            )
        record_fit(
            self,
            result,
            warning=f"HSMM fit stopped at max_iter={self.max_iter} before converging (tol="
            f"{self.tol})",
        )
        return self

    def _initialize(self, batch: _Batch, generator: torch.Generator) -> None:
        states, dtype, device = self.n_states, self.dtype, self.device

        def uniform(*shape: int) -> torch.Tensor:
            draws = torch.rand(*shape, dtype=dtype, generator=generator, device=generator.device)
            return draws.to(device)

        start = 0.5 + uniform(states)
        self.start_probs = start / start.sum()
        transition = (0.5 + uniform(states, states)) * self._off_diagonal()
        self.transition_probs = transition / transition.sum(1, keepdim=True)
        if self.duration == "nonparametric":
            pmf = 0.5 + uniform(states, self.max_duration)
            self.duration_probs = pmf / pmf.sum(1, keepdim=True)
        else:
            self.duration_parameters = durations.initial_parameters(
                self.duration, states, self.max_duration, uniform(states)
            )
            self.duration_probs = durations.duration_pmf(
                self.duration, self.duration_parameters, self.max_duration
            )
        self._ensure_emission().initialize(batch.observed_values, generator)

    def _off_diagonal(self) -> torch.Tensor:
        eye = torch.eye(self.n_states, dtype=self.dtype, device=self.device)
        return 1.0 - eye if self.n_states > 1 else torch.ones_like(eye)

    def _m_step(self, stats: hsmm_inference.SegmentStatistics, data: Sequences) -> None:
        prior = self.pseudocount
        start = stats.start_counts + prior
        self.start_probs = start / start.sum()
        transition = (stats.transition_counts + prior) * self._off_diagonal()
        total = transition.sum(1, keepdim=True)
        self.transition_probs = torch.where(total > 0, transition / total, self.transition_probs)
        counts = durations.expected_durations(
            self.duration_probs, stats.duration_counts, stats.censored_counts
        )
        if self.duration == "nonparametric":
            counts = counts + prior
            total = counts.sum(1, keepdim=True)
            self.duration_probs = torch.where(total > 0, counts / total, self.duration_probs)
        else:
            self.duration_parameters = durations.fit_parameters(
                self.duration, self.duration_parameters, counts
            )
            self.duration_probs = durations.duration_pmf(
                self.duration, self.duration_parameters, self.max_duration
            )
        emission = self._ensure_emission()
        mask = data.mask
        weights = stats.posteriors[mask].to(self.dtype)
        emission.m_step(emission.statistics(data.values[mask], weights))

    # ---- sampling --------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        length: int,
        seed: int | torch.Generator | None = None,
        return_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw `n` sequences of `length` steps (and their states when `return_states`)."""
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        length = check_positive_int(length, "length")
        generator = self.make_generator(seed)
        uniform = torch.rand(
            length, 2, n, 1, dtype=self.dtype, generator=generator, device=generator.device
        ).to(self.device)
        last_state, last_duration = self.n_states - 1, self.max_duration - 1
        start_cdf = self.start_probs.cumsum(-1).expand(n, -1).contiguous()
        transition_cdf = self.transition_probs.cumsum(-1)
        duration_cdf = self.duration_probs.cumsum(-1)
        states = torch.empty(n, length, dtype=torch.long, device=self.device)
        state = torch.searchsorted(start_cdf, uniform[0, 0]).squeeze(1).clamp_max(last_state)
        remaining = torch.zeros(n, dtype=torch.long, device=self.device)
        for t in range(length):
            if t:
                new = torch.searchsorted(transition_cdf[state], uniform[t, 0]).squeeze(1)
                state = torch.where(remaining == 0, new.clamp_max(last_state), state)
            drawn = torch.searchsorted(duration_cdf[state], uniform[t, 1]).squeeze(1)
            remaining = torch.where(remaining == 0, drawn.clamp_max(last_duration) + 1, remaining)
            states[:, t] = state
            remaining = remaining - 1
        with torch.no_grad():
            observations = self._ensure_emission().sample(states, generator)
        return (observations, states) if return_states else observations


def segments(path: Any) -> list[tuple[int, int, int]]:
    """The segments ``(state, start, duration)`` of one state path (runs of one state; -1 ends).

    Example:
        >>> segments([0, 0, 1, 1, 1, -1])
        [(0, 0, 2), (1, 2, 3)]
    """
    values = [int(v) for v in (path.tolist() if hasattr(path, "tolist") else path)]
    result: list[tuple[int, int, int]] = []
    for index, value in enumerate(values):
        if value < 0:
            break
        if result and result[-1][0] == value:
            state, begin, duration = result[-1]
            result[-1] = (state, begin, duration + 1)
        else:
            result.append((value, index, 1))
    return result
