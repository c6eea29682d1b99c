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
from probgen.core.contract import LogProbKind, Model
from probgen.core.data import Sequences, as_sequences, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.hmm.emissions import (
    COVARIANCE_TYPES,
    Emission,
    TorchDistributionEmission,
    build_emission,
)
from probgen.hmm.fit import HMMFitMixin
from probgen.hmm.interop import HMMInteropMixin
from probgen.hmm.parameters import HMMParametersMixin
from probgen.hmm.sequences import (
    _add_feature_axis,
    _check_nonnegative,
    _count_sequences,
    _in_support,
    _infer_n_features,
)

EMISSION_FAMILIES = ("categorical", "gaussian", "gmm", "poisson", "multinomial")
# The parameter groups `init_params` and `update_params` choose from.
PARAMETER_GROUPS = ("start", "transitions", "emissions")
_VECTOR_FAMILIES = ("gaussian", "gmm", "poisson", "multinomial")


class HMM(HMMFitMixin, HMMParametersMixin, HMMInteropMixin, Model):
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
        self.emission: Emission | None = self._build_emission()
        if isinstance(self.emission, TorchDistributionEmission) and isinstance(
            emission, torch.distributions.Distribution
        ):
            self.to(self.emission.unconstrained[next(iter(self.emission.unconstrained))].dtype)
        self._refresh_event_shape()
        self.history_: list[dict[str, Any]] = []
        self.n_iter_ = 0
        self.converged_ = False

    # ---- configuration -------------------------------------------------------------------
    @property
    def family(self) -> str:
        """``"categorical"``, ``"gaussian"``, ``"gmm"``, ``"poisson"`` or ``"torch"``."""
        return self.emission_spec if isinstance(self.emission_spec, str) else "torch"

    def get_config(self) -> dict[str, Any]:
        # The derived config would read `self.emission`, the built module: the constructor's
        # `emission` is kept as `emission_spec`, and a custom distribution needs its JSON form.
        config = super().get_config()
        emission: Any = self.emission_spec
        if not isinstance(emission, str):
            if self.emission is None:  # pragma: no cover - custom emissions are built eagerly
                raise DataError("custom emission is missing")
            emission = self.emission.config()["emission"]
        config["emission"] = emission
        return config

    def set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        # Loading keeps the saved precision (load_state_dict alone would cast to float32).
        saved = tensors.get("start_probs")
        if saved is not None and saved.is_floating_point():
            self.to(saved.dtype)
        super().set_tensors(tensors)

    def _build_emission(self) -> Emission | None:
        return build_emission(
            self.emission_spec,
            self.n_states,
            n_symbols=self.n_symbols,
            n_features=self.n_features,
            covariance=self.covariance,
            n_mix=self.n_mix,
            pseudocount=self.pseudocount,
            covariance_prior=self.covariance_prior,
            covariance_floor=self.covariance_floor,
            n_trials=self.n_trials,
        )

    def _refresh_event_shape(self) -> None:
        if self.emission is not None:
            self.event_shape = torch.Size(self.emission.event_shape)
        elif self.family in _VECTOR_FAMILIES and self.n_features is not None:
            self.event_shape = torch.Size([self.n_features])
        else:
            self.event_shape = torch.Size()

    def _ensure_emission(self) -> Emission:
        if self.emission is None:
            emission = self._build_emission()
            if emission is None:  # pragma: no cover - sizes are inferred before this call
                raise DataError("emission sizes are unknown; give n_symbols or n_features")
            self.emission = emission.to(device=self.device, dtype=self.dtype)
            self._refresh_event_shape()
        return self.emission

    # ---- readable parameters ---------------------------------------------------------------
    @property
    def emission_probs(self) -> torch.Tensor:
        """(n_states, n_symbols) categorical emission probabilities."""
        return self._emission_attribute("probs", "categorical", "multinomial")

    @property
    def means(self) -> torch.Tensor:
        """State means (n_states, n_features), or (n_states, n_mix, n_features) for mixtures."""
        return self._emission_attribute("means", "gaussian", "gmm")

    @property
    def covariances(self) -> torch.Tensor:
        """Full covariance matrices (n_states[, n_mix], n_features, n_features)."""
        return self._emission_attribute("covariances", "gaussian", "gmm")

    @property
    def mixture_weights(self) -> torch.Tensor:
        """(n_states, n_mix) mixture weights of ``emission="gmm"``."""
        return self._emission_attribute("weights", "gmm")

    @property
    def rates(self) -> torch.Tensor:
        """(n_states, n_features) Poisson rates."""
        return self._emission_attribute("rates", "poisson")

    def _emission_attribute(self, name: str, *families: str) -> torch.Tensor:
        if self.family not in families:
            raise AttributeError(
                f"{name} is defined for emission {' or '.join(map(repr, families))}, "
                f"not {self.family!r}"
            )
        if self.emission is None:
            self.check_fitted(name)
        return getattr(self.emission, name)

    def emission_distribution(self) -> torch.distributions.Distribution:
        """The emissions as one torch distribution with batch shape (n_states,)."""
        self.check_fitted("emission_distribution")
        return self._ensure_emission().distribution()

    # ---- data ------------------------------------------------------------------------------
    def _prepare(self, data: Any, name: str = "sequences", *, fitting: bool = False) -> Sequences:
        """Check and convert sequence input to padded `Sequences` on the model's device."""
        family = self.family
        if family == "categorical":
            # A missing symbol is -1 (in any input) or NaN (in float input).
            sequences = as_sequences(
                data,
                name,
                event_shape=(),
                allow_nan=True,
                integer=True,
                min_value=-1,
                max_value=None if self.n_symbols is None else self.n_symbols - 1,
            )
            values = sequences.values
            if values.is_floating_point():
                values = values.nan_to_num(-1.0)
            values = values.long()
            if not bool((values[sequences.mask] >= 0).any()):
                raise DataError(f"{name} has no observed symbols (all missing)")
            if self.n_symbols is None:
                if not fitting:
                    self.check_fitted("this method")
                self.n_symbols = int(values.max()) + 1
        elif family in _VECTOR_FAMILIES:
            data = _add_feature_axis(data, self.n_features)
            n_features = self.n_features
            if n_features is None:
                if not fitting:
                    self.check_fitted("this method")
                n_features = _infer_n_features(data, name)
            poisson = family == "poisson"
            counts = poisson or family == "multinomial"
            sequences = as_sequences(
                data,
                name,
                event_shape=(n_features,),
                allow_nan=family != "multinomial",
                integer=counts,
                min_value=0 if counts else None,
            )
            self.n_features = n_features
            values = sequences.values.to(self.dtype)
            if torch.isinf(values).any():  # finite float64 beyond the model dtype's range
                raise DataError(f"{name} has values too large for {self.dtype}")
            if torch.isnan(values).all():
                raise DataError(f"{name} has no observed values (all NaN)")
            if not counts:
                emission = self._ensure_emission()
                emission.check_missing(values, name)  # type: ignore[attr-defined]
        else:
            emission = self._ensure_emission()
            sequences = as_sequences(data, name, event_shape=tuple(emission.event_shape))
            values = sequences.values.to(self.dtype)
            support = emission.distribution().support
            outside = ~_in_support(support, values, len(emission.event_shape)) & sequences.mask
            if outside.any():
                where = outside.nonzero()[0].tolist()
                raise DataError(
                    f"{name}[{where[0]}] step {where[1]} lies outside the support of the "
                    f"emission distribution ({support})"
                )
        lengths = sequences.lengths
        if bool((lengths < values.shape[1]).any()):
            # Padding must hold valid values (the emission is evaluated there, then ignored).
            mask = sequences.mask.reshape(*sequences.mask.shape, *([1] * (values.dim() - 2)))
            values = torch.where(mask, values, values[:, :1])
        self._ensure_emission()
        return Sequences(values.to(self.device), lengths.to(self.device))

    def _threads(self, n_sequences: int) -> Any:
        """Small problems run on one intra-op thread (see `step_loop_threads`)."""
        return hmm_inference.step_loop_threads(self.start_probs, n_sequences, self.n_states)

    def _threads_for(self, data: Any) -> Any:
        """`_threads` for raw input, entered before `_prepare`.

        The input checks then run on the same single thread as the inference: waking a second
        intra-op thread for each of them costs more than the scans themselves on a busy machine.
        """
        return self._threads(_count_sequences(data))

    def _emission_log_probs(self, sequences: Sequences) -> torch.Tensor:
        assert self.emission is not None
        return self.emission.log_prob(sequences.values)

    # ---- inference -------------------------------------------------------------------------
    def log_prob(self, sequences: Any, *, method: str = "auto") -> torch.Tensor:
        """Log-likelihood of each sequence, shape (n_sequences,).

        Args:
            sequences: a list of arrays (length, *event) of different lengths, an array
                (n_sequences, length, *event), or `Sequences`.
            method: ``"auto"``, ``"sequential"`` or ``"scan"`` (parallel scan over time).
        """
        self.check_fitted("log_prob")
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

    def score(self, sequences: Any) -> float:
        """Total log-likelihood of the sequences (hmmlearn's `score`)."""
        return float(self.log_prob(sequences).sum())

    def posterior(self, sequences: Any) -> torch.Tensor:
        """State marginals p(z_t | x), shape (n_sequences, max_length, n_states), 0 on padding."""
        self.check_fitted("posterior")
        with torch.no_grad(), self._threads_for(sequences):
            data = self._prepare(sequences)
            return hmm_inference.posteriors(
                self.start_probs,
                self.transition_probs,
                self._emission_log_probs(data),
                data.lengths,
            )

    def viterbi(self, sequences: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Most probable state paths and their joint log-probabilities log p(x, z*).

        Returns:
            `(paths, log_probs)`: (n_sequences, max_length) long, -1 past each sequence's end,
            and (n_sequences,).
        """
        self.check_fitted("viterbi")
        with torch.no_grad(), self._threads_for(sequences):
            data = self._prepare(sequences)
            return hmm_inference.viterbi(
                self.start_probs.log(),
                self.transition_probs.log(),
                self._emission_log_probs(data),
                data.lengths,
            )

    def predict(self, sequences: Any) -> torch.Tensor:
        """Viterbi state paths (hmmlearn's `predict`)."""
        return self.viterbi(sequences)[0]

    def n_parameters(self) -> int:
        """Free parameters: start (S-1), transitions S(S-1), and the emissions'."""
        self.check_fitted("n_parameters")
        n_states = self.n_states
        return (n_states - 1) + n_states * (n_states - 1) + self._ensure_emission().n_parameters()

    def aic(self, sequences: Any) -> float:
        """Akaike information criterion, -2 log L + 2 p (lower is better)."""
        return -2 * self.score(sequences) + 2 * self.n_parameters()

    def bic(self, sequences: Any) -> float:
        """Bayesian information criterion, -2 log L + p log(number of observed steps)."""
        data = self._prepare(sequences)
        n_steps = int(data.lengths.sum())
        return -2 * self.score(data) + self.n_parameters() * math.log(n_steps)

    # ---- sampling --------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        length: int,
        seed: int | torch.Generator | None = None,
        return_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw `n` sequences of `length` steps.

        Returns:
            observations (n, length, *event_shape), or `(observations, states)` with states
            (n, length) long when `return_states` is True.
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        length = check_positive_int(length, "length")
        generator = self.make_generator(seed)
        emission = self._ensure_emission()
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

    @property
    def enumerate_support(self) -> Any:
        """`enumerate_support(length)`: every symbol sequence of `length` steps.

        Defined for categorical emissions only (other families have no such attribute, so
        `hasattr(model, "enumerate_support")` tells whether the support is enumerable). Returns
        a (n_symbols ** length, length) long tensor; more than 2**20 sequences is a DataError.
        """
        if self.family != "categorical":
            raise AttributeError("enumerate_support is defined for categorical emissions only")
        return self._enumerate_support

    def _enumerate_support(self, length: int) -> torch.Tensor:
        self.check_fitted("enumerate_support")
        length = check_positive_int(length, "length")
        assert self.n_symbols is not None
        if self.n_symbols**length > 2**20:
            raise DataError(
                f"{self.n_symbols}**{length} sequences are too many to enumerate (limit 2**20)"
            )
        symbols = torch.arange(self.n_symbols, device=self.device)
        grids = torch.meshgrid(*([symbols] * length), indexing="ij")
        return torch.stack(grids, -1).reshape(-1, length)


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
