"""Fitting an HMM: the e-step and m-step, and batch, minibatch (stepwise) and gradient EM.

The loops run on the shared EM driver `probgen.fitting.em` (restarts, convergence, divergence
guard, the fit record); `HMMFitMixin` gives `probgen.hmm.model.HMM` these methods.

Example:
    >>> from probgen.hmm import HMM
    >>> hmm = HMM(2, emission="poisson").set_parameters(rates=[[1.0], [4.0]])
    >>> statistics, log_likelihoods = hmm.e_step([[[0], [5], [4]]])
    >>> sorted(statistics), log_likelihoods.shape
    (['emission.sum', 'emission.weight', 'start', 'transition'], torch.Size([1]))
"""

from __future__ import annotations

import math
import warnings
from typing import Any, TypeVar

import torch

import probgen.hmm.inference as hmm_inference
import probgen.hmm.sharded as hmm_sharded
from probgen.core.data import Sequences
from probgen.core.distributed_restarts import (
    fit_restarts_across_ranks,
    restart_seed,
    restart_split,
)
from probgen.core.errors import DataError, FitError
from probgen.fitting.em import (
    EMResult,
    fit_restarts,
    parameters_finite,
    record_fit,
    run_em,
    snapshot,
)
from probgen.hmm.emissions import (
    Emission,
    TorchDistributionEmission,
)
from probgen.hmm.labels import check_states, clamp_log_probs
from probgen.hmm.parameters import _normalize_with_fallback
from probgen.hmm.sequences import _Batch

_Model = TypeVar("_Model", bound="HMMFitMixin")


class HMMFitMixin:
    """EM and gradient fitting for `probgen.hmm.model.HMM` (a mixin: it uses the HMM's state)."""

    def e_step(
        self, sequences: Any, *, states: Any = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Expected sufficient statistics of `sequences` and their log-likelihoods.

        The statistics are additive: sums over batches (or an `all_reduce` across processes)
        are the statistics of the union, which `m_step` maps to parameters.

        Args:
            sequences: the observations.
            states: known states per step (-1 unknown), as for `fit`; the statistics and
                log-likelihoods are then those of the observations jointly with the labels.

        Returns:
            `(statistics, log_likelihoods)`: a dict of tensors and (n_sequences,).
        """
        with torch.no_grad(), self._threads_for(sequences):
            if isinstance(sequences, _Batch):
                batch = sequences
            else:
                data = self._prepare(sequences)
                labels = None if states is None else check_states(states, data, self.n_states)
                batch = _Batch.of(data, labels)
            emission = self._ensure_emission()
            if not emission.supports_em:
                raise DataError(
                    "custom torch-distribution emissions are fitted by gradient, not EM"
                )
            max_length, n_sequences = batch.mask_tm.shape
            method = hmm_inference.statistics_method(n_sequences, max_length, self.n_states)
            if batch.states_tm is not None:
                expected, emission_statistics = self._e_step_labelled(batch, emission)
            elif method == "scan":
                expected, emission_statistics = self._e_step_scan(batch, emission)
            else:
                expected, emission_statistics = self._e_step_sequential(batch, emission)
        statistics = {"start": expected.start_counts, "transition": expected.transition_counts}
        for key, value in emission_statistics.items():
            statistics[f"emission.{key}"] = value
        return statistics, expected.log_likelihood

    def _e_step_sequential(
        self, batch: _Batch, emission: Emission
    ) -> tuple[hmm_inference.ExpectedStatistics, dict[str, torch.Tensor]]:
        """E-step by scaled forward-backward, state-major throughout.

        Emissions come out of `scaled_probs` in the layout of the time-step loops and the
        posteriors go back to the emission as they are, so no transposed copies are made; the
        prepared inputs and the large arrays are kept in the batch from one iteration to the
        next.
        """
        max_length, n_sequences = batch.mask_tm.shape
        mask = None if batch.complete else batch.mask_tm
        inputs = batch.emission_inputs(emission)
        workspace = batch.workspace
        buffer = workspace.state_major(
            "emission_probs",
            (max_length, self.n_states, n_sequences),
            self.start_probs,
            state_outer=emission.state_outer(inputs),
        )
        emission_probs, offsets = emission.scaled_probs(inputs, mask, out=buffer)
        expected = hmm_inference.expected_statistics_state_major(
            self.start_probs,
            self.transition_probs,
            emission_probs,
            offsets,
            mask,
            workspace=workspace,
        )
        return expected, emission.posterior_statistics(inputs, expected.posteriors)

    def _e_step_scan(
        self, batch: _Batch, emission: Emission
    ) -> tuple[hmm_inference.ExpectedStatistics, dict[str, torch.Tensor]]:
        """E-step by parallel scan over time (long sequences with few states)."""
        expected = hmm_inference.expected_statistics(
            self.start_probs,
            self.transition_probs,
            emission.log_prob(batch.values_tm),
            None if batch.complete else batch.lengths,
            time_major=True,
            method="scan",
        )
        if batch.complete:
            weights = expected.posteriors.reshape(-1, self.n_states)
        else:
            weights = expected.posteriors[batch.mask_tm]
        return expected, emission.statistics(batch.observed_values, weights)

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        """Parameters maximising the expected complete log-likelihood plus the log prior.

        Only the groups named in ``update_params`` change; the others stay fixed.
        """
        emission = self._ensure_emission()
        update = self.update_params
        if "start" in update:
            self.start_probs = _normalize_with_fallback(
                statistics["start"] + self.pseudocount, self.start_probs
            )
        if "transitions" in update:
            self.transition_probs = _normalize_with_fallback(
                statistics["transition"] + self.pseudocount, self.transition_probs
            )
        if "emissions" in update:
            emission.m_step(
                {
                    key.removeprefix("emission."): value
                    for key, value in statistics.items()
                    if key.startswith("emission.")
                }
            )

    def log_prior(self) -> torch.Tensor:
        """Log prior density of the parameters (the penalty the m-step maximises)."""
        prior = self._ensure_emission().log_prior()
        if self.pseudocount:
            prior = prior + self.pseudocount * (
                self.start_probs.log().sum() + self.transition_probs.log().sum()
            )
        return prior

    def fit(
        self: _Model,
        sequences: Any,
        *,
        states: Any = None,
        seed: int | None = None,
        warm_start: bool = False,
        progress: bool | None = None,
        inputs: Any = None,
    ) -> _Model:
        """Fit by Baum-Welch EM (gradient ascent for custom emissions); returns self.

        Under `torch.distributed` (`probgen.distributed.is_distributed()`), `sequences` (and
        `states`) are this rank's whole sequences: the fit is over all ranks' sequences (in
        rank order), every rank ends with the same parameters, equal to a single-process fit
        on the concatenated sequences up to rounding (`probgen.hmm.sharded`). Every rank calls
        `fit` with the same settings; minibatch EM draws its minibatches from all ranks'
        sequences. Custom (gradient-fitted) emissions and input-output HMMs are not sharded.
        Inside `probgen.distributed.restarts_across_ranks()` every rank passes all the
        sequences instead and the `n_init` restarts are split over the ranks (rank r runs
        r, r + world, ...; not for minibatch EM); every rank ends with the single-process
        fit's best restart.

        Args:
            sequences: list of arrays of different lengths, a padded array, or `Sequences`.
            states: known hidden states, shaped like `sequences` without the event axes (one
                integer array per sequence), -1 where unknown. EM then clamps the known
                states (semi-supervised EM, `probgen.hmm.labels`) and `history_` records
                log p(observations, known states). With every state known (and no missing
                observation, for categorical, Gaussian, Poisson and multinomial emissions)
                the fit is the closed-form maximum-likelihood estimate by counting, recorded
                as one iteration.
            seed: deprecated, give ``HMM(..., seed=...)``; still overrides the constructor's
                `seed` for the random starts for one release.
            warm_start: start the first restart from the current parameters (set by a
                previous fit or `set_parameters`) instead of a random/k-means start.
            progress: deprecated, give ``HMM(..., progress=...)``; still overrides the
                constructor's `progress` for one release.
            inputs: the covariates of an input-output HMM (``transition_inputs > 0``): one
                row of k per step, (n_sequences, length, k) or a list of (length_i, k)
                arrays; fitted by generalised EM (`probgen.hmm.io_hmm`).

        Raises:
            DataError: malformed sequences.
            FitError: the log-likelihood became NaN or infinite (the last good parameters
                are kept).
        """
        for name, value in (("seed", seed), ("progress", progress)):
            if value is not None:
                warnings.warn(
                    f"HMM.fit({name}=...) is deprecated and will be removed in the next "
                    f"release; give it to the constructor instead: HMM(..., {name}=...)",
                    DeprecationWarning,
                    stacklevel=2,
                )
        hmm_sharded.refuse_input_output(self, inputs)  # under torch.distributed
        if self.transition_inputs or inputs is not None:
            from probgen.hmm.io_hmm import fit_with_inputs  # input-output HMMs

            with self._threads_for(sequences):
                result = fit_with_inputs(
                    self, sequences, inputs, states=states, seed=seed, warm_start=warm_start
                )
            record_fit(
                self,
                result,
                warning=f"input-output HMM fit stopped at max_iter={self.max_iter}",
            )
            return self
        with self._threads_for(sequences):
            inferred = self.n_symbols is None
            data = self._prepare(sequences, fitting=True)
            hmm_sharded.agree_on_sizes(self, inferred)  # under torch.distributed
            labels = None if states is None else check_states(states, data, self.n_states)
            result = self._fit_restarts(data, seed, warm_start, progress, labels)
        record_fit(
            self,
            result,
            warning=(
                f"HMM fit stopped at max_iter={self.max_iter} before the log-likelihood per "
                f"step changed by less than tol={self.tol}"
            ),
        )
        return self

    def _fit_restarts(
        self,
        data: Sequences,
        seed: int | None,
        warm_start: bool,
        progress: bool | None,
        labels: torch.Tensor | None = None,
    ) -> EMResult:
        """Run every restart and keep the best one's parameters; the best run's record."""
        batch = _Batch.of(data, labels)
        generator = torch.Generator(device=self.device)
        # Under torch.distributed `data` is this rank's sequences (`probgen.hmm.sharded`).
        hmm_sharded.check_supported(self, data.n_sequences)
        chosen_seed = hmm_sharded.agree_on_seed(self.seed if seed is None else seed)
        # Inside `probgen.distributed.restarts_across_ranks()` every rank replays every start.
        chosen_seed = restart_seed(chosen_seed)
        split = restart_split()[1] > 1 and self.n_init > 1
        if split and self.batch_size is not None:
            raise DataError(
                "restarts_across_ranks cannot split the restarts of minibatch EM (batch_size="
                f"{self.batch_size}): each restart draws its minibatches from the generator "
                "the later starts use, so a rank cannot replay the starts of restarts it does "
                "not run; fit with batch_size=None or outside restarts_across_ranks"
            )
        if chosen_seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(chosen_seed))
        show = self.progress if progress is None else bool(progress)
        n_steps = hmm_sharded.summed_count(int(data.lengths.sum()))
        emission = self._ensure_emission()
        use_gradient = not emission.supports_em
        # Groups left out of init_params start every restart from their values now.
        initialise_all = set(self.init_params) == {"start", "transitions", "emissions"}
        kept = None if initialise_all else snapshot(self)
        if kept is not None and "emissions" not in self.init_params and not self.fitted_:
            raise DataError(
                "init_params leaves out 'emissions', so fit starts from the current emission "
                "parameters: give them with set_parameters first"
            )

        def run() -> EMResult:
            if use_gradient:
                return self._fit_gradient(data, n_steps, bar, labels)
            if hmm_sharded.all_ranks(self._closed_form(batch)):
                return hmm_sharded.fit_counting(self, batch)
            if self.batch_size is not None:
                return self._fit_online(data, n_steps, generator, bar, labels)
            return self._fit_em(batch, n_steps, bar)

        bar = _progress_bar(show, self.n_init * self.max_iter)
        try:
            return (fit_restarts_across_ranks if split else fit_restarts)(
                self,
                self.n_init,
                lambda restart: self._initialize(batch, generator, restart, kept),
                run,
                warm_start=warm_start and self.fitted_,
                score=None
                if self.n_init == 1
                else lambda _: self._final_log_likelihood(data if labels is None else batch),
            )
        finally:
            if bar is not None:
                bar.close()

    def _final_log_likelihood(self, data: Sequences | _Batch) -> float:
        """log p(data) at the parameters a restart returns, by which restarts are ranked.

        Batch EM records the log-likelihood at the parameters each iteration started from,
        one m-step behind the returned ones, so ranking by its record could keep a worse
        restart; one forward pass per restart settles it. A labelled batch is ranked by
        log p(data, known states).
        """
        with torch.no_grad():
            if isinstance(data, _Batch):
                total = float(self.e_step(data)[1].sum())
            else:
                total = float(self._log_prob_prepared(data).sum())
            total = hmm_sharded.reduced_total(total, self.dtype)
        return total if math.isfinite(total) else -math.inf

    def _initialize(
        self,
        batch: _Batch,
        generator: torch.Generator,
        restart: int,
        kept: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """A fresh start; the groups not in ``init_params`` are set back to `kept`."""
        self._initialize_all(batch, generator, restart)
        if kept is None:
            return
        if "start" not in self.init_params:
            self.start_probs = kept["start_probs"].clone()
        if "transitions" not in self.init_params:
            self.transition_probs = kept["transition_probs"].clone()
        if "emissions" not in self.init_params:
            self._ensure_emission().load_state_dict(
                {
                    key.removeprefix("emission."): value.clone()
                    for key, value in kept.items()
                    if key.startswith("emission.")
                }
            )

    def _initialize_all(self, batch: _Batch, generator: torch.Generator, restart: int) -> None:
        n_states = self.n_states
        dtype, device = self.dtype, self.device
        emission = self._ensure_emission()
        if isinstance(emission, TorchDistributionEmission):
            # The template's parameters are the start; later restarts perturb them.
            if restart > 0:
                emission.perturb(generator)
            noise = torch.rand(
                n_states, n_states, dtype=dtype, generator=generator, device=generator.device
            ).to(device)
            if restart > 0:
                self.transition_probs = _normalize_with_fallback(
                    self.transition_probs + 0.2 * noise, self.transition_probs
                )
            return
        noise_start = torch.rand(
            n_states, dtype=dtype, generator=generator, device=generator.device
        ).to(device)
        noise = torch.rand(
            n_states, n_states, dtype=dtype, generator=generator, device=generator.device
        ).to(device)
        self.start_probs = (0.5 + noise_start) / (0.5 + noise_start).sum()
        sticky = 0.6 * torch.eye(n_states, dtype=dtype, device=device) + 0.4 / n_states
        self.transition_probs = 0.5 * noise / noise.sum(-1, keepdim=True) + 0.5 * sticky
        if "emissions" in self.init_params:
            hmm_sharded.initialize_emission(emission, batch, generator)

    def _fit_em(self, batch: _Batch, n_steps: int, bar: Any) -> EMResult:
        # The penalised objective uses the log prior at the parameters the e-step ran at,
        # i.e. before the m-step that `iterate` also runs.
        log_prior = 0.0

        def iterate() -> float:
            nonlocal log_prior
            statistics, total = hmm_sharded.reduced_e_step(self, batch)  # summed over ranks
            if not math.isfinite(total):
                return total  # run_em restores the last good parameters and raises
            log_prior = float(self.log_prior())
            self.m_step(statistics)
            return total

        # Rounding alone moves a sum over n_steps terms by about eps * n_steps, which
        # matters in float32 when the log-likelihood is near zero.
        rounding = 8 * torch.finfo(self.dtype).eps * n_steps
        return run_em(
            iterate,
            max_iter=self.max_iter,
            tol=self.tol,
            scale=n_steps,
            criterion="increase",
            objective=lambda total: total + log_prior,
            decrease_tolerance=lambda previous: max(1e-7 * max(1.0, abs(previous)), rounding),
            guard=self,
            on_iteration=lambda total: _advance(bar, total / n_steps),
            what="HMM EM",
            hint="try pseudocount > 0 or a larger covariance_floor",
        )

    def _fit_online(
        self,
        data: Sequences,
        n_steps: int,
        generator: torch.Generator,
        bar: Any,
        labels: torch.Tensor | None = None,
    ) -> EMResult:
        """Stepwise EM: running statistics s <- (1 - rho) s + rho * (scaled batch statistics).

        The parameters change after every minibatch, so the sum of the minibatch
        log-likelihoods of an epoch belongs to no single set of parameters. Each epoch
        therefore ends with one forward pass over all the data at the parameters it leaves;
        that log-likelihood is what `history_` records, what convergence is judged on and
        what restarts are ranked by. The pass adds 6-15% to an epoch of 500 sequences x 200
        steps with batch_size=50 (benchmarks/hmm_online_history.py; more when an epoch has
        only a few minibatches).
        """
        # Under torch.distributed the minibatches are drawn from all ranks' sequences.
        offset, n_sequences = hmm_sharded.sequence_layout(data.n_sequences)
        batch_size = min(self.batch_size or n_sequences, n_sequences)
        running: dict[str, torch.Tensor] | None = None
        updates = 0

        def epoch() -> float:
            # Each minibatch step keeps its own last good parameters, so the driver needs none.
            nonlocal running, updates
            order = torch.randperm(n_sequences, generator=generator, device=generator.device)
            for begin in range(0, n_sequences, batch_size):
                index = order[begin : begin + batch_size].to(self.device)
                last_good = snapshot(self)
                statistics, batch_total = hmm_sharded.minibatch_e_step(
                    self, data, labels, index, offset
                )
                if not math.isfinite(batch_total):
                    self.load_state_dict(last_good)
                    raise FitError(
                        "the log-likelihood of a minibatch became non-finite; "
                        "the model keeps its last good parameters"
                    )
                scale = n_sequences / int(index.numel())
                step = (updates + 2) ** (-self.step_decay)
                if running is None:
                    running = {k: v * scale for k, v in statistics.items()}
                else:
                    running = {
                        k: (1 - step) * running[k] + step * scale * v for k, v in statistics.items()
                    }
                updates += 1
                self.m_step(running)
                if not parameters_finite(self):
                    self.load_state_dict(last_good)
                    raise FitError(
                        "a minibatch EM step produced non-finite parameters; the "
                        "model keeps its last good parameters"
                    )
            with torch.no_grad():
                if labels is not None:
                    total = float(self.e_step(_Batch.of(data, labels))[1].sum())
                else:
                    total = float(self._log_prob_prepared(data).sum())
            return hmm_sharded.reduced_total(total, self.dtype)

        return run_em(
            epoch,
            max_iter=self.max_iter,
            tol=self.tol,
            scale=n_steps,
            criterion="change",
            on_iteration=lambda total: _advance(bar, total / n_steps),
            what="HMM minibatch EM",
        )

    def _fit_gradient(
        self, data: Sequences, n_steps: int, bar: Any, labels: torch.Tensor | None = None
    ) -> EMResult:
        """Adam on the exact log-likelihood (custom torch-distribution emissions)."""
        emission = self._ensure_emission()
        start_logits = self.start_probs.clamp_min(1e-30).log().clone().requires_grad_(True)
        transition_logits = (
            self.transition_probs.clamp_min(1e-30).log().clone().requires_grad_(True)
        )
        update = self.update_params
        parameters = [
            *([start_logits] if "start" in update else []),
            *([transition_logits] if "transitions" in update else []),
            *(emission.parameters() if "emissions" in update else []),
        ]
        # Adam needs at least one tensor; with nothing to update the steps change nothing.
        learning_rate = self.learning_rate if parameters else 0.0
        optimizer = torch.optim.Adam(parameters or [start_logits], lr=learning_rate)

        def step() -> float:
            optimizer.zero_grad()
            emission_log_probs = emission.log_prob(data.values)
            if labels is not None:
                emission_log_probs = clamp_log_probs(emission_log_probs, labels)
            log_likelihoods = hmm_inference.hmm_log_likelihood(
                start_logits, transition_logits, emission_log_probs, data.lengths
            )
            total = log_likelihoods.sum()
            if not torch.isfinite(total):
                return float(total.detach())  # run_em restores the last good parameters
            (-total / n_steps).backward()
            optimizer.step()
            with torch.no_grad():
                if "start" in update:
                    self.start_probs = torch.softmax(start_logits, -1).detach()
                if "transitions" in update:
                    self.transition_probs = torch.softmax(transition_logits, -1).detach()
            return float(total.detach())

        try:
            return run_em(
                step,
                max_iter=self.max_iter,
                tol=self.tol,
                scale=n_steps,
                criterion="change",
                guard=self,
                on_iteration=lambda total: _advance(bar, total / n_steps),
                what="HMM gradient fit",
            )
        finally:
            for parameter in emission.parameters():
                parameter.grad = None


def _progress_bar(show: bool, total: int) -> Any:
    if not show:
        return None
    from probgen.core.progress import progress_bar

    return progress_bar(total, "HMM fit", unit="iter", mininterval=0.5, leave=True)


def _advance(bar: Any, per_step: float) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loglik_per_step=f"{per_step:.5f}")
