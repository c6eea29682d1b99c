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
by the Bartlett decomposition). The pure tensor functions (EM and the conditional draws,
batched over chains) live in `probgen.mixture.inference`.

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
from probgen.core.errors import ConvergenceWarning, DataError, FitError
from probgen.mixture.inference import (
    EMFeatures,
    MixturePrior,
    component_counts,
    covariances_valid,
    draw_assignments,
    draw_means_covariances,
    draw_means_variances,
    draw_weights,
    em_features,
    em_m_step,
    gaussian_log_probs,
    joint_log_prob,
    run_em,
    sort_state,
)
from probgen.samplers.gibbs import sample_categorical

COVARIANCE_TYPES = ("full", "diag", "spherical")
INIT_METHODS = ("kmeans", "random")
PRIOR_KEYS = (
    "weight_concentration",
    "mean_prior",
    "mean_precision",
    "variance_shape",
    "variance_scale",
    "covariance_df",
    "covariance_scale",
)
STATE_KEYS = ("weights", "means", "variances", "assignments")
FULL_STATE_KEYS = ("weights", "means", "covariances", "assignments")


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class GaussianMixture(Model):
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
        self.tol = _nonnegative(tol, "tol")
        self.reg_covar = _nonnegative(reg_covar, "reg_covar")
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
        if prior is not None:
            if not isinstance(prior, dict):
                raise DataError(f"prior must be a dict with keys {PRIOR_KEYS}, got {prior!r}")
            unknown = set(prior) - set(PRIOR_KEYS)
            if unknown:
                raise DataError(f"prior has unknown key(s) {sorted(unknown)}; known: {PRIOR_KEYS}")
            settings.update(prior)
        for name in ("weight_concentration", "mean_precision", "variance_shape"):
            settings[name] = _positive(settings[name], name)
        for name in ("mean_prior", "variance_scale"):
            settings[name] = _optional_values(settings[name], name, positive=name != "mean_prior")
        if settings["covariance_df"] is not None:
            settings["covariance_df"] = _positive(settings["covariance_df"], "covariance_df")
        settings["covariance_scale"] = _optional_scale_matrix(settings["covariance_scale"])
        self.prior_settings = settings
        self.sort_components = bool(sort_components)

        self.register_buffer("weights", torch.full((self.n_components,), 1.0 / self.n_components))
        self.register_buffer("means", torch.zeros(self._means_shape()))
        self.register_buffer("covariances", torch.ones(self._covariances_shape()))
        self._refresh_event_shape()
        self.history_: list[float] = []
        self.n_iter_ = 0
        self.converged_ = False

    # ---- configuration -------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
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

        Args:
            data: points (n, D), n >= n_components.
            seed: overrides the constructor's `seed`.
            warm_start: start the first restart from the current parameters (from a previous
                fit or `set_parameters`) instead of a k-means or random start.

        Raises:
            DataError: malformed data. FitError: a covariance became singular or the
                log-likelihood non-finite (the model keeps its last good parameters).

        Warns:
            ConvergenceWarning: the best restart stopped at `max_iter` before converging.
        """
        x = as_tensor(data, "data", dtype=self.dtype, device=self.device)
        if x.dim() != 2:
            raise DataError(f"data must have shape (n, n_features), got {tuple(x.shape)}")
        if self.fitted_ and self.n_features is not None and x.shape[1] != self.n_features:
            raise DataError(f"data has {x.shape[1]} features, the model has {self.n_features}")
        if x.shape[0] < self.n_components:
            raise DataError(
                f"data has {x.shape[0]} points; need at least n_components={self.n_components}"
            )
        resume = warm_start and self.fitted_
        self._set_n_features(x.shape[1])
        generator = self.make_generator(self.seed if seed is None else seed)
        best: tuple[float, dict[str, Tensor], list[float], bool] | None = None
        with torch.no_grad():
            data = em_features(x, self.covariance)
            for restart in range(self.n_init):
                if not (resume and restart == 0):
                    self._initialize(x, data, generator)
                history, converged = self._run_em(data)
                if best is None or history[-1] > best[0]:
                    state = {k: v.clone() for k, v in self.state_dict().items()}
                    best = (history[-1], state, history, converged)
        assert best is not None
        _, state, history, converged = best
        self.load_state_dict(state)
        self.history_ = history
        self.n_iter_ = len(history)
        self.converged_ = converged
        if not converged:
            warnings.warn(
                f"GaussianMixture EM stopped at max_iter={self.max_iter} before the average "
                f"log-likelihood changed by less than tol={self.tol}",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._mark_fitted()
        return self

    def _initialize(self, x: Tensor, data: EMFeatures, generator: torch.Generator) -> None:
        n_points = x.shape[0]
        if self.init == "kmeans":
            from probgen.hmm.emissions import kmeans

            centres, labels = kmeans(x, self.n_components, generator)
            if labels.shape[0] != n_points:  # k-means ran on a subset: label every point
                labels = torch.cdist(x, centres).argmin(-1)
            responsibilities = torch.nn.functional.one_hot(labels, self.n_components).to(x.dtype)
        else:
            uniform = torch.rand(
                n_points, self.n_components, dtype=x.dtype, generator=generator, device=x.device
            )
            responsibilities = uniform / uniform.sum(1, keepdim=True)
        weights, means, covariances = em_m_step(data, responsibilities, self.reg_covar)
        if not covariances_valid(covariances, self.covariance):
            raise FitError(
                "the initial covariances are not positive definite (duplicate points?); "
                "increase reg_covar"
            )
        self.weights, self.means, self.covariances = weights, means, covariances

    def _run_em(self, data: EMFeatures) -> tuple[list[float], bool]:
        """EM iterations from the current parameters, in scikit-learn's order."""
        result = run_em(
            data,
            self.weights,
            self.means,
            self.covariances,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        self.weights = result.weights
        self.means = result.means
        self.covariances = result.covariances
        if result.failure == "nonfinite":
            raise FitError(
                f"the log-likelihood became {result.failed_value} at EM iteration "
                f"{result.failed_iteration}; the model keeps its last good parameters"
            )
        if result.failure == "singular":
            self._mark_fitted()
            raise FitError(
                f"EM iteration {result.failed_iteration} made a covariance singular (a "
                "component collapsed onto too few points); the model keeps its last good "
                "parameters (increase reg_covar)"
            )
        return result.history, result.converged

    # ---- Bayesian mixture: Gibbs -----------------------------------------------------------
    def _evidence(self, evidence: Any) -> Tensor:
        if evidence is None:
            raise DataError(
                "evidence (the observed data, shape (n, n_features)) is required to sample "
                "the mixture posterior; pass evidence=data"
            )
        x = as_tensor(evidence, "evidence", device=self.device)
        if not x.is_floating_point():
            x = x.double()
        if x.dim() != 2:
            raise DataError(f"evidence must have shape (n, n_features), got {tuple(x.shape)}")
        if self.n_features is not None and x.shape[1] != self.n_features:
            raise DataError(f"evidence has {x.shape[1]} features, the model has {self.n_features}")
        return x

    def resolve_prior(self, evidence: Any) -> MixturePrior:
        """The conjugate prior used with `evidence`, data-scaled defaults filled in."""
        x = self._evidence(evidence)
        settings = self.prior_settings
        n_features = x.shape[1]

        def values(value: Any, name: str) -> Tensor:
            tensor = torch.as_tensor(value, dtype=x.dtype, device=x.device)
            if tensor.dim() == 1 and tensor.shape[0] not in (1, n_features):
                raise DataError(f"{name} has {tensor.shape[0]} values; the data has {n_features}")
            return tensor.expand(n_features).clone()

        mean_prior = settings["mean_prior"]
        mean_prior = x.mean(0) if mean_prior is None else values(mean_prior, "mean_prior")

        def scalar(name: str) -> Tensor:
            return torch.tensor(settings[name], dtype=x.dtype, device=x.device)

        if self.covariance == "full":
            df = settings["covariance_df"]
            df = n_features + 1.0 if df is None else df
            if not df > n_features - 1:
                raise DataError(
                    f"covariance_df must be greater than n_features - 1 = {n_features - 1} "
                    f"(the inverse-Wishart's degrees of freedom), got {df!r}"
                )
            return MixturePrior(
                weight_concentration=scalar("weight_concentration"),
                mean_prior=mean_prior,
                mean_precision=scalar("mean_precision"),
                covariance_df=torch.tensor(df, dtype=x.dtype, device=x.device),
                covariance_scale=self._covariance_scale(x),
            )
        spherical = self.covariance == "spherical"
        scale = settings["variance_scale"]
        if scale is None:
            variance = x.var(0, unbiased=False).clamp_min(1e-12)
            scale = 0.1 * (variance.mean() if spherical else variance)
        else:
            scale = values(scale, "variance_scale")
            if spherical:
                if bool((scale != scale[0]).any()):
                    raise DataError("variance_scale must be one value for covariance='spherical'")
                scale = scale[0]

        return MixturePrior(
            weight_concentration=scalar("weight_concentration"),
            mean_prior=mean_prior,
            mean_precision=scalar("mean_precision"),
            variance_shape=scalar("variance_shape"),
            variance_scale=scale,
            spherical=spherical,
        )

    def _covariance_scale(self, x: Tensor) -> Tensor:
        """The inverse-Wishart scale matrix (D, D) for evidence `x`."""
        n_features = x.shape[1]
        value = self.prior_settings["covariance_scale"]
        if value is None:
            return 0.2 * _data_covariance(x)
        scale = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        if scale.dim() < 2:
            if scale.dim() == 1 and scale.shape[0] not in (1, n_features):
                raise DataError(
                    f"covariance_scale has {scale.shape[0]} values; the data has {n_features}"
                )
            return torch.diag_embed(scale.expand(n_features).clone())
        if tuple(scale.shape) != (n_features, n_features):
            raise DataError(
                f"covariance_scale has shape {tuple(scale.shape)}; the data needs "
                f"({n_features}, {n_features})"
            )
        return scale.clone()

    def initial_state(
        self, num_chains: int, *, generator: torch.Generator | None = None, evidence: Any = None
    ) -> dict[str, Tensor]:
        """Dispersed starting states: k-means++-style means drawn per chain from the data.

        Each chain seeds its means with distinct data points chosen as k-means++ does
        (the first uniformly, each next one with probability proportional to the squared
        distance to the nearest chosen one), starts with equal weights and the data's variance,
        and draws its assignments from their conditional. With covariance="full" every
        component starts with the data's covariance (its diagonal when that is singular).

        Returns:
            {"weights": (chains, K), "means": (chains, K, D), "variances": (chains, K, D)
            ("diag", "spherical") or "covariances": (chains, K, D, D) ("full"),
            "assignments": (chains, n) long}.
        """
        num_chains = check_positive_int(num_chains, "num_chains")
        x = self._evidence(evidence)
        generator = generator if generator is not None else self.make_generator(None)
        n_points, n_features = x.shape
        n_components = self.n_components
        chosen = torch.randint(
            n_points, (num_chains, 1), generator=generator, device=generator.device
        ).to(x.device)
        nearest = ((x - x[chosen[:, 0]].unsqueeze(1)) ** 2).sum(-1)  # (chains, n)
        for _ in range(1, n_components):
            total = nearest.sum(-1, keepdim=True)
            weights = torch.where(total > 0, nearest, torch.ones_like(nearest))
            pick = sample_categorical(weights.log(), generator).unsqueeze(-1)
            chosen = torch.cat([chosen, pick], 1)
            nearest = torch.minimum(nearest, ((x - x[pick[:, 0]].unsqueeze(1)) ** 2).sum(-1))
        means = x[chosen]
        if self.covariance == "full":
            shape: tuple[int, ...] = (num_chains, n_components, n_features, n_features)
            variances = _data_covariance(x).expand(shape).clone()
        else:
            variance = x.var(0, unbiased=False).clamp_min(1e-12)
            if self.covariance == "spherical":
                variance = variance.mean().expand(n_features)
            variances = variance.expand(num_chains, n_components, n_features).clone()
        weights = torch.full(
            (num_chains, n_components), 1.0 / n_components, dtype=x.dtype, device=x.device
        )
        assignments = draw_assignments(x, weights, means, variances, generator)
        return self._as_state(weights, means, variances, assignments)

    @property
    def state_keys(self) -> tuple[str, ...]:
        """Keys of the Gibbs state: "covariances" for covariance="full", else "variances"."""
        return FULL_STATE_KEYS if self.covariance == "full" else STATE_KEYS

    def _as_state(
        self, weights: Tensor, means: Tensor, variances: Tensor, assignments: Tensor
    ) -> dict[str, Tensor]:
        state = dict(zip(self.state_keys, (weights, means, variances, assignments)))
        return sort_state(state) if self.sort_components else state

    def _check_state(self, state: Any, x: Tensor) -> dict[str, Tensor]:
        keys = self.state_keys
        if not isinstance(state, dict) or set(state) != set(keys):
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise DataError(
                f"state must be a dict with keys {keys} (covariance={self.covariance!r}), "
                f"got {found}"
            )
        n_chains = int(torch.as_tensor(state["weights"]).shape[0])
        k, (n, d) = self.n_components, x.shape
        expected = {
            "weights": (n_chains, k),
            "means": (n_chains, k, d),
            keys[2]: (n_chains, k, d, d) if self.covariance == "full" else (n_chains, k, d),
            "assignments": (n_chains, n),
        }
        checked = {}
        for key, shape in expected.items():
            value = torch.as_tensor(state[key], device=x.device)
            if tuple(value.shape) != shape:
                raise DataError(
                    f"state[{key!r}] has shape {tuple(value.shape)}; expected {shape} "
                    "(chains, components, features / points of the evidence)"
                )
            checked[key] = value.long() if key == "assignments" else value.to(x.dtype)
        if bool(((checked["assignments"] < 0) | (checked["assignments"] >= k)).any()):
            raise DataError(f"state['assignments'] must lie in 0..{k - 1}")
        if self.covariance == "full" and not covariances_valid(checked[keys[2]], "full"):
            raise DataError("state['covariances'] must be positive definite")
        return checked

    def gibbs_step(
        self,
        state: dict[str, Tensor],
        *,
        generator: torch.Generator | None = None,
        evidence: Any = None,
    ) -> dict[str, Tensor]:
        """One blocked Gibbs sweep for every chain: z | params, weights | z, (means, cov) | z, x.

        Args:
            state: {"weights", "means", "variances" (or "covariances" for "full"),
                "assignments"} with a leading chain axis.
            generator: source of every draw.
            evidence: the observed data (n, D).

        Returns:
            The new state (same keys and shapes).
        """
        x = self._evidence(evidence)
        state = self._check_state(state, x)
        generator = generator if generator is not None else self.make_generator(None)
        prior = self.resolve_prior(x)
        spread = self.state_keys[2]
        with torch.no_grad():
            assignments = draw_assignments(
                x, state["weights"], state["means"], state[spread], generator
            )
            counts = component_counts(assignments, self.n_components, x.dtype)
            weights = draw_weights(counts, prior.weight_concentration, generator)
            draw = draw_means_covariances if prior.full else draw_means_variances
            means, variances = draw(x, assignments, counts, prior, generator)
        return self._as_state(weights, means, variances, assignments)

    def unnormalized_log_prob(self, state: dict[str, Tensor], *, evidence: Any = None) -> Tensor:
        """Joint log density of (weights, means, variances, assignments, evidence), per chain.

        With covariance="full": Dirichlet(weights) + sum_k [InverseWishart(covariance_k) +
        MultivariateNormal(mean_k | mean_prior, covariance_k / kappa)] + sum_i [log
        weights[z_i] + log N(x_i | mean, covariance of z_i)]. Exact, constants included;
        with `sort_components` the sampled (ordered) posterior is K! times it on the ordered
        region, a constant. Needs the evidence (n, D).
        """
        x = self._evidence(evidence)
        state = self._check_state(state, x)
        prior = self.resolve_prior(x)
        with torch.no_grad():
            return joint_log_prob(
                x,
                state["weights"],
                state["means"],
                state[self.state_keys[2]],
                state["assignments"],
                prior,
            )


def _nonnegative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise DataError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise DataError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise DataError(f"{name} must be finite, got {value!r}")
    return float(value)


def _optional_values(value: Any, name: str, *, positive: bool) -> float | list[float] | None:
    """None, a number, or a list of numbers (JSON-able for get_config)."""
    if value is None:
        return None
    tensor = as_tensor(value, name, dtype=torch.float64)
    if tensor.dim() > 1:
        raise DataError(f"{name} must be a number or one value per feature, got {value!r}")
    if positive and bool((tensor <= 0).any()):
        raise DataError(f"{name} must be positive, got {value!r}")
    scalar = isinstance(value, (int, float)) or tensor.dim() == 0
    return float(tensor.reshape(-1)[0]) if scalar else tensor.tolist()


def _optional_scale_matrix(value: Any) -> float | list[float] | list[list[float]] | None:
    """None, a positive number, positive per-feature values or a symmetric positive-definite
    matrix (JSON-able for get_config)."""
    if value is None:
        return None
    name = "covariance_scale"
    matrix = as_tensor(value, name, dtype=torch.float64)
    if matrix.dim() < 2:
        return _optional_values(value, name, positive=True)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DataError(
            f"{name} must be a number, one value per feature or a square matrix, got "
            f"shape {tuple(matrix.shape)}"
        )
    tolerance = 1e-10 * float(matrix.abs().max().clamp_min(1e-300))
    if not bool(((matrix - matrix.T).abs() <= tolerance).all()):
        raise DataError(f"{name} must be a symmetric matrix")
    if not covariances_valid(matrix.unsqueeze(0), "full"):
        raise DataError(f"{name} must be positive definite")
    return matrix.tolist()


def _data_covariance(x: Tensor) -> Tensor:
    """The data's maximum-likelihood covariance (D, D), or its diagonal (variances clamped
    positive) when it is not positive definite (fewer points than features, collinear
    features, constant data)."""
    covariance = torch.cov(x.T, correction=0).reshape(x.shape[1], x.shape[1])
    if covariances_valid(covariance.unsqueeze(0), "full"):
        return covariance
    return torch.diag_embed(x.var(0, unbiased=False).clamp_min(1e-12))
