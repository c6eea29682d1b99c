"""Hidden Markov models with categorical, Gaussian, Gaussian-mixture, Poisson or custom emissions.

`HMM` is a `probgen.core.contract.Model`: `fit` runs Baum-Welch EM (an e-step that returns additive
sufficient statistics and an m-step from them; restarts, minibatch EM), `log_prob` gives one
log-likelihood per sequence, `sample(n, length=T)` draws sequences, and `posterior`, `viterbi`,
`aic`, `bic`, `as_pyro`, `from_hmmlearn` / `to_hmmlearn` cover the rest of what an HMM user
expects. All inference is batched over sequences in `probgen.hmm.inference`.

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
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import probgen.hmm.inference as hmm_inference
from probgen.core.contract import LogProbKind, Model
from probgen.core.data import Sequences, as_sequences, check_choice, check_positive_int
from probgen.core.errors import (
    ConvergenceWarning,
    DataError,
    FitError,
    LikelihoodDecreaseWarning,
)
from probgen.hmm.emissions import (
    COVARIANCE_TYPES,
    Emission,
    TorchDistributionEmission,
    build_emission,
)

EMISSION_FAMILIES = ("categorical", "gaussian", "gmm", "poisson")
_VECTOR_FAMILIES = ("gaussian", "gmm", "poisson")


class HMM(Model):
    """A hidden Markov model with emissions batched over its hidden states.

    Args:
        n_states: number of hidden states (>= 1).
        emission: ``"categorical"``, ``"gaussian"``, ``"gmm"``, ``"poisson"``, or a torch
            distribution with batch shape (n_states,) (its parameter values are the starting
            point; fitted by gradient ascent on the exact log-likelihood).
        n_symbols: number of symbols of categorical emissions (inferred from data when None).
        n_features: features per step of Gaussian, mixture and Poisson emissions (inferred
            when None).
        covariance: ``"diag"``, ``"full"``, ``"spherical"`` or ``"tied"`` (Gaussian emissions;
            the mixture family takes the first three).
        n_mix: Gaussians per state for ``emission="gmm"``.
        n_init: EM restarts from different random starts; the best log-likelihood is kept.
        max_iter: most EM iterations (or gradient steps, or minibatch epochs) per restart.
        tol: stop when the log-likelihood per observed step improves by less than this.
        pseudocount: Dirichlet pseudocount added to start, transition, categorical-emission
            and mixture-weight counts (0 = maximum likelihood, as hmmlearn's defaults).
        covariance_prior: added to each state's scatter before dividing by its weight
            (hmmlearn's ``covars_prior``), so a state with constant data keeps a positive variance.
        covariance_floor: smallest variance (eigenvalue) a fit may produce.
        batch_size: sequences per minibatch for online (stepwise) EM; None for full-batch EM.
        step_decay: online EM step size (k + 2) ** -step_decay, in (0.5, 1].
        learning_rate: Adam step size for custom-emission (gradient) fits.
        seed: seed of the random starts (None: fresh randomness every fit).
        progress: show a tqdm progress bar during `fit`.

    Attributes:
        start_probs: (n_states,) initial state distribution.
        transition_probs: (n_states, n_states), row i is p(z_t | z_{t-1} = i).
        history_: log-likelihood of the training data at every iteration of the kept restart.
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
    ) -> None:
        super().__init__()
        self.n_states = check_positive_int(n_states, "n_states")
        if isinstance(emission, str):
            check_choice(emission, "emission", EMISSION_FAMILIES)
        elif not isinstance(emission, (torch.distributions.Distribution, dict)):
            raise DataError(
                "emission must be one of 'categorical', 'gaussian', 'gmm', 'poisson' or a torch "
                f"distribution batched over states; got {emission!r}"
            )
        self.covariance = check_choice(covariance, "covariance", COVARIANCE_TYPES)
        self.n_symbols = None if n_symbols is None else check_positive_int(n_symbols, "n_symbols")
        self.n_features = (
            None if n_features is None else check_positive_int(n_features, "n_features")
        )
        self.n_mix = check_positive_int(n_mix, "n_mix")
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

        self.emission_spec = emission
        self.register_buffer("start_probs", torch.full((n_states,), 1.0 / n_states))
        self.register_buffer("transition_probs", torch.full((n_states, n_states), 1.0 / n_states))
        self.emission: Emission | None = self._build_emission()
        if isinstance(self.emission, TorchDistributionEmission) and isinstance(
            emission, torch.distributions.Distribution
        ):
            self.to(self.emission.unconstrained[next(iter(self.emission.unconstrained))].dtype)
        self._refresh_event_shape()
        self.history_: list[float] = []
        self.n_iter_ = 0
        self.converged_ = False

    # ---- configuration -------------------------------------------------------------------
    @property
    def family(self) -> str:
        """``"categorical"``, ``"gaussian"``, ``"gmm"``, ``"poisson"`` or ``"torch"``."""
        return self.emission_spec if isinstance(self.emission_spec, str) else "torch"

    def get_config(self) -> dict[str, Any]:
        emission: Any = self.emission_spec
        if not isinstance(emission, str):
            if self.emission is None:  # pragma: no cover - custom emissions are built eagerly
                raise DataError("custom emission is missing")
            emission = self.emission.config()["emission"]
        return {
            "n_states": self.n_states,
            "emission": emission,
            "n_symbols": self.n_symbols,
            "n_features": self.n_features,
            "covariance": self.covariance,
            "n_mix": self.n_mix,
            "n_init": self.n_init,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "pseudocount": self.pseudocount,
            "covariance_prior": self.covariance_prior,
            "covariance_floor": self.covariance_floor,
            "batch_size": self.batch_size,
            "step_decay": self.step_decay,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "progress": self.progress,
        }

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
        return self._emission_attribute("probs", "categorical")

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

    # ---- setting parameters ----------------------------------------------------------------
    def set_parameters(self, **parameters: Any) -> HMM:
        """Set parameters directly (the model then counts as fitted); returns self.

        Keywords: ``start_probs``, ``transition_probs``, and by family ``emission_probs``;
        ``means``, ``covariances`` (hmmlearn's storage shape for the covariance type, or full
        matrices); ``mixture_weights``; ``rates``. Sizes not given at construction
        (``n_symbols``, ``n_features``) are taken from them.

        Raises:
            DataError: a wrong shape, a negative probability or a row not summing to one.
        """
        known = {
            "start_probs",
            "transition_probs",
            "emission_probs",
            "means",
            "covariances",
            "mixture_weights",
            "rates",
        }
        unknown = set(parameters) - known
        if unknown:
            raise DataError(
                f"unknown parameters {sorted(unknown)}; expected some of {sorted(known)}"
            )
        dtype, device = self.dtype, self.device
        tensors = {
            name: torch.as_tensor(
                np.asarray(value, dtype=np.float64)
                if not isinstance(value, torch.Tensor)
                else value.detach()
            ).to(device=device, dtype=dtype)
            for name, value in parameters.items()
        }
        for name, value in tensors.items():
            if not torch.isfinite(value).all():
                raise DataError(f"{name} contains NaN or infinite values")
        if self.emission is None:
            if self.family == "categorical" and "emission_probs" in tensors:
                self.n_symbols = int(tensors["emission_probs"].shape[-1])
            elif self.family in ("gaussian", "gmm") and "means" in tensors:
                self.n_features = int(tensors["means"].shape[-1])
            elif self.family == "poisson" and "rates" in tensors:
                self.n_features = int(tensors["rates"].reshape(self.n_states, -1).shape[-1])
            if self.n_symbols is None and self.n_features is None:
                raise DataError("give the emission parameters (their size is not known yet)")
        emission = self._ensure_emission()
        n_states = self.n_states
        new_values: dict[str, torch.Tensor] = {}
        if "start_probs" in tensors:
            new_values["start_probs"] = _check_probabilities(
                tensors["start_probs"], "start_probs", (n_states,)
            )
        if "transition_probs" in tensors:
            new_values["transition_probs"] = _check_probabilities(
                tensors["transition_probs"], "transition_probs", (n_states, n_states)
            )
        if "emission_probs" in tensors:
            self._require_family("emission_probs", "categorical")
            new_values["emission.probs"] = _check_probabilities(
                tensors["emission_probs"], "emission_probs", (n_states, self.n_symbols)
            )
        if "rates" in tensors:
            self._require_family("rates", "poisson")
            rates = tensors["rates"].reshape(n_states, -1)
            _check_shape(rates, "rates", (n_states, self.n_features))
            if (rates < 0).any():
                raise DataError("rates must be non-negative")
            new_values["emission.rates"] = rates
        if "mixture_weights" in tensors:
            self._require_family("mixture_weights", "gmm")
            new_values["emission.weights"] = _check_probabilities(
                tensors["mixture_weights"], "mixture_weights", (n_states, self.n_mix)
            )
        if "means" in tensors:
            self._require_family("means", "gaussian", "gmm")
            shape = (
                (n_states, self.n_features)
                if self.family == "gaussian"
                else (n_states, self.n_mix, self.n_features)
            )
            means = tensors["means"]
            _check_shape(means, "means", shape)
            new_values["emission.components.means"] = means.reshape(-1, self.n_features)
        if "covariances" in tensors:
            self._require_family("covariances", "gaussian", "gmm")
            new_values["emission.components.covariance_storage"] = _covariance_storage(
                tensors["covariances"],
                emission.components,
                self.n_mix if self.family == "gmm" else None,
            )
        for name, value in new_values.items():
            owner_path, _, leaf = name.rpartition(".")
            owner = self.get_submodule(owner_path) if owner_path else self
            setattr(owner, leaf, value.clone())
        if "means" in tensors and hasattr(emission, "components"):
            emission.components.center = emission.components.means.mean(0)
        self._mark_fitted()
        return self

    def _require_family(self, name: str, *families: str) -> None:
        if self.family not in families:
            raise DataError(f"{name} applies to emission {families}, not {self.family!r}")

    # ---- data ------------------------------------------------------------------------------
    def _prepare(self, data: Any, name: str = "sequences", *, fitting: bool = False) -> Sequences:
        """Check and convert sequence input to padded `Sequences` on the model's device."""
        family = self.family
        if family == "categorical":
            sequences = as_sequences(
                data,
                name,
                event_shape=(),
                integer=True,
                min_value=0,
                max_value=None if self.n_symbols is None else self.n_symbols - 1,
            )
            if sequences.values.is_floating_point() and torch.isnan(sequences.values).any():
                raise DataError(f"{name} contains NaN values")
            if self.n_symbols is None:
                if not fitting:
                    self.check_fitted("this method")
                self.n_symbols = int(sequences.values.max()) + 1
            values = sequences.values.long()
        elif family in _VECTOR_FAMILIES:
            data = _add_feature_axis(data, self.n_features)
            n_features = self.n_features
            if n_features is None:
                if not fitting:
                    self.check_fitted("this method")
                n_features = _infer_n_features(data, name)
            poisson = family == "poisson"
            sequences = as_sequences(
                data,
                name,
                event_shape=(n_features,),
                allow_nan=not poisson,
                integer=poisson,
                min_value=0 if poisson else None,
            )
            self.n_features = n_features
            values = sequences.values.to(self.dtype)
            if not poisson:
                if torch.isnan(values).all():
                    raise DataError(f"{name} has no observed values (all NaN)")
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
            data = self._prepare(sequences)
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

    # ---- EM --------------------------------------------------------------------------------
    def e_step(self, sequences: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Expected sufficient statistics of `sequences` and their log-likelihoods.

        The statistics are additive: sums over batches (or an `all_reduce` across processes)
        are the statistics of the union, which `m_step` maps to parameters.

        Returns:
            `(statistics, log_likelihoods)`: a dict of tensors and (n_sequences,).
        """
        with torch.no_grad(), self._threads_for(sequences):
            if isinstance(sequences, _Batch):
                batch = sequences
            else:
                batch = _Batch.of(self._prepare(sequences))
            emission = self._ensure_emission()
            if not emission.supports_em:
                raise DataError(
                    "custom torch-distribution emissions are fitted by gradient, not EM"
                )
            max_length, n_sequences = batch.mask_tm.shape
            method = hmm_inference.statistics_method(n_sequences, max_length, self.n_states)
            if method == "scan":
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
        """Parameters maximising the expected complete log-likelihood plus the log prior."""
        emission = self._ensure_emission()
        self.start_probs = _normalize_with_fallback(
            statistics["start"] + self.pseudocount, self.start_probs
        )
        self.transition_probs = _normalize_with_fallback(
            statistics["transition"] + self.pseudocount, self.transition_probs
        )
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
        self,
        sequences: Any,
        *,
        seed: int | None = None,
        warm_start: bool = False,
        progress: bool | None = None,
    ) -> HMM:
        """Fit by Baum-Welch EM (gradient ascent for custom emissions); returns self.

        Args:
            sequences: list of arrays of different lengths, a padded array, or `Sequences`.
            seed: overrides the constructor's `seed` for the random starts.
            warm_start: start the first restart from the current parameters (set by a
                previous fit or `set_parameters`) instead of a random/k-means start.
            progress: overrides the constructor's `progress`.

        Raises:
            DataError: malformed sequences. FitError: the log-likelihood became NaN or
            infinite (the last good parameters are kept).
        """
        with self._threads_for(sequences):
            data = self._prepare(sequences, fitting=True)
            best = self._fit_restarts(data, seed, warm_start, progress)
        assert best is not None
        _, state, history, n_iter, converged = best
        self.load_state_dict(state)
        self.history_ = [float(v) for v in history]
        self.n_iter_ = n_iter
        self.converged_ = converged
        if not converged:
            warnings.warn(
                f"HMM fit stopped at max_iter={self.max_iter} before the log-likelihood per "
                f"step changed by less than tol={self.tol}",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._mark_fitted()
        return self

    def _fit_restarts(
        self, data: Sequences, seed: int | None, warm_start: bool, progress: bool | None
    ) -> tuple[float, dict[str, torch.Tensor], list[float], int, bool]:
        """Run every restart; the best `(score, state, history, n_iter, converged)`."""
        batch = _Batch.of(data)
        generator = torch.Generator(device=self.device)
        chosen_seed = self.seed if seed is None else seed
        if chosen_seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(chosen_seed))
        show = self.progress if progress is None else bool(progress)
        n_steps = int(data.lengths.sum())
        emission = self._ensure_emission()
        use_gradient = not emission.supports_em
        best: tuple[float, dict[str, torch.Tensor], list[float], int, bool] | None = None
        bar = _progress_bar(show, self.n_init * self.max_iter)
        try:
            for restart in range(self.n_init):
                if not (warm_start and restart == 0 and self.fitted_):
                    self._initialize(batch, generator, restart)
                if use_gradient:
                    history, converged = self._fit_gradient(data, n_steps, bar)
                elif self.batch_size is not None:
                    history, converged = self._fit_online(data, n_steps, generator, bar)
                else:
                    history, converged = self._fit_em(batch, n_steps, bar)
                score = history[-1] if history else -math.inf
                if best is None or score > best[0]:
                    state = {k: v.detach().clone() for k, v in self.state_dict().items()}
                    best = (score, state, history, len(history), converged)
        finally:
            if bar is not None:
                bar.close()
        assert best is not None
        return best

    def _initialize(self, batch: _Batch, generator: torch.Generator, restart: int) -> None:
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
        emission.initialize(batch.observed_values, generator)

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def _parameters_finite(self) -> bool:
        # One check over all parameters (EM calls this every iteration).
        values = [v.reshape(-1) for v in self.state_dict().values() if v.is_floating_point()]
        return not values or bool(torch.isfinite(torch.cat(values)).all())

    def _fit_em(self, batch: _Batch, n_steps: int, bar: Any) -> tuple[list[float], bool]:
        history: list[float] = []
        previous_objective: float | None = None
        for _ in range(self.max_iter):
            last_good = self._snapshot()
            statistics, log_likelihoods = self.e_step(batch)
            total = float(log_likelihoods.sum())
            if not math.isfinite(total):
                self.load_state_dict(last_good)
                raise FitError(
                    f"the log-likelihood became {total} at EM iteration {len(history) + 1}; "
                    "the model keeps its last good parameters (try pseudocount > 0 or a "
                    "larger covariance_floor)"
                )
            objective = total + float(self.log_prior())
            history.append(total)
            if previous_objective is not None:
                drop = previous_objective - objective
                # Rounding alone moves a sum over n_steps terms by about eps * n_steps, which
                # matters in float32 when the log-likelihood is near zero.
                rounding = 8 * torch.finfo(self.dtype).eps * n_steps
                if drop > max(1e-7 * max(1.0, abs(previous_objective)), rounding):
                    warnings.warn(
                        f"EM iteration {len(history)} decreased the penalised log-likelihood "
                        f"by {drop:.3g}",
                        LikelihoodDecreaseWarning,
                        stacklevel=4,
                    )
            self.m_step(statistics)
            if not self._parameters_finite():
                self.load_state_dict(last_good)
                raise FitError(
                    f"EM iteration {len(history)} produced non-finite parameters; the model "
                    "keeps its last good parameters"
                )
            _advance(bar, total / n_steps)
            if previous_objective is not None and (
                (objective - previous_objective) / n_steps < self.tol
            ):
                return history, True
            previous_objective = objective
        return history, False

    def _fit_online(
        self, data: Sequences, n_steps: int, generator: torch.Generator, bar: Any
    ) -> tuple[list[float], bool]:
        """Stepwise EM: running statistics s <- (1 - rho) s + rho * (scaled batch statistics)."""
        history: list[float] = []
        n_sequences = data.n_sequences
        batch_size = min(self.batch_size or n_sequences, n_sequences)
        running: dict[str, torch.Tensor] | None = None
        updates = 0
        previous: float | None = None
        for _ in range(self.max_iter):
            order = torch.randperm(n_sequences, generator=generator, device=generator.device)
            epoch_total = 0.0
            for begin in range(0, n_sequences, batch_size):
                index = order[begin : begin + batch_size].to(self.device)
                last_good = self._snapshot()
                statistics, log_likelihoods = self.e_step(_Batch.of(data[index]))
                batch_total = float(log_likelihoods.sum())
                if not math.isfinite(batch_total):
                    self.load_state_dict(last_good)
                    raise FitError(
                        "the log-likelihood of a minibatch became non-finite; "
                        "the model keeps its last good parameters"
                    )
                epoch_total += batch_total
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
                if not self._parameters_finite():
                    self.load_state_dict(last_good)
                    raise FitError(
                        "a minibatch EM step produced non-finite parameters; the "
                        "model keeps its last good parameters"
                    )
            history.append(epoch_total)
            _advance(bar, epoch_total / n_steps)
            if previous is not None and abs(epoch_total - previous) / n_steps < self.tol:
                return history, True
            previous = epoch_total
        return history, False

    def _fit_gradient(self, data: Sequences, n_steps: int, bar: Any) -> tuple[list[float], bool]:
        """Adam on the exact log-likelihood (custom torch-distribution emissions)."""
        emission = self._ensure_emission()
        start_logits = self.start_probs.clamp_min(1e-30).log().clone().requires_grad_(True)
        transition_logits = (
            self.transition_probs.clamp_min(1e-30).log().clone().requires_grad_(True)
        )
        parameters = [start_logits, transition_logits, *emission.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=self.learning_rate)
        history: list[float] = []
        previous: float | None = None
        converged = False
        for _ in range(self.max_iter):
            last_good = self._snapshot()
            optimizer.zero_grad()
            emission_log_probs = emission.log_prob(data.values)
            log_likelihoods = hmm_inference.hmm_log_likelihood(
                start_logits, transition_logits, emission_log_probs, data.lengths
            )
            total = log_likelihoods.sum()
            if not torch.isfinite(total):
                self.load_state_dict(last_good)
                raise FitError(
                    "the log-likelihood became non-finite during gradient fitting; "
                    "the model keeps its last good parameters"
                )
            (-total / n_steps).backward()
            optimizer.step()
            with torch.no_grad():
                self.start_probs = torch.softmax(start_logits, -1).detach()
                self.transition_probs = torch.softmax(transition_logits, -1).detach()
            value = float(total.detach())
            history.append(value)
            _advance(bar, value / n_steps)
            if previous is not None and abs(value - previous) / n_steps < self.tol:
                converged = True
                break
            previous = value
        for parameter in emission.parameters():
            parameter.grad = None
        return history, converged

    # ---- interoperability ------------------------------------------------------------------
    def as_pyro(self, length: int | None = None) -> Any:
        """The equivalent `pyro.distributions.DiscreteHMM`.

        Pyro's `DiscreteHMM` applies one transition before the first observation. With
        `length` given, the first of `length` time-dependent transition matrices draws the
        first state from `start_probs`; without it, an extra silent state (index n_states)
        starts every sequence and moves to the real states with `start_probs`, which is exact
        for any length. Either way `log_prob` equals this model's (for full-length sequences).

        Example:
            >>> hmm = HMM(2, emission="categorical", n_symbols=2).set_parameters(
            ...     start_probs=[0.4, 0.6], transition_probs=[[0.7, 0.3], [0.2, 0.8]],
            ...     emission_probs=[[0.9, 0.1], [0.3, 0.7]])
            >>> x = torch.tensor([[0, 1, 1]])
            >>> bool(torch.allclose(hmm.as_pyro().log_prob(x), hmm.log_prob(x)))
            True
        """
        import pyro.distributions as pyro_dist

        self.check_fitted("as_pyro")
        emission = self._ensure_emission()
        n_states = self.n_states
        log_start = self.start_probs.log()
        log_transition = self.transition_probs.log()
        if length is not None:
            length = check_positive_int(length, "length")
            transitions = log_transition.expand(length, n_states, n_states).clone()
            transitions[0] = log_start.expand(n_states, n_states)
            initial = torch.zeros(n_states, dtype=self.dtype, device=self.device)
            return pyro_dist.DiscreteHMM(
                initial, transitions, emission.distribution(library=pyro_dist)
            )
        minus_inf = torch.tensor(-math.inf, dtype=self.dtype, device=self.device)
        augmented = minus_inf.expand(n_states + 1, n_states + 1).clone()
        augmented[:n_states, :n_states] = log_transition
        augmented[n_states, :n_states] = log_start
        initial = minus_inf.expand(n_states + 1).clone()
        initial[n_states] = 0.0
        index = torch.cat([torch.arange(n_states), torch.zeros(1, dtype=torch.long)])
        return pyro_dist.DiscreteHMM(
            initial, augmented, emission.distribution(index.to(self.device), library=pyro_dist)
        )

    def to_hmmlearn(self) -> Any:
        """The equivalent hmmlearn model (float64 numpy parameters, ``init_params=""``)."""
        from hmmlearn import hmm as hmmlearn_hmm

        self.check_fitted("to_hmmlearn")
        emission = self._ensure_emission()
        common = dict(n_components=self.n_states, init_params="", n_iter=self.max_iter)

        def array(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().cpu().double().numpy().copy()

        family = self.family
        if family == "categorical":
            model = hmmlearn_hmm.CategoricalHMM(n_features=self.n_symbols, **common)
            model.emissionprob_ = array(self.emission_probs)
        elif family == "gaussian":
            model = hmmlearn_hmm.GaussianHMM(
                covariance_type=self.covariance, covars_prior=self.covariance_prior, **common
            )
            model.n_features = self.n_features
            model.means_ = array(self.means)
            model.covars_ = array(emission.components.covariance_storage)  # type: ignore[union-attr]
        elif family == "gmm":
            model = hmmlearn_hmm.GMMHMM(n_mix=self.n_mix, covariance_type=self.covariance, **common)
            model.n_features = self.n_features
            model.weights_ = array(self.mixture_weights)
            model.means_ = array(self.means)
            storage = array(emission.components.covariance_storage)  # type: ignore[union-attr]
            shape = {
                "diag": (self.n_states, self.n_mix, self.n_features),
                "spherical": (self.n_states, self.n_mix),
                "full": (self.n_states, self.n_mix, self.n_features, self.n_features),
            }
            model.covars_ = storage.reshape(shape[self.covariance])
        elif family == "poisson":
            model = hmmlearn_hmm.PoissonHMM(**common)
            model.n_features = self.n_features
            model.lambdas_ = array(self.rates)
        else:
            raise DataError("custom torch-distribution emissions have no hmmlearn equivalent")
        model.startprob_ = array(self.start_probs)
        model.transmat_ = array(self.transition_probs)
        return model

    @classmethod
    def from_hmmlearn(cls, model: Any, **options: Any) -> HMM:
        """Build an HMM with the parameters of a fitted hmmlearn model (float64).

        Supports `GaussianHMM`, `CategoricalHMM`, `GMMHMM` and `PoissonHMM`. `options` are
        passed to the constructor (e.g. ``max_iter``).
        """
        name = type(model).__name__
        n_states = int(model.n_components)
        if name == "CategoricalHMM":
            hmm = cls(n_states, "categorical", n_symbols=int(model.n_features), **options)
            params = {"emission_probs": model.emissionprob_}
        elif name == "GaussianHMM":
            prior = model.covars_prior
            options.setdefault("covariance_prior", float(np.mean(prior)))
            hmm = cls(
                n_states,
                "gaussian",
                n_features=int(model.n_features),
                covariance=model.covariance_type,
                **options,
            )
            params = {"means": model.means_, "covariances": model._covars_}
        elif name == "GMMHMM":
            hmm = cls(
                n_states,
                "gmm",
                n_features=int(model.n_features),
                n_mix=int(model.n_mix),
                covariance=model.covariance_type,
                **options,
            )
            params = {
                "means": model.means_,
                "covariances": model.covars_,
                "mixture_weights": model.weights_,
            }
        elif name == "PoissonHMM":
            hmm = cls(n_states, "poisson", n_features=int(model.n_features), **options)
            params = {"rates": model.lambdas_}
        else:
            raise DataError(
                f"from_hmmlearn supports GaussianHMM, CategoricalHMM, GMMHMM and PoissonHMM, "
                f"not {name}"
            )
        hmm = hmm.double()
        return hmm.set_parameters(
            start_probs=model.startprob_, transition_probs=model.transmat_, **params
        )


# ---- helpers -------------------------------------------------------------------------------
@dataclass
class _Batch:
    """Prepared sequences laid out time-major for the EM loop (built once per fit)."""

    values_tm: torch.Tensor  # (max_length, n_sequences, *event)
    lengths: torch.Tensor
    mask_tm: torch.Tensor  # (max_length, n_sequences)
    complete: bool  # every sequence has max_length steps
    observed_values: torch.Tensor  # (n_observed_steps, *event), time-major order
    # (emission, its prepare_key() then, emission.prepare(values_tm)), reused across iterations.
    _prepared: tuple[Emission, torch.Tensor | None, Any] | None = field(default=None, repr=False)
    # The e-step's large arrays, reused across iterations rather than mapped in afresh.
    workspace: hmm_inference.Workspace = field(default_factory=hmm_inference.Workspace, repr=False)

    @classmethod
    def of(cls, data: Sequences) -> _Batch:
        values_tm = data.values.transpose(0, 1).contiguous()
        mask_tm = data.mask.t()
        complete = bool(mask_tm.all())
        observed = values_tm.reshape(-1, *values_tm.shape[2:]) if complete else values_tm[mask_tm]
        return cls(values_tm, data.lengths, mask_tm, complete, observed)

    def emission_inputs(self, emission: Emission) -> Any:
        """`emission.prepare(values_tm)`, computed once per fit rather than once per iteration.

        It is recomputed only when the emission, or the parameters its preparation depends on
        (`emission.prepare_key()`, e.g. the Gaussian centre set by a restart), change.
        """
        key = emission.prepare_key()
        if self._prepared is not None:
            cached_emission, cached_key, inputs = self._prepared
            if cached_emission is emission and _same_key(cached_key, key):
                return inputs
        inputs = emission.prepare(self.values_tm)
        self._prepared = (emission, None if key is None else key.clone(), inputs)
        return inputs


def _same_key(cached: torch.Tensor | None, current: torch.Tensor | None) -> bool:
    if cached is None or current is None:
        return cached is None and current is None
    return (
        cached.dtype == current.dtype
        and cached.shape == current.shape
        and torch.equal(cached, current)
    )


def _count_sequences(data: Any) -> int:
    """Number of sequences in raw input, to choose the thread count (1 when unknown)."""
    if isinstance(data, _Batch):
        return int(data.lengths.numel())
    if isinstance(data, Sequences):
        return int(data.values.shape[0])
    if isinstance(data, (list, tuple)):
        return len(data)
    shape = getattr(data, "shape", None)
    return int(shape[0]) if shape else 1


def _check_nonnegative(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} must be a number >= 0, got {value!r}") from error
    if not number >= 0 or not math.isfinite(number):
        raise DataError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _check_shape(value: torch.Tensor, name: str, shape: tuple[Any, ...]) -> None:
    if tuple(value.shape) != tuple(shape):
        raise DataError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")


def _check_probabilities(value: torch.Tensor, name: str, shape: tuple[Any, ...]) -> torch.Tensor:
    _check_shape(value, name, shape)
    if (value < 0).any():
        raise DataError(f"{name} has negative entries")
    sums = value.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        raise DataError(f"{name} rows must sum to 1, got sums {sums.tolist()}")
    return value / sums.unsqueeze(-1)


def _covariance_storage(value: torch.Tensor, components: Any, n_mix: int | None) -> torch.Tensor:
    """Accept hmmlearn's storage shape for the covariance type, or full matrices.

    `n_mix` is None for Gaussian emissions and the number of components for mixtures (whose
    hmmlearn shapes carry a (n_states, n_mix) prefix).
    """
    k, d = components.n_components, components.n_features
    kind = components.covariance
    prefix = (k,) if n_mix is None else (k // n_mix, n_mix)
    storage_shape = {"diag": (k, d), "spherical": (k,), "full": (k, d, d), "tied": (d, d)}[kind]
    given = {
        "diag": (*prefix, d),
        "spherical": prefix,
        "full": (*prefix, d, d),
        "tied": (d, d),
    }[kind]
    shape = tuple(value.shape)
    if shape in (given, storage_shape):
        storage = value.reshape(storage_shape)
    elif kind == "spherical" and shape == (*prefix, d):
        storage = value.reshape(k, d).mean(-1)  # hmmlearn tiles spherical variances over features
    elif shape == (*prefix, d, d):
        full = value.reshape(k, d, d)
        if kind == "diag":
            storage = full.diagonal(dim1=-2, dim2=-1)
        elif kind == "spherical":
            storage = full.diagonal(dim1=-2, dim2=-1).mean(-1)
        elif kind == "full":
            storage = full
        else:
            storage = full[0]
    else:
        raise DataError(
            f"covariances has shape {shape}; expected {given} for covariance='{kind}' or full "
            f"matrices {(*prefix, d, d)}"
        )
    if kind in ("full", "tied"):
        if not torch.allclose(storage, storage.transpose(-1, -2), atol=1e-8):
            raise DataError("covariances must be symmetric")
        if (torch.linalg.eigvalsh(storage) <= 0).any():
            raise DataError("covariances must be positive definite")
    elif (storage <= 0).any():
        raise DataError("covariances (variances) must be positive")
    return storage


def _normalize_with_fallback(counts: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    total = counts.sum(-1, keepdim=True)
    normalized = counts / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, normalized, fallback)


def _add_feature_axis(data: Any, n_features: int | None) -> Any:
    """Let 1-feature models take sequences without the trailing feature axis."""
    if n_features not in (None, 1):
        return data
    if isinstance(data, Sequences):
        if data.values.dim() == 2:
            return Sequences(data.values.unsqueeze(-1), data.lengths)
        return data
    if isinstance(data, (list, tuple)):
        if (
            data
            and all(np.ndim(item) == 1 for item in data)
            and not all(np.isscalar(item) for item in data)
        ):
            return [
                np.asarray(item)[:, None]
                if not isinstance(item, torch.Tensor)
                else item.unsqueeze(-1)
                for item in data
            ]
        return data
    if isinstance(data, torch.Tensor):
        return data.unsqueeze(-1) if data.dim() == 2 else data
    if isinstance(data, np.ndarray) or hasattr(data, "to_numpy"):
        array = np.asarray(data)
        return array[..., None] if array.ndim == 2 else array
    return data


def _infer_n_features(data: Any, name: str) -> int:
    if isinstance(data, Sequences):
        return int(data.values.shape[-1]) if data.values.dim() == 3 else 1
    if isinstance(data, (list, tuple)):
        if not data:
            raise DataError(f"{name} is empty; give at least one sequence")
        first = np.shape(data[0])
        if len(first) != 2:
            raise DataError(f"{name}[0] has shape {first}; expected (length, n_features)")
        return int(first[1])
    shape = np.shape(data) if not isinstance(data, torch.Tensor) else tuple(data.shape)
    if len(shape) != 3:
        raise DataError(
            f"{name} has shape {tuple(shape)}; expected (n_sequences, length, n_features) or a "
            "list of arrays of shape (length, n_features)"
        )
    return int(shape[2])


def _in_support(support: Any, values: torch.Tensor, event_dims: int) -> torch.Tensor:
    inside = support.check(values)
    while inside.dim() > values.dim() - event_dims:
        inside = inside.all(-1)
    return inside


def _progress_bar(show: bool, total: int) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="HMM fit", unit="iter", mininterval=0.5)


def _advance(bar: Any, per_step: float) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loglik_per_step=f"{per_step:.5f}")
