"""Hidden Markov models with categorical, Gaussian, Gaussian-mixture, Poisson or custom emissions.

`HMM` is a `probgen.core.contract.Model`: `fit` runs Baum-Welch EM (an e-step that returns additive
sufficient statistics and an m-step from them; restarts, minibatch EM), `log_prob` gives one
log-likelihood per sequence, `sample(n, length=T)` draws sequences, and `posterior`, `viterbi`,
`aic`, `bic`, `as_pyro`, `from_hmmlearn` / `to_hmmlearn` cover the rest of what an HMM user
expects. All inference is batched over sequences in `probgen.hmm.inference`.

The class is assembled from mixins by job: `probgen.hmm.fit` (e-step, m-step and the EM
variants), `probgen.hmm.parameters` (`set_parameters`) and `probgen.hmm.interop` (Pyro and
hmmlearn conversion); `probgen.hmm.sequences` holds the input helpers.

Example:
    >>> import torch
    >>> from probgen.hmm.model import HMM
    >>> truth = HMM(2, emission="categorical", n_symbols=3)
    >>> truth.set_parameters(start_probs=[0.5, 0.5], transition_probs=[[0.9, 0.1], [0.2, 0.8]],
    ...                      emission_probs=[[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    HMM(...)
    >>> rolls = truth.sample(20, length=50, seed=0)
    >>> model = HMM(2, emission="categorical", n_symbols=3, seed=0).fit(rolls)
    >>> model.log_prob(rolls).shape
    torch.Size([20])
"""

from __future__ import annotations

import math
from typing import Any

import torch

import probgen.hmm.inference as hmm_inference
import probgen.hmm.io_hmm as io_hmm
from probgen.core.contract import LogProbKind, Model
from probgen.core.data import Sequences, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.hmm.decoding import HMMDecodingMixin
from probgen.hmm.emissions import (
    COVARIANCE_TYPES,
    Emission,
    TorchDistributionEmission,
)
from probgen.hmm.fit import HMMFitMixin
from probgen.hmm.hosting import _VECTOR_FAMILIES, EmissionHostMixin
from probgen.hmm.interop import HMMInteropMixin
from probgen.hmm.labels import HMMLabelsMixin, check_states, clamp_log_probs
from probgen.hmm.parameters import HMMParametersMixin
from probgen.hmm.sequences import _check_nonnegative

EMISSION_FAMILIES = ("categorical", "gaussian", "gmm", "poisson", "multinomial")
# The parameter groups `init_params` and `update_params` choose from.
PARAMETER_GROUPS = ("start", "transitions", "emissions")
__all__ = ["EMISSION_FAMILIES", "HMM", "PARAMETER_GROUPS", "_VECTOR_FAMILIES"]


class HMM(
    HMMFitMixin,
    HMMLabelsMixin,
    HMMDecodingMixin,
    HMMParametersMixin,
    HMMInteropMixin,
    EmissionHostMixin,
    Model,
):
    """A hidden Markov model with emissions batched over its hidden states.

    Args:
        n_states: number of hidden states (>= 1).
        emission: ``"categorical"``, ``"gaussian"``, ``"gmm"``, ``"poisson"``,
            ``"multinomial"`` (count vectors; no missing values), or a torch
            distribution with batch shape (n_states,) (its parameter values are the starting
            point; fitted by gradient ascent on the exact log-likelihood).
        n_symbols: number of symbols of categorical emissions (inferred from data when None).
        n_features: features per step of Gaussian, mixture and Poisson emissions (inferred
            when None).
        covariance: ``"diag"``, ``"full"``, ``"spherical"`` or ``"tied"`` (Gaussian emissions;
            the mixture family takes the first three).
        n_mix: Gaussians per state for ``emission="gmm"``.
        n_trials: draws per step of ``emission="multinomial"`` (count vectors over
            `n_features` categories, hmmlearn's `MultinomialHMM`); needed only to sample, since
            `log_prob` takes each step's total from its counts.
        n_init: EM restarts from different random starts; the best log-likelihood is kept.
        max_iter: most EM iterations (or gradient steps, or minibatch epochs) per restart.
        tol: stop when the log-likelihood per observed step improves by less than this.
        pseudocount: Dirichlet pseudocount added to start, transition, categorical-emission
            and mixture-weight counts (0 = maximum likelihood, as hmmlearn's defaults).
        covariance_prior: added to each state's scatter before dividing by its weight, to
            every entry of the matrix for full and tied covariances (exactly hmmlearn's scalar
            ``covars_prior``), so a state with constant data keeps a positive variance.
        covariance_floor: smallest variance (eigenvalue) a fit may produce.
        batch_size: sequences per minibatch for online (stepwise) EM; None for full-batch EM.
        step_decay: online EM step size (k + 2) ** -step_decay, in (0.5, 1].
        learning_rate: Adam step size for custom-emission (gradient) fits.
        seed: seed of the random starts (None: fresh randomness every fit).
        progress: show a tqdm progress bar during `fit`.
        init_params: the parameters `fit` initialises at each restart, from ``"start"``,
            ``"transitions"`` and ``"emissions"`` (hmmlearn's ``init_params``); the others
            start from their current values (set with `set_parameters`).
        update_params: the parameters EM re-estimates, from the same names (hmmlearn's
            ``params``); the others stay fixed, e.g. ``("transitions", "emissions")`` keeps
            the start probabilities of a left-right model.
        transition_inputs: number k of covariates per step that drive the transitions (an
            input-output HMM, `probgen.hmm.io_hmm`): p(z_t | z_{t-1} = i, u_t) =
            softmax(log transition_probs[i] + u_t @ transition_input_weights[i]). Then `fit`,
            `log_prob`, `posterior`, `viterbi`, `predict`, `score` and `sample` need
            ``inputs=`` of shape (n_sequences, length, k) (or a list of (length_i, k) arrays),
            or take the pair ``(sequences, inputs)`` in place of `sequences`. 0: a plain HMM.
        start_inputs: let the first state depend on the first step's inputs too
            (softmax(log start_probs + u_0 @ start_input_weights)); needs transition_inputs.

    Missing values are marginalised: NaN entries of Gaussian, mixture and Poisson observations
    (whole rows or single features, any covariance type) and missing symbols of categorical
    observations, written -1 (or NaN in float input). A missing entry contributes probability
    one to every state; EM takes statistics from the observed entries only (for partly
    observed rows of full or tied covariances, the conditional expectation of the missing
    entries given the observed ones, the exact E-step).

    Attributes:
        start_probs: (n_states,) initial state distribution.
        transition_probs: (n_states, n_states), row i is p(z_t | z_{t-1} = i).
        history_: one record per iteration of the kept restart,
            ``{"iteration": i, "log_likelihood": total log-likelihood of the training data}``,
            at the parameters the iteration started from (batch EM) or, for minibatch EM, at
            the parameters the epoch ends with. With ``n_init > 1`` the kept restart is the one
            whose returned parameters score highest.
        n_iter_: iterations run; converged_: whether `tol` was met.

    Example:
        >>> import torch
        >>> x = [torch.randn(30, 2, generator=torch.Generator().manual_seed(i)) for i in range(4)]
        >>> hmm = HMM(2, emission="gaussian", covariance="full", seed=0, max_iter=5).fit(x)
        >>> hmm.means.shape, hmm.log_prob(x).shape
        (torch.Size([2, 2]), torch.Size([4]))
    """

    log_prob_kind = LogProbKind.EXACT
    is_sequence_model = True
    distributed_fit = True  # sharded EM over all ranks' sequences (probgen.hmm.sharded)
    fitted_attributes = ("history_", "n_iter_", "converged_")

    def __init__(
        self,
        n_states: int,
        emission: str | torch.distributions.Distribution | dict[str, Any] = "categorical",
        *,
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
        batch_size: int | None = None,
        step_decay: float = 0.6,
        learning_rate: float = 0.05,
        seed: int | None = None,
        progress: bool = False,
        init_params: tuple[str, ...] | list[str] = PARAMETER_GROUPS,
        update_params: tuple[str, ...] | list[str] = PARAMETER_GROUPS,
        transition_inputs: int = 0,
        start_inputs: bool = False,
    ) -> None:
        super().__init__()
        self.n_states = check_positive_int(n_states, "n_states")
        if isinstance(emission, str):
            check_choice(emission, "emission", EMISSION_FAMILIES)
        elif not isinstance(emission, (torch.distributions.Distribution, dict)):
            raise DataError(
                "emission must be one of 'categorical', 'gaussian', 'gmm', 'poisson', "
                f"'multinomial' or a torch distribution batched over states; got {emission!r}"
            )
        self.covariance = check_choice(covariance, "covariance", COVARIANCE_TYPES)
        self.n_symbols = None if n_symbols is None else check_positive_int(n_symbols, "n_symbols")
        self.n_features = (
            None if n_features is None else check_positive_int(n_features, "n_features")
        )
        self.n_mix = check_positive_int(n_mix, "n_mix")
        self.n_trials = None if n_trials is None else check_positive_int(n_trials, "n_trials")
        self.n_init = check_positive_int(n_init, "n_init")
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = _check_nonnegative(tol, "tol")
        self.pseudocount = _check_nonnegative(pseudocount, "pseudocount")
        self.covariance_prior = _check_nonnegative(covariance_prior, "covariance_prior")
        self.covariance_floor = _check_nonnegative(covariance_floor, "covariance_floor")
        self.batch_size = (
            None if batch_size is None else check_positive_int(batch_size, "batch_size")
        )
        if not 0.5 < float(step_decay) <= 1.0:
            raise DataError(f"step_decay must lie in (0.5, 1], got {step_decay!r}")
        self.step_decay = float(step_decay)
        if not float(learning_rate) > 0:
            raise DataError(f"learning_rate must be positive, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise DataError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self.progress = bool(progress)
        self.init_params = _check_parameter_groups(init_params, "init_params")
        self.update_params = _check_parameter_groups(update_params, "update_params")

        self.emission_spec = emission
        self.register_buffer("start_probs", torch.full((n_states,), 1.0 / n_states))
        self.register_buffer("transition_probs", torch.full((n_states, n_states), 1.0 / n_states))
        self.transition_inputs = io_hmm.check_transition_inputs(transition_inputs)
        if not isinstance(start_inputs, bool):
            raise DataError(f"start_inputs must be True or False, got {start_inputs!r}")
        if start_inputs and not self.transition_inputs:
            raise DataError("start_inputs=True needs transition_inputs > 0 (the input width)")
        self.start_inputs = start_inputs
        if self.transition_inputs:
            k = self.transition_inputs
            self.register_buffer("transition_input_weights", torch.zeros(n_states, k, n_states))
            if start_inputs:
                self.register_buffer("start_input_weights", torch.zeros(k, n_states))
        self.emission: Emission | None = self._build_emission()
        if isinstance(self.emission, TorchDistributionEmission) and isinstance(
            emission, torch.distributions.Distribution
        ):
            self.to(self.emission.unconstrained[next(iter(self.emission.unconstrained))].dtype)
        self._refresh_event_shape()
        self.history_: list[dict[str, Any]] = []
        self.n_iter_ = 0
        self.converged_ = False

    # ---- inference -------------------------------------------------------------------------
    def log_prob(self, sequences: Any, *, inputs: Any = None, method: str = "auto") -> torch.Tensor:
        """Log-likelihood of each sequence, shape (n_sequences,).

        Args:
            sequences: a list of arrays (length, *event) of different lengths, an array
                (n_sequences, length, *event), or `Sequences`.
            inputs: the covariates of an input-output HMM (``transition_inputs > 0``), one
                row of k per step; the value is then log p(x | u).
            method: ``"auto"``, ``"sequential"`` or ``"scan"`` (parallel scan over time).
        """
        self.check_fitted("log_prob")
        if self.transition_inputs or inputs is not None:
            return io_hmm.run_inference(self, sequences, inputs, "log_prob")
        with torch.no_grad(), self._threads_for(sequences):
            return self._log_prob_prepared(self._prepare(sequences), method)

    def _log_prob_prepared(self, data: Sequences, method: str = "auto") -> torch.Tensor:
        """`log_prob` of prepared sequences (also what minibatch EM records per epoch)."""
        n_sequences, max_length = data.values.shape[:2]
        if method == "auto":
            method = hmm_inference.forward_method(n_sequences, max_length, self.n_states)
        if method == "sequential":
            return self._log_prob_sequential(data)
        return hmm_inference.log_likelihood(
            self.start_probs,
            self.transition_probs,
            self._emission_log_probs(data),
            data.lengths,
            method=method,
        )

    def _log_prob_sequential(self, data: Sequences) -> torch.Tensor:
        """Forward pass with emissions produced directly in the loops' state-major layout."""
        emission = self._ensure_emission()
        mask_tm = data.mask.t()
        mask = None if bool(mask_tm.all()) else mask_tm
        inputs = emission.prepare(data.values.transpose(0, 1))
        emission_probs, offsets = emission.scaled_probs(inputs, mask)
        return hmm_inference.log_likelihood_state_major(
            self.start_probs, self.transition_probs, emission_probs, offsets, mask
        )

    def score(self, sequences: Any, *, inputs: Any = None) -> float:
        """Total log-likelihood of the sequences (hmmlearn's `score`)."""
        return float(self.log_prob(sequences, inputs=inputs).sum())

    def posterior(self, sequences: Any, *, states: Any = None, inputs: Any = None) -> torch.Tensor:
        """State marginals p(z_t | x), shape (n_sequences, max_length, n_states), 0 on padding.

        With `states` (known states per step, -1 unknown, as for `fit`) the marginals are
        p(z_t | x, known states). `inputs` as for `log_prob`.
        """
        self.check_fitted("posterior")
        if self.transition_inputs or inputs is not None:
            if states is not None:
                raise DataError("states cannot be combined with inputs yet")
            return io_hmm.run_inference(self, sequences, inputs, "posterior")
        with torch.no_grad(), self._threads_for(sequences):
            data = self._prepare(sequences)
            log_probs = self._emission_log_probs(data)
            if states is not None:
                log_probs = clamp_log_probs(log_probs, check_states(states, data, self.n_states))
            return hmm_inference.posteriors(
                self.start_probs, self.transition_probs, log_probs, data.lengths
            )

    def viterbi(self, sequences: Any, *, inputs: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Most probable state paths and their joint log-probabilities log p(x, z*).

        `inputs` as for `log_prob` (the log-probabilities are then log p(x, z* | u)).

        Returns:
            `(paths, log_probs)`: (n_sequences, max_length) long, -1 past each sequence's end,
            and (n_sequences,).
        """
        self.check_fitted("viterbi")
        if self.transition_inputs or inputs is not None:
            return io_hmm.run_inference(self, sequences, inputs, "viterbi")
        with torch.no_grad(), self._threads_for(sequences):
            data = self._prepare(sequences)
            return hmm_inference.viterbi(
                self.start_probs.log(),
                self.transition_probs.log(),
                self._emission_log_probs(data),
                data.lengths,
            )

    def predict(self, sequences: Any, *, inputs: Any = None) -> torch.Tensor:
        """Viterbi state paths (hmmlearn's `predict`)."""
        return self.viterbi(sequences, inputs=inputs)[0]

    # What does not take inputs yet refuses an input-output HMM rather than ignore its inputs.
    def decode(self, sequences: Any, method: str = "posterior", **options: Any) -> Any:
        self._refuse_inputs("decode", "use viterbi / predict / posterior with inputs=...")
        return super().decode(sequences, method, **options)

    def e_step(self, sequences: Any, *, states: Any = None) -> Any:
        self._refuse_inputs("e_step", "fit with fit(sequences, inputs=...)")
        return super().e_step(sequences, states=states)

    def as_pyro(self, length: int | None = None) -> Any:
        self._refuse_inputs("as_pyro")
        return super().as_pyro(length)

    def to_hmmlearn(self) -> Any:
        self._refuse_inputs("to_hmmlearn", "hmmlearn has no input-driven transitions")
        return super().to_hmmlearn()

    decode.__doc__ = HMMDecodingMixin.decode.__doc__
    e_step.__doc__ = HMMFitMixin.e_step.__doc__
    as_pyro.__doc__ = HMMInteropMixin.as_pyro.__doc__
    to_hmmlearn.__doc__ = HMMInteropMixin.to_hmmlearn.__doc__

    def _refuse_inputs(self, method: str, hint: str = "") -> None:
        if self.transition_inputs:
            raise DataError(
                f"{method} does not take the inputs of an input-output HMM "
                f"(transition_inputs={self.transition_inputs}) yet" + (f"; {hint}" if hint else "")
            )

    def n_parameters(self) -> int:
        """Free parameters: start (S-1), transitions S(S-1), the emissions' and the (centred)
        input weights'."""
        self.check_fitted("n_parameters")
        n_states = self.n_states
        return (
            (n_states - 1)
            + n_states * (n_states - 1)
            + self._ensure_emission().n_parameters()
            + io_hmm.n_input_parameters(self)
        )

    def aic(self, sequences: Any, *, inputs: Any = None) -> float:
        """Akaike information criterion, -2 log L + 2 p (lower is better)."""
        return -2 * self.score(sequences, inputs=inputs) + 2 * self.n_parameters()

    def bic(self, sequences: Any, *, inputs: Any = None) -> float:
        """Bayesian information criterion, -2 log L + p log(number of observed steps)."""
        sequences, inputs = io_hmm.split_pair(self, sequences, inputs)
        data = self._prepare(sequences)
        n_steps = int(data.lengths.sum())
        return -2 * self.score(data, inputs=inputs) + self.n_parameters() * math.log(n_steps)

    # ---- sampling --------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        length: int,
        seed: int | torch.Generator | None = None,
        return_states: bool = False,
        inputs: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw `n` sequences of `length` steps.

        An input-output HMM needs `inputs` (n, length, transition_inputs): the covariates
        the draws are conditioned on.

        Returns:
            observations (n, length, *event_shape), or `(observations, states)` with states
            (n, length) long when `return_states` is True.
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        length = check_positive_int(length, "length")
        generator = self.make_generator(seed)
        emission = self._ensure_emission()
        if self.transition_inputs or inputs is not None:
            io_hmm.split_pair(self, None, inputs)  # inputs given iff transition_inputs > 0
            states = io_hmm.sample_with_inputs(self, n, length, inputs, generator)
            with torch.no_grad():
                observations = emission.sample(states, generator)
            return (observations, states) if return_states else observations
        start_cdf = self.start_probs.cumsum(-1)
        transition_cdf = self.transition_probs.cumsum(-1)
        # Time-major uniforms: each step's column is contiguous for searchsorted.
        uniform = torch.rand(
            length, n, 1, dtype=self.dtype, generator=generator, device=generator.device
        ).to(self.device)
        states = torch.empty(n, length, dtype=torch.long, device=self.device)
        last = self.n_states - 1
        state = torch.searchsorted(start_cdf.expand(n, -1).contiguous(), uniform[0])
        state = state.squeeze(1).clamp_max(last)
        states[:, 0] = state
        with hmm_inference.step_loop_threads(uniform, n, self.n_states):
            for t in range(1, length):
                state = torch.searchsorted(transition_cdf[state], uniform[t])
                state = state.squeeze(1).clamp_max(last)
                states[:, t] = state
        with torch.no_grad():
            observations = emission.sample(states, generator)
        if return_states:
            return observations, states
        return observations


def _check_parameter_groups(value: Any, name: str) -> Any:
    """`value` itself once checked to hold names from `PARAMETER_GROUPS`.

    It is kept as given (not copied) so that scikit-learn's `clone` finds the same object.
    """
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise DataError(
            f"{name} must be a tuple of names from {PARAMETER_GROUPS}, got {value!r} "
            f"(e.g. {name}=('transitions', 'emissions'))"
        )
    unknown = [item for item in value if item not in PARAMETER_GROUPS]
    if unknown:
        raise DataError(f"{name} has unknown names {unknown}; choose from {PARAMETER_GROUPS}")
    return value
