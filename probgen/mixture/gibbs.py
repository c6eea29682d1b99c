"""The Bayesian Gaussian mixture's Gibbs interface: prior, chain starts, one blocked step.

`MixtureGibbs` is a mixin of `probgen.mixture.model.GaussianMixture` (it reads the model's
settings through `self`): `resolve_prior`, `initial_state`, `gibbs_step` and
`unnormalized_log_prob` let `probgen.sample_chains(model, "gibbs", evidence=data)` sample the
posterior with the conjugate draws of `probgen.mixture.conjugate`.

Example:
    >>> import torch
    >>> from probgen.mixture.model import GaussianMixture
    >>> x = torch.tensor([[-5.0], [-4.0], [4.0], [5.0]], dtype=torch.float64)
    >>> model = GaussianMixture(2, covariance="diag")
    >>> state = model.initial_state(3, generator=torch.Generator().manual_seed(0), evidence=x)
    >>> state = model.gibbs_step(state, generator=torch.Generator().manual_seed(1), evidence=x)
    >>> sorted(state), tuple(state["means"].shape)
    (['assignments', 'means', 'variances', 'weights'], (3, 2, 1))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from probgen.core.data import as_tensor, check_positive_int
from probgen.core.errors import DataError
from probgen.mixture.conjugate import (
    MixturePrior,
    component_counts,
    draw_assignments,
    draw_means_covariances,
    draw_means_variances,
    draw_weights,
    joint_log_prob,
    sort_state,
)
from probgen.mixture.inference import covariances_valid
from probgen.mixture.priors import data_covariance
from probgen.samplers.gibbs import sample_categorical

STATE_KEYS = ("weights", "means", "variances", "assignments")
FULL_STATE_KEYS = ("weights", "means", "covariances", "assignments")


class MixtureGibbs:
    """Conjugate blocked Gibbs for a `GaussianMixture`'s posterior (a mixin)."""

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
            return 0.2 * data_covariance(x)
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
            variances = data_covariance(x).expand(shape).clone()
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
