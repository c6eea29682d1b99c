"""Finite Gaussian mixtures: EM fit, exact density, and blocked Gibbs for the Bayesian posterior.

`GaussianMixture(n_components, covariance=...)` is a density estimator in the scikit-learn
mould (`fit` by EM from k-means or random starts, `log_prob`, `predict_proba`, `sample`) and,
with data as `evidence`, a Bayesian mixture whose posterior `probgen.sample_chains(model,
"gibbs", evidence=data)` samples by conjugate blocked Gibbs, all chains in one tensor op:

- weights ~ Dirichlet(weight_concentration),
- covariance="diag" / "spherical", per component k and feature d: variance ~
  InverseGamma(variance_shape, variance_scale) and mean | variance ~ Normal(mean_prior,
  variance / mean_precision) (Normal-Inverse-Gamma); with "spherical" one variance per
  component is shared by its features;
- covariance="full", per component k: covariance ~ InverseWishart(covariance_df,
  covariance_scale) and mean | covariance ~ MultivariateNormal(mean_prior, covariance /
  mean_precision) (Normal-Inverse-Wishart);
- assignment z_i ~ Categorical(weights), x_i | z_i ~ Normal(means[z_i], covariance of z_i).

One Gibbs step draws z | parameters (exact categorical per point), weights | z (Dirichlet)
and (means, variances or covariances) | z, x (the conjugate posterior; inverse-Wishart draws
by the Bartlett decomposition). The EM iterations run on the shared EM driver
(`probgen.fitting.em`); the pure tensor functions live in `probgen.mixture.inference` (EM) and
`probgen.mixture.conjugate` (the conditional draws, batched over chains), the model's Gibbs
interface in `probgen.mixture.gibbs` and the prior's checks in `probgen.mixture.priors`.

Example:
    >>> import torch
    >>> from probgen.mixture.model import GaussianMixture
    >>> x = torch.cat([torch.randn(100, 1, generator=torch.Generator().manual_seed(0)) - 4,
    ...                torch.randn(100, 1, generator=torch.Generator().manual_seed(1)) + 4])
    >>> model = GaussianMixture(2, covariance="diag", seed=0).double().fit(x.double())
    >>> sorted(round(m) for m in model.means[:, 0].tolist())
    [-4, 4]
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from probgen.core.contract import LogProbKind, Model
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.distributed import is_distributed, shard_layout
from probgen.core.distributed_restarts import (
    fit_restarts_across_ranks,
    restart_seed,
    restart_split,
)
from probgen.core.errors import DataError, FitError
from probgen.core.kmeans import kmeans
from probgen.core.threads import small_op_threads
from probgen.fitting.em import EMResult, fit_restarts, record_fit, run_em
from probgen.mixture.conjugate import MixturePrior
from probgen.mixture.gibbs import FULL_STATE_KEYS, STATE_KEYS, MixtureGibbs
from probgen.mixture.inference import (
    EMFeatures,
    covariances_valid,
    em_features,
    em_iteration,
    em_m_step,
    gaussian_log_probs,
)
from probgen.mixture.priors import PRIOR_KEYS, nonnegative, prior_settings
from probgen.mixture.sharded import sharded_features, sharded_start

COVARIANCE_TYPES = ("full", "diag", "spherical")
INIT_METHODS = ("kmeans", "random")
# The names below are re-exported for code that imported them from this module.
__all__ = [
    "GaussianMixture",
    "COVARIANCE_TYPES",
    "INIT_METHODS",
    "PRIOR_KEYS",
    "STATE_KEYS",
    "FULL_STATE_KEYS",
    "MixturePrior",
]


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

def _em_work(model: Any, data: Any, **_: Any) -> int | None:
    """Per-iteration work of EM (`probgen.core.threads`): rows x components x features**2."""
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) != 2:
        return None
    return int(shape[0]) * model.n_components * int(shape[1]) ** 2

class GaussianMixture(MixtureGibbs, Model):
    """A finite mixture of Gaussians with an exact density, fitted by EM; Gibbs for its posterior.

    Args:
        n_components: number of components K.
        covariance: "full" (default), "diag" or "spherical" (all three for EM and Gibbs).
        n_features: number of features D (set by `fit`, `set_parameters` or the evidence).
        n_init: EM restarts; the one with the best final log-likelihood is kept.
        max_iter: EM iterations per restart.
        tol: EM stops when the average log-likelihood per point changes by less than `tol`
            (scikit-learn's criterion).
        reg_covar: added to the diagonal of every covariance in the m-step.
        init: "kmeans" (k-means++ seeding and Lloyd iterations, then one m-step) or "random"
            (uniform random responsibilities, then one m-step).
        seed: seed of the random starts (None: fresh randomness).
        weight_concentration: Dirichlet concentration of the weights (default 1: uniform).
        mean_prior: prior mean of the components' means, a scalar or D values (default None:
            the mean of the evidence, per feature).
        mean_precision: kappa in mean | variance ~ Normal(mean_prior, variance / kappa)
            (default 0.01: a prior sd of the mean 10 times the component's sd); the same for
            "full": mean | covariance ~ MultivariateNormal(mean_prior, covariance / kappa).
        variance_shape: InverseGamma shape a of each variance (default 1; "diag",
            "spherical").
        variance_scale: InverseGamma scale b, a scalar or D values (default None: 0.1 times
            the evidence's variance per feature, its mean over features for "spherical"; the
            prior median variance is then about 0.14 times the data's variance).
        covariance_df: InverseWishart degrees of freedom nu of each full covariance, > D - 1
            (default None: D + 1, the least informative integer choice: with a diagonal scale
            every correlation is then uniform on (-1, 1) a priori; "full" only).
        covariance_scale: InverseWishart scale matrix Psi: a scalar (times the identity), D
            values (a diagonal) or a (D, D) positive-definite matrix (default None: 0.2 times
            the evidence's maximum-likelihood covariance, or of its diagonal when singular).
            With both defaults each variance is a priori InverseGamma(1, 0.1 times the data's
            variance), the "diag" default, and D = 1 gives exactly the "diag" prior.
        prior: a dict with any of the seven prior settings above; its entries take precedence.
        sort_components: after each Gibbs step, relabel the components so that the first
            feature of the means increases. The prior is exchangeable, so this samples the
            posterior of the unlabelled mixture and chains agree on what "component 0" means.

    The data-scaled prior defaults are deterministic functions of the evidence (an empirical
    Bayes choice, as in scikit-learn's `BayesianGaussianMixture`); set them to fix the prior.
    The Gibbs state is {"weights" (chains, K), "means" (chains, K, D), "variances" (chains, K,
    D) for "diag" / "spherical" or "covariances" (chains, K, D, D) for "full" (the model's own
    parameter name), "assignments" (chains, n)}.

    Example:
        >>> import torch, probgen
        >>> gen = torch.Generator().manual_seed(0)
        >>> data = torch.cat([torch.randn(50, 1, generator=gen, dtype=torch.float64) - 5,
        ...                   torch.randn(50, 1, generator=gen, dtype=torch.float64) + 5])
        >>> samples = probgen.sample_chains(
        ...     GaussianMixture(2, covariance="diag"), "gibbs", num_chains=4, num_samples=50,
        ...     warmup=20, seed=0, evidence=data, progress=False)
        >>> samples["means"].shape
        (4, 50, 2, 1)
    """

    log_prob_kind = LogProbKind.EXACT
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance: str = "full",
        n_features: int | None = None,
        n_init: int = 1,
        max_iter: int = 100,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        init: str = "kmeans",
        seed: int | None = None,
        weight_concentration: float = 1.0,
        mean_prior: float | list[float] | None = None,
        mean_precision: float = 0.01,
        variance_shape: float = 1.0,
        variance_scale: float | list[float] | None = None,
        covariance_df: float | None = None,
        covariance_scale: float | list[float] | list[list[float]] | None = None,
        prior: dict[str, Any] | None = None,
        sort_components: bool = True,
    ) -> None:
        super().__init__()
        self.n_components = check_positive_int(n_components, "n_components")
        self.covariance = check_choice(covariance, "covariance", COVARIANCE_TYPES)
        self.n_features = (
            None if n_features is None else check_positive_int(n_features, "n_features")
        )
        self.n_init = check_positive_int(n_init, "n_init")
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = nonnegative(tol, "tol")
        self.reg_covar = nonnegative(reg_covar, "reg_covar")
        self.init = check_choice(init, "init", INIT_METHODS)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise DataError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        settings = {
            "weight_concentration": weight_concentration,
            "mean_prior": mean_prior,
            "mean_precision": mean_precision,
            "variance_shape": variance_shape,
            "variance_scale": variance_scale,
            "covariance_df": covariance_df,
            "covariance_scale": covariance_scale,
        }
        settings = prior_settings(settings, prior)
        self.prior_settings = settings
        self.sort_components = bool(sort_components)

        self.register_buffer("weights", torch.full((self.n_components,), 1.0 / self.n_components))
        self.register_buffer("means", torch.zeros(self._means_shape()))
        self.register_buffer("covariances", torch.ones(self._covariances_shape()))
        self._refresh_event_shape()
        self.history_: list[dict[str, float]] = []
        self.n_iter_ = 0
        self.converged_ = False

    # ---- configuration -------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        # The prior settings live in one checked dict, not in attributes of their names.
        return {
            "n_components": self.n_components,
            "covariance": self.covariance,
            "n_features": self.n_features,
            "n_init": self.n_init,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "reg_covar": self.reg_covar,
            "init": self.init,
            "seed": self.seed,
            **self.prior_settings,
            "sort_components": self.sort_components,
        }

    def set_fitted_state(self, state: dict[str, Any]) -> None:
        history = state.get("history_")
        if isinstance(history, list) and history and not isinstance(history[0], dict):
            # Older files hold the bare per-point averages; name them as `fit` records them.
            records = [
                {"iteration": index + 1, "mean_log_likelihood": value}
                for index, value in enumerate(history)
            ]
            state = {**state, "history_": records}
        super().set_fitted_state(state)

    def _means_shape(self) -> tuple[int, int]:
        return (self.n_components, self.n_features or 0)

    def _covariances_shape(self) -> tuple[int, ...]:
        features = self.n_features or 0
        return {
            "full": (self.n_components, features, features),
            "diag": (self.n_components, features),
            "spherical": (self.n_components,),
        }[self.covariance]

    def _refresh_event_shape(self) -> None:
        self.event_shape = torch.Size([self.n_features] if self.n_features else [])

    def _set_n_features(self, n_features: int) -> None:
        if self.n_features == n_features:
            return
        self.n_features = n_features
        dtype, device = self.dtype, self.device
        self.means = torch.zeros(self._means_shape(), dtype=dtype, device=device)
        self.covariances = torch.ones(self._covariances_shape(), dtype=dtype, device=device)
        self._refresh_event_shape()

    @property
    def precisions(self) -> Tensor:
        """Inverse covariances (K, D, D) / (K, D) / (K,), scikit-learn's `precisions_`."""
        if self.covariance == "full":
            return torch.linalg.inv(self.covariances)
        return self.covariances.reciprocal()

    # ---- parameters ----------------------------------------------------------------------
    def set_parameters(
        self, *, weights: Any = None, means: Any = None, covariances: Any = None
    ) -> GaussianMixture:
        """Set the mixture's parameters (all three on an unfitted model); returns self.

        Args:
            weights: (K,) positive, summing to 1.
            means: (K, D).
            covariances: (K, D, D) positive definite for "full", (K, D) variances for "diag",
                (K,) for "spherical".

        Raises:
            DataError: a wrong shape, weights that are not a distribution, a covariance that
                is not positive definite.
        """
        dtype, device = self.dtype, self.device
        if not self.fitted_ and (weights is None or means is None or covariances is None):
            raise DataError(
                "set_parameters on an unfitted model needs weights, means and covariances"
            )
        n_components = self.n_components
        if means is not None:
            means = as_tensor(means, "means", dtype=dtype, device=device)
            if means.dim() != 2 or means.shape[0] != n_components:
                raise DataError(
                    f"means must have shape ({n_components}, n_features), got {tuple(means.shape)}"
                )
            if self.n_features is not None and self.fitted_ and means.shape[1] != self.n_features:
                raise DataError(
                    f"means has {means.shape[1]} features, the model has {self.n_features}"
                )
        n_features = means.shape[1] if means is not None else self.n_features
        if weights is not None:
            weights = as_tensor(weights, "weights", dtype=dtype, device=device)
            if weights.shape != (n_components,):
                raise DataError(
                    f"weights must have shape ({n_components},), got {tuple(weights.shape)}"
                )
            if bool((weights < 0).any()) or abs(float(weights.sum()) - 1) > 1e-5:
                raise DataError("weights must be non-negative and sum to 1")
        if covariances is not None:
            covariances = as_tensor(covariances, "covariances", dtype=dtype, device=device)
            features = n_features or 0
            expected = {
                "full": (n_components, features, features),
                "diag": (n_components, features),
                "spherical": (n_components,),
            }[self.covariance]
            if tuple(covariances.shape) != expected:
                raise DataError(
                    f"covariances must have shape {expected} for covariance="
                    f"{self.covariance!r}, got {tuple(covariances.shape)}"
                )
            if not covariances_valid(covariances, self.covariance):
                raise DataError("covariances must be positive definite (positive variances)")
        if n_features is not None:
            self._set_n_features(int(n_features))
        with torch.no_grad():
            if weights is not None:
                self.weights = weights.clone()
            if means is not None:
                self.means = means.clone()
            if covariances is not None:
                self.covariances = covariances.clone()
        self._mark_fitted()
        return self

    def n_parameters(self) -> int:
        """Number of free parameters (for AIC and BIC)."""
        d, k = self.n_features or 0, self.n_components
        per_component = {"full": d * (d + 1) // 2, "diag": d, "spherical": 1}[self.covariance]
        return k * (d + per_component) + k - 1

    # ---- density -------------------------------------------------------------------------
    def _points(self, x: Any, name: str = "x") -> Tensor:
        points = as_tensor(x, name, dtype=self.dtype, device=self.device)
        if points.dim() < 1 or points.shape[-1] != self.n_features:
            raise DataError(
                f"{name} has shape {tuple(points.shape)}; expected (n, {self.n_features}) "
                "(the model's number of features)"
            )
        return points

    def _weighted_log_probs(self, points: Tensor) -> Tensor:
        flat = points.reshape(-1, points.shape[-1])
        log_probs = gaussian_log_probs(flat, self.means, self.covariances, self.covariance)
        return log_probs + self.weights.log()

    def log_prob(self, x: Any) -> Tensor:
        """Exact log density of each point, (*batch, D) -> (*batch)."""
        self.check_fitted("log_prob")
        points = self._points(x)
        with torch.no_grad():
            values = torch.logsumexp(self._weighted_log_probs(points), -1)
        return values.reshape(points.shape[:-1])

    def score(self, x: Any) -> float:
        """Average log-likelihood per point (scikit-learn's `score`)."""
        return float(self.log_prob(x).mean())

    def predict_proba(self, x: Any) -> Tensor:
        """Posterior component probabilities (responsibilities), (*batch, D) -> (*batch, K)."""
        self.check_fitted("predict_proba")
        points = self._points(x)
        with torch.no_grad():
            values = torch.softmax(self._weighted_log_probs(points), -1)
        return values.reshape(*points.shape[:-1], self.n_components)

    def predict(self, x: Any) -> Tensor:
        """Most probable component of each point, (*batch, D) -> (*batch) long."""
        return self.predict_proba(x).argmax(-1)

    def bic(self, x: Any) -> float:
        """Bayesian information criterion on `x` (lower is better)."""
        log_probs = self.log_prob(x)
        return -2 * float(log_probs.sum()) + self.n_parameters() * math.log(log_probs.numel())

    def aic(self, x: Any) -> float:
        """Akaike information criterion on `x` (lower is better)."""
        return -2 * float(self.log_prob(x).sum()) + 2 * self.n_parameters()

    def sample(self, n: int, *, seed: int | torch.Generator | None = None) -> Tensor:
        """Draw `n` points (n, D): a component from the weights, then its Gaussian."""
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        dtype, device = self.dtype, self.device
        with torch.no_grad():
            components = torch.multinomial(self.weights, n, replacement=True, generator=generator)
            noise = torch.randn(n, self.n_features, dtype=dtype, device=device, generator=generator)
            if self.covariance == "full":
                factor = torch.linalg.cholesky(self.covariances)[components]
                offset = (factor @ noise.unsqueeze(-1)).squeeze(-1)
            elif self.covariance == "diag":
                offset = self.covariances[components].sqrt() * noise
            else:
                offset = self.covariances[components].sqrt().unsqueeze(-1) * noise
            return self.means[components] + offset

    # ---- EM --------------------------------------------------------------------------------
    def fit(
        self, data: Any, *, seed: int | None = None, warm_start: bool = False
    ) -> GaussianMixture:
        """Fit by EM (best of `n_init` restarts); returns self.

        `history_` holds the kept restart's iterations, ``{"iteration": i,
        "mean_log_likelihood": v}`` with v the average log-likelihood per point before the
        iteration's M-step (scikit-learn's `lower_bound_` for the last one).

        Under `torch.distributed` (`probgen.distributed.is_distributed()`), `data` is this
        rank's rows: the fit is over all ranks' rows (in rank order), every rank ends with the
        same parameters, equal to a single-process fit on the concatenated data up to
        rounding. Every rank calls `fit` with the same settings. Inside
        `probgen.distributed.restarts_across_ranks()` every rank passes the whole data instead
        and the `n_init` restarts are split over the ranks (rank r runs r, r + world, ...);
        every rank ends with the single-process fit's best restart.

        Args:
            data: points (n, D), n >= n_components.
            seed: deprecated (set it in the constructor); overrides `seed` for this call.
            warm_start: start the first restart from the current parameters (from a previous
                fit or `set_parameters`) instead of a k-means or random start.

        Raises:
            DataError: malformed data. FitError: a covariance became singular or the
                log-likelihood non-finite (the model keeps its last good parameters).

        Warns:
            ConvergenceWarning: the best restart stopped at `max_iter` before converging.
            DeprecationWarning: `seed` was given.
        """
        if seed is not None:
            warnings.warn(
                "GaussianMixture.fit(seed=...) is deprecated; pass seed to the GaussianMixture "
                "constructor instead (GaussianMixture(..., seed=...)). The fit argument will be "
                "removed in the next release.",
                DeprecationWarning,
                stacklevel=2,
            )
        x = as_tensor(data, "data", dtype=self.dtype, device=self.device)
        if x.dim() != 2:
            raise DataError(f"data must have shape (n, n_features), got {tuple(x.shape)}")
        if self.fitted_ and self.n_features is not None and x.shape[1] != self.n_features:
            raise DataError(f"data has {x.shape[1]} features, the model has {self.n_features}")
        sharded = is_distributed()
        offset, total = shard_layout(x.shape[0]) if sharded else (0, x.shape[0])
        if total < self.n_components:
            raise DataError(
                f"data has {total} points; need at least n_components={self.n_components}"
            )
        resume = warm_start and self.fitted_
        self._set_n_features(x.shape[1])
        # Inside `probgen.distributed.restarts_across_ranks()` every rank replays every start.
        generator = self.make_generator(restart_seed(self.seed if seed is None else seed))
        split = restart_split()[1] > 1 and self.n_init > 1
        with torch.no_grad(), small_op_threads(_em_work(self, x), x):
            if sharded:
                features = sharded_features(x, self.covariance)
                shards = (offset, total)
            else:
                features = em_features(x, self.covariance)
                shards = None
            result = (fit_restarts_across_ranks if split else fit_restarts)(
                self,
                self.n_init,
                lambda restart: self._initialize(x, features, generator, shards),
                lambda: self._run_em(features, sharded),
                warm_start=resume,
            )
        record_fit(
            self,
            result,
            warning=(
                f"GaussianMixture EM stopped at max_iter={self.max_iter} before the average "
                f"log-likelihood changed by less than tol={self.tol}"
            ),
            figure="mean_log_likelihood",
        )
        return self

    def _initialize(
        self,
        x: Tensor,
        data: EMFeatures,
        generator: torch.Generator,
        shards: tuple[int, int] | None = None,
    ) -> None:
        n_points = x.shape[0]
        if shards is not None:  # (offset, total) of this rank's rows
            responsibilities = sharded_start(x, self.n_components, self.init, generator, *shards)
        elif self.init == "kmeans":
            centres, labels = kmeans(x, self.n_components, generator)
            if labels.shape[0] != n_points:  # k-means ran on a subset: label every point
                labels = torch.cdist(x, centres).argmin(-1)
            responsibilities = torch.nn.functional.one_hot(labels, self.n_components).to(x.dtype)
        else:
            uniform = torch.rand(
                n_points, self.n_components, dtype=x.dtype, generator=generator, device=x.device
            )
            responsibilities = uniform / uniform.sum(1, keepdim=True)
        weights, means, covariances = em_m_step(
            data, responsibilities, self.reg_covar, sharded=shards is not None
        )
        if not covariances_valid(covariances, self.covariance):
            raise FitError(
                "the initial covariances are not positive definite (duplicate points?); "
                "increase reg_covar"
            )
        self.weights, self.means, self.covariances = weights, means, covariances

    def _run_em(self, features: EMFeatures, sharded: bool = False) -> EMResult:
        """EM iterations from the current parameters, in scikit-learn's order, on the driver.

        Each iteration is `em_iteration` (E-step recording the average log-likelihood per
        point, M-step, validity check); the driver's ``criterion="change"`` with ``scale=1``
        is scikit-learn's ``abs(change) < tol`` test. A failed iteration raises here, before
        the new parameters are adopted, so the model keeps its last good ones without the
        driver's per-iteration snapshot (the parameters are replaced, never changed in place).
        """
        full = self.covariance == "full"
        cholesky = torch.linalg.cholesky(self.covariances) if full else None
        iteration = 0

        def iterate() -> float:
            nonlocal cholesky, iteration
            iteration += 1
            step = em_iteration(
                features,
                self.weights,
                self.means,
                self.covariances,
                cholesky,
                reg_covar=self.reg_covar,
                sharded=sharded,
            )
            if step.failure == "nonfinite":
                raise FitError(
                    f"the log-likelihood became {step.average} at EM iteration {iteration}; "
                    "the model keeps its last good parameters"
                )
            if step.failure == "singular":
                self._mark_fitted()
                raise FitError(
                    f"EM iteration {iteration} made a covariance singular (a component "
                    "collapsed onto too few points); the model keeps its last good parameters "
                    "(increase reg_covar)"
                )
            self.weights, self.means, self.covariances = step.parameters
            cholesky = step.cholesky
            return step.average

        return run_em(
            iterate,
            max_iter=self.max_iter,
            tol=self.tol,
            criterion="change",
            what="GaussianMixture EM",
        )
