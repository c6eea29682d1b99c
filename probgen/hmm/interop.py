"""Conversions of an HMM to and from other libraries: Pyro's `DiscreteHMM` and hmmlearn.

Example:
    >>> from probgen.hmm import HMM
    >>> hmm = HMM(2, emission="poisson").set_parameters(rates=[[1.0], [4.0]])
    >>> type(hmm.as_pyro()).__name__
    'DiscreteHMM'
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np
import torch

from probgen.core.data import check_positive_int
from probgen.core.errors import DataError

_Model = TypeVar("_Model", bound="HMMInteropMixin")


class HMMInteropMixin:
    """`as_pyro`, `to_hmmlearn` and `from_hmmlearn` for `probgen.hmm.model.HMM` (a mixin)."""

    def as_pyro(self, length: int | None = None) -> Any:
        """The equivalent `pyro.distributions.DiscreteHMM`.

        Pyro's `DiscreteHMM` applies one transition before the first observation. With
        `length` given, the first of `length` time-dependent transition matrices draws the
        first state from `start_probs`; without it, an extra silent state (index n_states)
        starts every sequence and moves to the real states with `start_probs`, which is exact
        for any length. Either way `log_prob` equals this model's (for full-length sequences).

        Example:
            >>> import torch
            >>> from probgen.hmm import HMM
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
                "tied": (self.n_states, self.n_features, self.n_features),
            }
            model.covars_ = storage.reshape(shape[self.covariance])
        elif family == "multinomial":
            model = hmmlearn_hmm.MultinomialHMM(n_trials=self.n_trials, **common)
            model.n_features = self.n_features
            model.emissionprob_ = array(self.emission_probs)
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
    def from_hmmlearn(cls: type[_Model], model: Any, **options: Any) -> _Model:
        """Build an HMM with the parameters of a fitted hmmlearn model (float64).

        Supports `GaussianHMM`, `CategoricalHMM`, `GMMHMM`, `PoissonHMM` and `MultinomialHMM`
        (hmmlearn 0.3's: count vectors of ``n_trials`` draws per step), fitted or with
        parameters assigned directly (hmmlearn sets ``n_features`` only when it validates a
        model, so the sizes are read from the parameters). `options` are passed to the
        constructor (e.g. ``max_iter``). A GaussianHMM's scalar ``covars_prior`` becomes
        ``covariance_prior``, which probgen applies as hmmlearn does.

        Raises:
            DataError: another model class, or a GaussianHMM whose ``covars_prior`` or
                ``covars_weight`` is not the scalar form probgen implements.
        """
        name = type(model).__name__
        n_states = int(model.n_components)
        if name == "CategoricalHMM":
            n_symbols = int(np.shape(model.emissionprob_)[-1])
            hmm = cls(n_states, "categorical", n_symbols=n_symbols, **options)
            params = {"emission_probs": model.emissionprob_}
        elif name == "GaussianHMM":
            prior = np.asarray(model.covars_prior, dtype=float)
            weight = np.asarray(model.covars_weight, dtype=float)
            n_features = int(np.shape(model.means_)[-1])
            # hmmlearn divides by max(covars_weight - 1, 0) (diag, spherical) or
            # max(covars_weight - n_features, 0) (full, tied) plus the state weight.
            offset = 1 if model.covariance_type in ("diag", "spherical") else n_features
            extra_weight = max(float(np.max(weight)) - offset, 0)
            if np.ptp(prior) > 0 or np.ptp(weight) > 0 or extra_weight != 0:
                raise DataError(
                    "from_hmmlearn converts a GaussianHMM with one scalar covars_prior and the "
                    "default covars_weight; probgen has no per-entry covariance prior"
                )
            if np.any(np.asarray(model.means_weight, dtype=float) != 0):
                raise DataError("from_hmmlearn needs means_weight=0 (probgen has no mean prior)")
            options.setdefault("covariance_prior", float(prior.reshape(-1)[0]))
            hmm = cls(
                n_states,
                "gaussian",
                n_features=n_features,
                covariance=model.covariance_type,
                **options,
            )
            params = {"means": model.means_, "covariances": np.asarray(model._covars_)}
        elif name == "GMMHMM":
            if model.covariance_type != "spherical" and model.covars_prior is None:
                # GMMHMM's default priors make its full, diag and tied m-steps maximum likelihood.
                options.setdefault("covariance_prior", 0.0)
            hmm = cls(
                n_states,
                "gmm",
                n_features=int(np.shape(model.means_)[-1]),
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
            n_features = int(np.shape(model.lambdas_)[-1])
            hmm = cls(n_states, "poisson", n_features=n_features, **options)
            params = {"rates": model.lambdas_}
        elif name == "MultinomialHMM":
            trials = np.unique(np.asarray(model.n_trials)) if model.n_trials is not None else []
            options.setdefault("n_trials", int(trials[0]) if len(trials) == 1 else None)
            n_features = int(np.shape(model.emissionprob_)[-1])
            hmm = cls(n_states, "multinomial", n_features=n_features, **options)
            params = {"emission_probs": model.emissionprob_}
        else:
            raise DataError(
                "from_hmmlearn supports GaussianHMM, CategoricalHMM, GMMHMM, PoissonHMM and "
                f"MultinomialHMM, not {name}"
            )
        hmm = hmm.double()
        return hmm.set_parameters(
            start_probs=model.startprob_, transition_probs=model.transmat_, **params
        )
