"""Anomaly detection with any fitted density: `DensityDetector` and `VAEDetector`.

`DensityDetector(model)` scores an example by the model's `log_prob`: a low (log-)density is
an anomaly. Any probgen model with a density plugs in unchanged (a Gaussian mixture, a flow,
an RBM, MADE, a diffusion model, ...): the detector only calls `fit`, `log_prob` and reads
`log_prob_kind`, so it is honest about what its score is. `score_kind` says it: ``"exact"``
(the log-density), ``"lower_bound"`` (an ELBO), ``"estimate"`` (an IWAE or AIS estimate) or
``"unnormalized"`` (the log-density up to a constant, which ranks examples just as well).
A model without a density (``"none"``: a GAN) is refused.

`VAEDetector(vae)` is the same for a probgen `VAE`, scoring by its ELBO (`lower_bound`) or its
importance-weighted bound with `k` samples (`estimate`), whatever the VAE's own `log_prob` is.

Example:
    >>> import torch
    >>> from probgen.anomaly import DensityDetector
    >>> from probgen.mixture import GaussianMixture
    >>> x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    >>> detector = DensityDetector(GaussianMixture(1, seed=0), contamination=0.05).fit(x)
    >>> detector.score_kind, int((detector.predict(x) == -1).sum())
    ('exact', 10)
    >>> detector.predict(torch.tensor([[0.0, 0.0], [8.0, 8.0]])).tolist()
    [1, -1]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probgen.anomaly.base import ThresholdedDetector, batched_scores, check_contamination
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError, NoDensityError

__all__ = ["DensityDetector", "VAEDetector"]

_FIT_POLICIES = ("auto", "always", "never")


def _kind_name(kind: Any) -> str:
    return str(getattr(kind, "value", kind))


class DensityDetector(ThresholdedDetector):
    """Outliers are the examples of low density under a fitted probgen model.

    Args:
        model: any object with `log_prob(x)` and `log_prob_kind` (a probgen model: a
            `GaussianMixture`, `Flow`, `RBM`, `MADE`, `Diffusion`, ...), fitted or not.
        contamination: fraction of the training examples taken as outliers; sets `offset_`.
        fit_model: "auto" fits the model in `fit` unless it is fitted already, "always"
            refits it, "never" only scores (the model must be fitted).

    Attributes:
        offset_: the threshold on `score_samples` set by `fit`.
        score_kind: what the score is, `model.log_prob_kind` as a string ("exact",
            "lower_bound", "estimate" or "unnormalized").

    Raises:
        DataError: `model` has no `log_prob` / `log_prob_kind`, or its kind is "none".
    """

    def __init__(self, model: Any, contamination: float = 0.1, fit_model: str = "auto") -> None:
        if not callable(getattr(model, "log_prob", None)) or not hasattr(model, "log_prob_kind"):
            raise DataError(
                f"model must have log_prob(x) and log_prob_kind (a probgen density model); got "
                f"{type(model).__name__}"
            )
        if _kind_name(model.log_prob_kind) == "none":
            raise DataError(
                f"model {type(model).__name__} has no density (log_prob_kind 'none'), so it "
                "cannot score anomalies by log_prob; use a density model, or AutoencoderDetector "
                "/ DeepSVDD"
            )
        self.model = model
        self.contamination = check_contamination(contamination)
        self.fit_model = check_choice(fit_model, "fit_model", _FIT_POLICIES)
        self.offset_ = None

    @property
    def score_kind(self) -> str:
        """What `score_samples` returns: the model's `log_prob_kind` as a string."""
        return _kind_name(self.model.log_prob_kind)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments (scikit-learn's estimator API)."""
        return {
            "model": self.model,
            "contamination": self.contamination,
            "fit_model": self.fit_model,
        }

    def set_params(self, **params: Any) -> DensityDetector:
        """Set constructor arguments (scikit-learn's estimator API); the fit is forgotten."""
        unknown = sorted(set(params) - set(self.get_params()))
        if unknown:
            raise DataError(f"{type(self).__name__}.set_params: unknown argument(s) {unknown}")
        type(self).__init__(self, **{**self.get_params(), **params})
        return self

    def fit(self, X: Any, y: Any = None, **fit_options: Any) -> DensityDetector:
        """Fit the model on `X` (per `fit_model`) and set `offset_` from the training scores.

        Args:
            X: training examples, in the form the model's `fit` and `log_prob` take.
            y: ignored (scikit-learn's signature).
            **fit_options: passed to `model.fit` (n_epochs, ...).

        Returns:
            self.
        """
        fitted = bool(getattr(self.model, "fitted_", True))
        if self.fit_model == "always" or (self.fit_model == "auto" and not fitted):
            self.model.fit(X, **fit_options)
        elif fit_options:
            raise DataError(
                f"fit options {sorted(fit_options)} given but the model is not refitted "
                f"(fit_model={self.fit_model!r}, model fitted: {fitted})"
            )
        if _kind_name(self.model.log_prob_kind) == "none":  # a kind can follow the fit
            raise NoDensityError(f"{type(self.model).__name__} has no density after fitting")
        self.offset_ = None
        scores = self._normality(X).detach().double().cpu().numpy()
        if not np.isfinite(scores).all():
            raise DataError(
                "X: the model gives some training examples a log_prob of -inf or NaN; "
                "the contamination threshold needs finite scores"
            )
        self._set_offset(scores)
        return self

    def _log_prob(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(self.model.log_prob(x))

    def _normality(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() >= 1 and len(x) > self.scoring_batch_size:
            return batched_scores(self._log_prob, x, self.scoring_batch_size)
        with torch.no_grad():
            return self._log_prob(x)

    def to(self, *args: Any, **kwargs: Any) -> DensityDetector:
        """Move the wrapped model (`model.to(...)`); returns the detector."""
        self.model.to(*args, **kwargs)
        return self

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({type(self.model).__name__}, "
            f"contamination={self.contamination}, score_kind={self.score_kind!r})"
        )


class VAEDetector(DensityDetector):
    """Outliers are the examples with a low ELBO (or IWAE bound) under a probgen `VAE`.

    Args:
        vae: a `probgen.VAE` (anything with `elbo(x, n_samples=, seed=)`,
            `iwae(x, k=, seed=)` and `fit`), fitted or not.
        contamination: fraction of the training examples taken as outliers.
        estimator: "elbo" (score kind `lower_bound`) or "iwae" (score kind `estimate`).
        n_samples: draws of z per example: ELBO samples averaged, or k of the IWAE bound.
        fit_model: "auto", "always" or "never", as in `DensityDetector`.
        seed: seed of the draws of z (0 when None, so repeated scores agree).

    Example:
        >>> import torch
        >>> from probgen.deep.vae import VAE
        >>> x = torch.randn(128, 4, generator=torch.Generator().manual_seed(0))
        >>> vae = VAE((4,), latent_dim=2, likelihood="gaussian", hidden_dims=(8,),
        ...           n_epochs=2, seed=0)
        >>> detector = VAEDetector(vae, estimator="iwae", n_samples=8).fit(x)
        >>> detector.score_kind, detector.score_samples(x[:3]).shape
        ('estimate', (3,))
    """

    def __init__(
        self,
        vae: Any,
        contamination: float = 0.1,
        estimator: str = "elbo",
        n_samples: int = 16,
        fit_model: str = "auto",
        seed: int | None = None,
    ) -> None:
        if not (callable(getattr(vae, "elbo", None)) and callable(getattr(vae, "iwae", None))):
            raise DataError(
                f"vae must be a probgen VAE (with elbo and iwae methods); got {type(vae).__name__}"
            )
        super().__init__(vae, contamination=contamination, fit_model=fit_model)
        self.vae = vae
        self.estimator = check_choice(estimator, "estimator", ("elbo", "iwae"))
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.seed = seed

    @property
    def score_kind(self) -> str:
        """``"lower_bound"`` for the ELBO, ``"estimate"`` for the IWAE bound."""
        return "lower_bound" if self.estimator == "elbo" else "estimate"

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {
            "vae": self.vae,
            "contamination": self.contamination,
            "estimator": self.estimator,
            "n_samples": self.n_samples,
            "fit_model": self.fit_model,
            "seed": self.seed,
        }

    def _log_prob(self, x: Any) -> torch.Tensor:
        seed = 0 if self.seed is None else self.seed
        if self.estimator == "elbo":
            return self.vae.elbo(x, n_samples=self.n_samples, seed=seed)
        return self.vae.iwae(x, k=self.n_samples, seed=seed)
