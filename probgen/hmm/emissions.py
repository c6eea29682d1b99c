"""Emission families of hidden Markov models, each batched over the hidden states.

An emission is an `nn.Module` holding one set of parameters per state and offering what the HMM
needs: `log_prob(values) -> (..., n_states)` as one tensor op over every step of every
sequence, additive sufficient `statistics(values, weights)` for the EM e-step and `m_step`
from them, data-driven `initialize`, `sample(states)`, `distribution()` (the equivalent
torch distribution batched over states) and `n_parameters()` for AIC/BIC.

The e-step works in the state-major layout (max_length, n_states, n_sequences) of the
time-step loops: `prepare` turns time-major values into what a family needs once per e-step,
`scaled_probs` gives the per-step scaled emission probabilities in that layout and
`posterior_statistics` the sufficient statistics under state-major posteriors. The defaults go
through `log_prob` and `statistics`; families override them where a layout-aware version is
faster (categorical: a gather from a per-symbol table; diagonal Gaussians: one matrix product
with quadratic features for both, over all steps at once, with the arrays stored state-outer:
see `state_outer` and `probgen.hmm.inference.state_major_empty`).

Built-in families: `CategoricalEmission`, `GaussianEmission` (diag, full, spherical, tied
covariances), `GaussianMixtureEmission`, `PoissonEmission`; `TorchDistributionEmission` wraps
any torch distribution batched over states and is fitted by gradient ascent.

Example:
    >>> import torch
    >>> emission = GaussianEmission(n_states=2, n_features=1)
    >>> emission.log_prob(torch.zeros(5, 1)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import biject_to

from probgen.core.errors import DataError
from probgen.hmm.inference import (
    neutral_padding,
    scale_state_major,
    state_major_empty,
    states_by_steps,
    states_by_steps_view,
    summed_step_products,
)

_LOG_2PI = math.log(2 * math.pi)
_LOG2_E = 1.0 / math.log(2.0)
# Largest (n_values * n_components * n_features) block evaluated at once in Gaussian log-densities.
_BLOCK_ELEMENTS = 2**22
_RATE_FLOOR = 1e-8

COVARIANCE_TYPES = ("diag", "full", "spherical", "tied")


class Emission(nn.Module):
    """Base class of emission families (one parameter set per hidden state)."""

    family: ClassVar[str] = ""
    supports_em: ClassVar[bool] = True
    allows_missing: ClassVar[bool] = False
    discrete: ClassVar[bool] = False

    def __init__(self, n_states: int) -> None:
        super().__init__()
        self.n_states = n_states
        self.event_shape = torch.Size()

    # ---- what subclasses implement --------------------------------------------------------
    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        """log p(value | state) for every state: (..., *event) -> (..., n_states)."""
        raise NotImplementedError

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive sufficient statistics of `values` (N, *event) weighted by `weights` (N, S)."""
        raise NotImplementedError

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        """Set the parameters that maximise the expected complete log-likelihood (+ log prior)."""
        raise NotImplementedError

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        """Data-driven starting parameters from the observed values (N, *event)."""
        raise NotImplementedError

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        """The emission as a torch distribution with batch shape (n_states,) (or index's).

        `library` is the module the distribution classes come from: `torch.distributions`, or
        `pyro.distributions` for use inside Pyro programs.
        """
        raise NotImplementedError

    def n_parameters(self) -> int:
        """Number of free parameters (for AIC/BIC)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON constructor arguments of this family (merged into the HMM's config)."""
        return {}

    # ---- the e-step in the state-major layout (defaults; families may override) ----------
    def prepare(self, values_tm: torch.Tensor) -> Any:
        """What `scaled_probs` and `posterior_statistics` need from time-major values.

        Args:
            values_tm: (max_length, n_sequences, *event) observations (padding holds valid
                values).

        Returns:
            By default the values themselves; families precompute here, once per e-step, what
            both methods share.
        """
        return values_tm

    def prepare_key(self) -> torch.Tensor | None:
        """The parameters `prepare` depends on (None: the values alone), for caching its result.

        EM never changes them, so a fit prepares its data once per restart.
        """
        return None

    def state_outer(self, inputs: Any) -> bool:
        """Whether the e-step's arrays for these prepared inputs should be stored state-outer.

        State-outer storage (`probgen.hmm.inference.state_major_empty`) turns sums over all
        steps into single matrix products, at a small cost to the time-step loops; families
        whose `scaled_probs` and `posterior_statistics` are such products choose it.
        """
        return False

    def scaled_probs(
        self, inputs: Any, mask_tm: torch.Tensor | None, *, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step scaled emission probabilities (max_length, n_states, n_sequences).

        Args:
            inputs: what `prepare` returned.
            mask_tm: (max_length, n_sequences) bool, False on padded steps; None when all
                steps are real.
            out: an optional (max_length, n_states, n_sequences) buffer to write them into.

        Returns:
            `(emission_probs, log_offsets)` as from `probgen.hmm.inference.scale_state_major`:
            padded steps are neutral.
        """
        log_probs = self.log_prob(inputs).transpose(1, 2)
        log_probs = log_probs.contiguous() if out is None else out.copy_(log_probs)
        return scale_state_major(log_probs, mask_tm)

    def posterior_statistics(
        self, inputs: Any, posteriors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """`statistics` of every step weighted by state-major posteriors (T, n_states, B).

        The posteriors are zero on padded steps, so those steps add nothing.
        """
        values = inputs.reshape(-1, *self.event_shape)
        # (T * B, S) in the time-major order of `values`: the transpose of a view when the
        # posteriors are stored state-outer, so `weights.t() @ ...` is a plain matrix product.
        weights = states_by_steps(posteriors).t()
        return self.statistics(values, weights)

    # ---- shared defaults -----------------------------------------------------------------
    def log_prior(self) -> torch.Tensor:
        """Log prior density (up to a constant) that the m-step's regularisers maximise."""
        return torch.zeros((), dtype=self._float_dtype(), device=self._device())

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One observation per entry of `states` (long tensor) -> (*states.shape, *event)."""
        flat = states.reshape(-1)
        draws = _sample_with_generator(self.distribution(flat), generator)
        return draws.reshape(*states.shape, *self.event_shape)

    def perturb(self, generator: torch.Generator, scale: float = 0.1) -> None:
        """Random change of the parameters, for restarts of gradient fitting (no-op for EM)."""

    def _device(self) -> torch.device:
        for tensor in self.buffers():
            return tensor.device
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def _float_dtype(self) -> torch.dtype:
        for tensor in list(self.buffers()) + list(self.parameters()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()


def _sample_with_generator(
    distribution: torch.distributions.Distribution, generator: torch.Generator
) -> torch.Tensor:
    """Draw from a torch distribution with randomness taken only from `generator`.

    torch distributions draw from the global generator; a forked RNG state seeded from
    `generator` keeps the draw reproducible without touching the caller's global state.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    device = generator.device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        return distribution.sample()


def _uniform(shape: torch.Size, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, dtype=dtype, generator=generator, device=generator.device)


def _normalize(values: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Rows of `values` normalised; rows that sum to zero keep `fallback`'s row."""
    total = values.sum(-1, keepdim=True)
    normalised = values / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, normalised, fallback)


def kmeans(
    values: torch.Tensor, n_clusters: int, generator: torch.Generator, n_iter: int = 25
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding followed by Lloyd iterations.

    Args:
        values: (N, D) observations without missing entries.
        n_clusters: number of centres.
        generator: randomness for the seeding.
        n_iter: Lloyd iterations.

    Returns:
        `(centres, labels)`: (n_clusters, D) and (N,) long.

    Example:
        >>> x = torch.cat([torch.zeros(10, 1), torch.ones(10, 1) * 5])
        >>> centres, _ = kmeans(x, 2, torch.Generator().manual_seed(0))
        >>> sorted(centres.squeeze(1).tolist())
        [0.0, 5.0]
    """
    n_values = values.shape[0]
    if n_values > 20000:  # a random subset is plenty for starting values
        keep = torch.randperm(n_values, generator=generator, device=generator.device)[:20000]
        values = values[keep.to(values.device)]
        n_values = values.shape[0]
    first = int(torch.randint(n_values, (1,), generator=generator, device=generator.device))
    centres = [values[first]]
    closest = ((values - values[first]) ** 2).sum(-1)
    for _ in range(1, n_clusters):
        total = closest.sum()
        if total <= 0:
            pick = int(torch.randint(n_values, (1,), generator=generator, device=generator.device))
        else:
            weights = (closest / total).to(generator.device, torch.float64)
            pick = int(torch.multinomial(weights, 1, generator=generator))
        centres.append(values[pick])
        closest = torch.minimum(closest, ((values - values[pick]) ** 2).sum(-1))
    centre_tensor = torch.stack(centres)
    labels = torch.zeros(n_values, dtype=torch.long, device=values.device)
    for _ in range(n_iter):
        labels = torch.cdist(values, centre_tensor).argmin(-1)
        counts = torch.bincount(labels, minlength=n_clusters).to(values.dtype)
        sums = torch.zeros_like(centre_tensor).index_add_(0, labels, values)
        updated = torch.where(
            counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centre_tensor
        )
        if torch.allclose(updated, centre_tensor):
            break
        centre_tensor = updated
    return centre_tensor, labels


# ------------------------------------------------------------------------------------------
# Categorical
# ------------------------------------------------------------------------------------------
class CategoricalEmission(Emission):
    """Categorical emissions over `n_symbols` symbols, with Dirichlet pseudocounts.

    Example:
        >>> emission = CategoricalEmission(n_states=2, n_symbols=3)
        >>> emission.log_prob(torch.tensor([0, 2])).exp()
        tensor([[0.3333, 0.3333],
                [0.3333, 0.3333]])
    """

    family = "categorical"
    discrete = True

    def __init__(self, n_states: int, n_symbols: int, pseudocount: float = 0.0) -> None:
        super().__init__(n_states)
        self.n_symbols = n_symbols
        self.pseudocount = float(pseudocount)
        self.register_buffer("probs", torch.full((n_states, n_symbols), 1.0 / n_symbols))

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        return self.probs.log().t()[values.long()]

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        counts = weights.new_zeros(self.n_symbols, self.n_states)
        counts.index_add_(0, values.long(), weights)
        return {"symbol_counts": counts.t()}

    def prepare(self, values_tm: torch.Tensor) -> torch.Tensor:
        return values_tm.long()

    def scaled_probs(
        self, inputs: torch.Tensor, mask_tm: torch.Tensor | None, *, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A gather from the probability table scaled per symbol.

        A step's scale (its largest probability over states) depends only on its symbol, so
        scaling the (n_states, n_symbols) table once replaces the log, max and exp over every
        step; the gather writes the state-major layout directly.
        """
        max_length, n_sequences = inputs.shape
        peak = self.probs.amax(0)  # (n_symbols,); zero for a symbol no state emits
        scaled_table = self.probs / torch.where(peak > 0, peak, torch.ones_like(peak))
        table = scaled_table.expand(max_length, self.n_states, self.n_symbols)
        index = inputs.unsqueeze(1).expand(max_length, self.n_states, n_sequences)
        emission_probs = torch.gather(table, 2, index, out=out)
        log_offsets = peak.log()[inputs]  # -inf marks an impossible step
        if mask_tm is not None:
            neutral_padding(emission_probs, log_offsets, mask_tm)
        return emission_probs, log_offsets

    def posterior_statistics(
        self, inputs: torch.Tensor, posteriors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Symbol counts by one scatter-add of the posteriors, in their layout."""
        max_length, n_states, n_sequences = posteriors.shape
        if self.n_symbols > n_sequences:
            # The (T, n_states, n_symbols) scratch would outgrow the posteriors themselves.
            return super().posterior_statistics(inputs, posteriors)
        counts = posteriors.new_zeros(max_length, n_states, self.n_symbols)
        index = inputs.unsqueeze(1).expand(max_length, n_states, n_sequences)
        counts.scatter_add_(2, index, posteriors)
        return {"symbol_counts": counts.sum(0)}

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        counts = statistics["symbol_counts"] + self.pseudocount
        self.probs = _normalize(counts, self.probs)

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        frequencies = torch.bincount(values.long().reshape(-1), minlength=self.n_symbols)
        frequencies = frequencies.to(self.probs) + 1.0
        noise = torch.rand(
            self.n_states, self.n_symbols, generator=generator, device=generator.device
        ).to(self.probs)
        self.probs = _normalize(frequencies * (0.25 + noise), self.probs)

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cumulative = self.probs.cumsum(-1)[states]
        uniform = _uniform(states.shape, cumulative.dtype, generator).to(cumulative.device)
        draws = torch.searchsorted(cumulative, uniform.unsqueeze(-1)).squeeze(-1)
        return draws.clamp_max(self.n_symbols - 1)

    def log_prior(self) -> torch.Tensor:
        if self.pseudocount == 0:
            return super().log_prior()
        return self.pseudocount * self.probs.log().sum()

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        probs = self.probs if index is None else self.probs[index]
        return library.Categorical(probs=probs, validate_args=False)

    def n_parameters(self) -> int:
        return self.n_states * (self.n_symbols - 1)

    def config(self) -> dict[str, Any]:
        return {"n_symbols": self.n_symbols}


# ------------------------------------------------------------------------------------------
# Gaussian components shared by the Gaussian and Gaussian-mixture families
# ------------------------------------------------------------------------------------------
@dataclass
class QuadraticFeatures:
    """Features [(x - c)^2, x - c, 1 or observed] of Gaussian values (see `quadratic_features`).

    Attributes:
        values: (..., 2 D + 1) when complete, else (..., 3 D).
        complete: whether every entry was observed.
    """

    values: torch.Tensor
    complete: bool


class GaussianComponents(nn.Module):
    """`n_components` Gaussians of one covariance type; the workhorse of Gaussian emissions.

    Covariance storage follows hmmlearn: ``diag`` (K, D) variances, ``spherical`` (K,) variances,
    ``full`` (K, D, D), ``tied`` (D, D) shared by all components. The m-step adds
    `covariance_prior` to the scatter (hmmlearn's `covars_prior`: an inverse-gamma/Wishart prior
    that keeps the variance of a state with constant data positive) and clamps variances at
    `covariance_floor`. Statistics are taken about a fixed `center` (the data mean at
    initialisation) so that float32 sums keep their precision.
    """

    def __init__(
        self,
        n_components: int,
        n_features: int,
        covariance: str,
        covariance_prior: float,
        covariance_floor: float,
    ) -> None:
        super().__init__()
        self.n_components = n_components
        self.n_features = n_features
        self.covariance = covariance
        self.covariance_prior = float(covariance_prior)
        self.covariance_floor = float(covariance_floor)
        self.register_buffer("means", torch.zeros(n_components, n_features))
        self.register_buffer("center", torch.zeros(n_features))
        eye = torch.eye(n_features)
        if covariance == "diag":
            storage = torch.ones(n_components, n_features)
        elif covariance == "spherical":
            storage = torch.ones(n_components)
        elif covariance == "full":
            storage = eye.expand(n_components, n_features, n_features).clone()
        else:
            storage = eye.clone()
        self.register_buffer("covariance_storage", storage)

    # ---- views ---------------------------------------------------------------------------
    def variances(self) -> torch.Tensor:
        """(K, D) per-feature variances (diag and spherical types)."""
        if self.covariance == "spherical":
            return self.covariance_storage[:, None].expand(self.n_components, self.n_features)
        return self.covariance_storage

    def full_covariances(self) -> torch.Tensor:
        """(K, D, D) covariance matrices whatever the storage."""
        if self.covariance in ("diag", "spherical"):
            return torch.diag_embed(self.variances())
        if self.covariance == "tied":
            return self.covariance_storage.expand(
                self.n_components, self.n_features, self.n_features
            )
        return self.covariance_storage

    # ---- densities -------------------------------------------------------------------------
    def log_prob(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """log N(x | component k) for (N, D) values -> (N, K).

        `values` has its missing entries replaced by zero and `observed` (N, D) marks the
        observed entries; missing entries are marginalised (only whole missing rows for full and
        tied covariances).
        """
        n_values = values.shape[0]
        block = max(1, _BLOCK_ELEMENTS // max(1, self.n_components * self.n_features))
        if n_values <= block:
            return self._log_prob_block(values, observed)
        return torch.cat(
            [
                self._log_prob_block(values[i : i + block], observed[i : i + block])
                for i in range(0, n_values, block)
            ]
        )

    def _log_prob_block(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        if self.uses_quadratic_features(values.dtype):
            features = self.quadratic_features(values, observed)
            return features.values @ self.quadratic_weights(features.complete).t()
        observed_f = observed.to(values.dtype)
        if self.covariance in ("diag", "spherical"):
            variances = self.variances()
            log_norm = observed_f @ (variances.log() + _LOG_2PI).t()
            scaled = (values[:, None, :] - self.means[None]) * variances.rsqrt()
            quadratic = (scaled.square_() * observed_f[:, None, :]).sum(-1)
            return -0.5 * (quadratic + log_norm)
        covariances = self.full_covariances()
        cholesky = torch.linalg.cholesky(covariances)
        differences = values[None, :, :] - self.means[:, None, :]  # (K, N, D)
        solved = torch.linalg.solve_triangular(cholesky, differences.transpose(-1, -2), upper=False)
        quadratic = solved.square().sum(-2).t()  # (N, K)
        log_det = 2 * cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        row_observed = observed_f[:, :1]
        log_prob = -0.5 * (quadratic + log_det + self.n_features * _LOG_2PI)
        return log_prob * row_observed

    # ---- quadratic features (diag and spherical covariances in float64) -------------------
    def uses_quadratic_features(self, dtype: torch.dtype) -> bool:
        """Whether log-densities and statistics go through `quadratic_features`.

        The expansion of the square is exact enough in float64 because it is taken about the
        data centre; float32 keeps the direct (x - mean)^2 route.
        """
        return self.covariance in ("diag", "spherical") and dtype == torch.float64

    def quadratic_features(
        self, values: torch.Tensor, observed: torch.Tensor | None
    ) -> QuadraticFeatures:
        """Features of (..., D) values in which every component's log-density is linear.

        With c the centre, m_k = mean_k - c and p_k = 1 / variance_k,
        log N(x | k) = sum_d -p_kd / 2 (x_d - c_d)^2 + p_kd m_kd (x_d - c_d)
        - (p_kd m_kd^2 + log(2 pi variance_kd)) / 2, so with the features
        [(x - c)^2, x - c, 1] (the last one per feature, as the observed mask, when entries are
        missing) all K log-densities are one matrix product with `quadratic_weights`, and the
        same features weighted by the posteriors are the sufficient statistics.

        Args:
            values: (..., D) values, missing entries filled with any finite number.
            observed: (..., D) bool mask of observed entries, or None when all are observed.
        """
        n = self.n_features
        width = 2 * n + 1 if observed is None else 3 * n
        features = values.new_empty(*values.shape[:-1], width)
        # Written into slices of one buffer: no temporaries of the data's size.
        centred = torch.sub(values, self.center, out=features[..., n : 2 * n])
        if observed is None:
            features[..., 2 * n].fill_(1.0)
        else:
            centred.mul_(features[..., 2 * n :].copy_(observed))
        torch.square(centred, out=features[..., :n])
        return QuadraticFeatures(features, complete=observed is None)

    def quadratic_weights(self, complete: bool) -> torch.Tensor:
        """(K, F) weights with `log N(x | k) = quadratic_features(x) @ weights[k]`."""
        variances = self.variances()
        precisions = variances.reciprocal()
        centred_means = self.means - self.center
        constant = centred_means.square() * precisions + variances.log() + _LOG_2PI  # (K, D)
        if complete:
            constant = constant.sum(-1, keepdim=True)
        return torch.cat([-0.5 * precisions, centred_means * precisions, -0.5 * constant], -1)

    def feature_statistics(
        self, features: QuadraticFeatures, posteriors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """`statistics` from time-major features (T, B, F) and state-major weights (T, K, B).

        One matrix product over all steps, (K, T * B) x (T * B, F), gives every weighted sum at
        once (a batched one unless the posteriors are stored state-outer).
        """
        n = self.n_features
        sums = summed_step_products(posteriors, features.values)  # (K, F)
        if features.complete:
            weight = sums[:, 2 * n]
            feature_weight = weight.unsqueeze(1).expand(-1, n).contiguous()
        else:
            weight = posteriors.sum((0, 2))
            feature_weight = sums[:, 2 * n :].contiguous()
        return {
            "weight": weight.contiguous(),
            "feature_weight": feature_weight,
            "sum": sums[:, n : 2 * n].contiguous(),
            "sum_squares": sums[:, :n].contiguous(),
        }

    # ---- EM ------------------------------------------------------------------------------
    def statistics(
        self, values: torch.Tensor, observed: torch.Tensor, weights: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Weighted sums about `center`: (N, D) values, (N, D) observed mask, (N, K) weights."""
        observed_f = observed.to(values.dtype)
        centred = (values - self.center) * observed_f
        stats = {
            "weight": weights.sum(0),
            "feature_weight": weights.t() @ observed_f,
            "sum": weights.t() @ centred,
        }
        if self.covariance in ("diag", "spherical"):
            stats["sum_squares"] = weights.t() @ centred.square()
        else:
            outer = (centred[:, :, None] * centred[:, None, :]).reshape(centred.shape[0], -1)
            stats["sum_outer"] = (weights.t() @ outer).reshape(-1, self.n_features, self.n_features)
        return stats

    def m_step(self, stats: dict[str, torch.Tensor]) -> None:
        weight = stats["feature_weight"]  # (K, D): per-feature weights (missing entries)
        has_data = weight > 0
        centred_means = torch.where(
            has_data,
            stats["sum"] / torch.where(has_data, weight, torch.ones_like(weight)),
            self.means - self.center,
        )
        self.means = centred_means + self.center
        prior = self.covariance_prior
        floor = self.covariance_floor
        if self.covariance in ("diag", "spherical"):
            scatter = (
                stats["sum_squares"]
                - 2 * centred_means * stats["sum"]
                + centred_means.square() * weight
            )
            variances = (prior + scatter) / weight.clamp_min(1e-5)
            if self.covariance == "spherical":
                variances = variances.mean(-1)
                keep = self.covariance_storage
                any_data = has_data.any(-1)
            else:
                keep = self.covariance_storage
                any_data = has_data
            self.covariance_storage = torch.where(any_data, variances, keep).clamp_min(floor)
            return
        total = stats["feature_weight"][:, 0]  # (K,): only whole rows can be missing here
        sums = stats["sum"]
        mean_outer = centred_means[:, :, None] * sums[:, None, :]
        scatter = (
            stats["sum_outer"]
            - mean_outer
            - mean_outer.transpose(-1, -2)
            + total[:, None, None] * centred_means[:, :, None] * centred_means[:, None, :]
        )
        eye = torch.eye(self.n_features, dtype=scatter.dtype, device=scatter.device)
        if self.covariance == "tied":
            covariance = (prior * eye + scatter.sum(0)) / total.sum().clamp_min(1e-5)
            self.covariance_storage = _floor_eigenvalues(covariance, floor)
            return
        covariances = (prior * eye + scatter) / total.clamp_min(1e-5)[:, None, None]
        covariances = torch.where(total[:, None, None] > 0, covariances, self.covariance_storage)
        self.covariance_storage = _floor_eigenvalues(covariances, floor)

    def log_prior(self) -> torch.Tensor:
        """The prior the m-step maximises: -prior/2 tr(Sigma^-1) per component, up to a constant."""
        if self.covariance_prior == 0:
            return self.means.new_zeros(())
        if self.covariance in ("diag", "spherical"):
            return -0.5 * self.covariance_prior * (1.0 / self.variances()).sum()
        covariances = self.covariance_storage
        inverse_trace = torch.linalg.inv(covariances).diagonal(dim1=-2, dim2=-1).sum()
        return -0.5 * self.covariance_prior * inverse_trace

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        """k-means centres as means; the pooled data covariance for every component."""
        data = values.to(self.means)
        self.center = data.mean(0)
        centres, _ = kmeans(data, self.n_components, generator)
        self.means = centres
        variance = data.var(0, unbiased=False) if data.shape[0] > 1 else torch.ones_like(data[0])
        variance = variance + max(self.covariance_floor, 1e-3 * float(variance.mean()))
        variance = variance.clamp_min(max(self.covariance_floor, 1e-6))
        if self.covariance == "diag":
            self.covariance_storage = variance.expand(self.n_components, -1).clone()
        elif self.covariance == "spherical":
            self.covariance_storage = variance.mean().expand(self.n_components).clone()
        else:
            centred = data - data.mean(0)
            covariance = centred.t() @ centred / max(1, data.shape[0])
            covariance = covariance + torch.diag(
                torch.full_like(variance, max(self.covariance_floor, 1e-3 * float(variance.mean())))
            )
            covariance = _floor_eigenvalues(covariance, max(self.covariance_floor, 1e-6))
            if self.covariance == "full":
                covariance = covariance.expand(self.n_components, -1, -1).clone()
            self.covariance_storage = covariance

    def sample(self, components: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One draw from each indexed component: (...,) long -> (..., D)."""
        noise = torch.randn(
            *components.shape,
            self.n_features,
            dtype=self.means.dtype,
            generator=generator,
            device=generator.device,
        ).to(self.means.device)
        if self.covariance in ("diag", "spherical"):
            return self.means[components] + noise * self.variances().sqrt()[components]
        cholesky = torch.linalg.cholesky(self.full_covariances())[components]
        return self.means[components] + (cholesky @ noise.unsqueeze(-1)).squeeze(-1)

    def n_covariance_parameters(self) -> int:
        d = self.n_features
        return {
            "diag": self.n_components * d,
            "spherical": self.n_components,
            "full": self.n_components * d * (d + 1) // 2,
            "tied": d * (d + 1) // 2,
        }[self.covariance]


def _floor_eigenvalues(covariances: torch.Tensor, floor: float) -> torch.Tensor:
    """Raise the smallest eigenvalue to at least `floor` (adds a multiple of the identity)."""
    symmetric = 0.5 * (covariances + covariances.transpose(-1, -2))
    smallest = torch.linalg.eigvalsh(symmetric)[..., 0]
    lift = (floor - smallest).clamp_min(0)
    eye = torch.eye(covariances.shape[-1], dtype=covariances.dtype, device=covariances.device)
    return symmetric + lift[..., None, None] * eye


def _split_missing(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    observed = ~torch.isnan(values)
    return torch.where(observed, values, torch.zeros_like(values)), observed


def _split_missing_if_any(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Like `_split_missing`, with mask None (and no copy) when nothing is missing."""
    missing = torch.isnan(values)
    if not bool(missing.any()):
        return values, None
    return values.masked_fill(missing, 0.0), ~missing


class GaussianEmission(Emission):
    """Gaussian emissions, one mean and covariance per state; NaN entries are marginalised.

    Example:
        >>> emission = GaussianEmission(n_states=3, n_features=2, covariance="full")
        >>> emission.covariances.shape
        torch.Size([3, 2, 2])
    """

    family = "gaussian"
    allows_missing = True

    def __init__(
        self,
        n_states: int,
        n_features: int,
        covariance: str = "diag",
        covariance_prior: float = 1e-2,
        covariance_floor: float = 1e-6,
    ) -> None:
        super().__init__(n_states)
        self.n_features = n_features
        self.event_shape = torch.Size([n_features])
        self.components = GaussianComponents(
            n_states, n_features, covariance, covariance_prior, covariance_floor
        )

    @property
    def covariance(self) -> str:
        return self.components.covariance

    @property
    def means(self) -> torch.Tensor:
        """(n_states, n_features) state means."""
        return self.components.means

    @property
    def covariances(self) -> torch.Tensor:
        """(n_states, n_features, n_features) state covariance matrices."""
        return self.components.full_covariances()

    def check_missing(self, values: torch.Tensor, name: str) -> None:
        """Full and tied covariances marginalise whole missing rows only."""
        if self.covariance in ("full", "tied") and values.is_floating_point():
            missing = torch.isnan(values)
            partial = missing.any(-1) & ~missing.all(-1)
            if partial.any():
                where = partial.nonzero()[0].tolist()
                raise DataError(
                    f"{name}[{where[0]}] step {where[1]} has some but not all features missing; "
                    f"covariance='{self.covariance}' marginalises only whole missing rows "
                    "(use covariance='diag' or 'spherical')"
                )

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        batch = values.shape[:-1]
        filled, observed = _split_missing(values.reshape(-1, self.n_features))
        return self.components.log_prob(filled, observed).reshape(*batch, self.n_states)

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        filled, observed = _split_missing(values)
        return self.components.statistics(filled, observed, weights)

    def prepare(self, values_tm: torch.Tensor) -> Any:
        """Quadratic features for diag/spherical float64 emissions, else the values."""
        if not self.components.uses_quadratic_features(values_tm.dtype):
            return values_tm
        filled, observed = _split_missing_if_any(values_tm)
        return self.components.quadratic_features(filled, observed)

    def prepare_key(self) -> torch.Tensor | None:
        return self.components.center

    def state_outer(self, inputs: Any) -> bool:
        return isinstance(inputs, QuadraticFeatures)

    def scaled_probs(
        self, inputs: Any, mask_tm: torch.Tensor | None, *, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(inputs, QuadraticFeatures):
            return super().scaled_probs(inputs, mask_tm, out=out)
        # (K, F) x (F, T * B) -> (K, T * B): one matrix product writes the state-major layout
        # (stored state-outer) directly. The weights are scaled to give log2-densities, which
        # `scale_state_major` exponentiates with the faster exp2 at no extra pass.
        weights = self.components.quadratic_weights(inputs.complete) * _LOG2_E
        length, n_sequences, width = inputs.values.shape
        features = inputs.values.reshape(length * n_sequences, width)
        if out is None:
            out = state_major_empty((length, self.n_states, n_sequences), features)
        matrix = states_by_steps_view(out)
        if matrix is None:  # a caller's buffer stored otherwise
            out.copy_(
                torch.mm(weights, features.t()).reshape(out.shape[1], length, -1).transpose(0, 1)
            )
        else:
            torch.mm(weights, features.t(), out=matrix)
        return scale_state_major(out, mask_tm, base_two=True)

    def posterior_statistics(
        self, inputs: Any, posteriors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if not isinstance(inputs, QuadraticFeatures):
            return super().posterior_statistics(inputs, posteriors)
        return self.components.feature_statistics(inputs, posteriors)

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        self.components.m_step(statistics)

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        complete = values[~torch.isnan(values).any(-1)]
        if complete.shape[0] < self.n_states:
            raise DataError(
                f"sequences have {complete.shape[0]} complete observations; need at least "
                f"n_states={self.n_states} to initialise Gaussian emissions"
            )
        self.components.initialize(complete, generator)

    def log_prior(self) -> torch.Tensor:
        return self.components.log_prior()

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.components.sample(states, generator)

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        means = self.means if index is None else self.means[index]
        if self.covariance in ("diag", "spherical"):
            variances = self.components.variances()
            variances = variances if index is None else variances[index]
            return library.Independent(
                library.Normal(means, variances.sqrt(), validate_args=False), 1
            )
        covariances = self.covariances if index is None else self.covariances[index]
        return library.MultivariateNormal(means, covariance_matrix=covariances, validate_args=False)

    def n_parameters(self) -> int:
        return self.n_states * self.n_features + self.components.n_covariance_parameters()

    def config(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "covariance": self.covariance,
            "covariance_prior": self.components.covariance_prior,
            "covariance_floor": self.components.covariance_floor,
        }


class GaussianMixtureEmission(Emission):
    """A mixture of `n_mix` Gaussians per state (whole NaN rows are marginalised).

    Example:
        >>> emission = GaussianMixtureEmission(n_states=2, n_features=3, n_mix=4)
        >>> emission.means.shape, emission.weights.shape
        (torch.Size([2, 4, 3]), torch.Size([2, 4]))
    """

    family = "gmm"
    allows_missing = True

    def __init__(
        self,
        n_states: int,
        n_features: int,
        n_mix: int = 2,
        covariance: str = "diag",
        covariance_prior: float = 1e-2,
        covariance_floor: float = 1e-6,
        pseudocount: float = 0.0,
    ) -> None:
        super().__init__(n_states)
        if covariance == "tied":
            raise DataError(
                "covariance='tied' is not available for emission='gmm'; use 'diag', 'full' or "
                "'spherical'"
            )
        self.n_features = n_features
        self.n_mix = n_mix
        self.pseudocount = float(pseudocount)
        self.event_shape = torch.Size([n_features])
        self.components = GaussianComponents(
            n_states * n_mix, n_features, covariance, covariance_prior, covariance_floor
        )
        self.register_buffer("weights", torch.full((n_states, n_mix), 1.0 / n_mix))

    @property
    def covariance(self) -> str:
        return self.components.covariance

    @property
    def means(self) -> torch.Tensor:
        """(n_states, n_mix, n_features) component means."""
        return self.components.means.reshape(self.n_states, self.n_mix, self.n_features)

    @property
    def covariances(self) -> torch.Tensor:
        """(n_states, n_mix, n_features, n_features) component covariances."""
        return self.components.full_covariances().reshape(
            self.n_states, self.n_mix, self.n_features, self.n_features
        )

    def check_missing(self, values: torch.Tensor, name: str) -> None:
        missing = torch.isnan(values)
        partial = missing.any(-1) & ~missing.all(-1)
        if partial.any():
            where = partial.nonzero()[0].tolist()
            raise DataError(
                f"{name}[{where[0]}] step {where[1]} has some but not all features missing; "
                "emission='gmm' marginalises only whole missing rows"
            )

    def _component_log_probs(self, values: torch.Tensor) -> torch.Tensor:
        filled, observed = _split_missing(values)
        per_component = self.components.log_prob(filled, observed)
        return per_component.reshape(-1, self.n_states, self.n_mix) + self.weights.log()

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        batch = values.shape[:-1]
        joint = self._component_log_probs(values.reshape(-1, self.n_features))
        return torch.logsumexp(joint, -1).reshape(*batch, self.n_states)

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        joint = self._component_log_probs(values)
        within_state = torch.softmax(joint, -1)  # p(component | state, x)
        responsibilities = (weights.unsqueeze(-1) * within_state).reshape(values.shape[0], -1)
        filled, observed = _split_missing(values)
        stats = self.components.statistics(filled, observed, responsibilities)
        stats["mixture_counts"] = responsibilities.sum(0).reshape(self.n_states, self.n_mix)
        return stats

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        self.weights = _normalize(statistics["mixture_counts"] + self.pseudocount, self.weights)
        self.components.m_step(statistics)

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        complete = values[~torch.isnan(values).any(-1)]
        if complete.shape[0] < self.n_states * self.n_mix:
            raise DataError(
                f"sequences have {complete.shape[0]} complete observations; need at least "
                f"n_states * n_mix = {self.n_states * self.n_mix} for Gaussian mixture emissions"
            )
        self.components.initialize(complete, generator)
        self.weights = torch.full_like(self.weights, 1.0 / self.n_mix)

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cumulative = self.weights.cumsum(-1)[states]
        uniform = _uniform(states.shape, cumulative.dtype, generator).to(cumulative.device)
        mixture = torch.searchsorted(cumulative, uniform.unsqueeze(-1)).squeeze(-1)
        mixture = mixture.clamp_max(self.n_mix - 1)
        return self.components.sample(states * self.n_mix + mixture, generator)

    def log_prior(self) -> torch.Tensor:
        prior = self.components.log_prior()
        if self.pseudocount:
            prior = prior + self.pseudocount * self.weights.log().sum()
        return prior

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        means = self.means if index is None else self.means[index]
        weights = self.weights if index is None else self.weights[index]
        if self.covariance in ("diag", "spherical"):
            variances = self.components.variances().reshape(
                self.n_states, self.n_mix, self.n_features
            )
            variances = variances if index is None else variances[index]
            components = library.Independent(
                library.Normal(means, variances.sqrt(), validate_args=False), 1
            )
        else:
            covariances = self.covariances if index is None else self.covariances[index]
            components = library.MultivariateNormal(
                means, covariance_matrix=covariances, validate_args=False
            )
        return library.MixtureSameFamily(
            library.Categorical(probs=weights, validate_args=False),
            components,
            validate_args=False,
        )

    def n_parameters(self) -> int:
        return (
            self.n_states * (self.n_mix - 1)
            + self.n_states * self.n_mix * self.n_features
            + self.components.n_covariance_parameters()
        )

    def config(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "n_mix": self.n_mix,
            "covariance": self.covariance,
            "covariance_prior": self.components.covariance_prior,
            "covariance_floor": self.components.covariance_floor,
        }


# ------------------------------------------------------------------------------------------
# Poisson
# ------------------------------------------------------------------------------------------
class PoissonEmission(Emission):
    """Independent Poisson counts per feature, one rate vector per state.

    Example:
        >>> emission = PoissonEmission(n_states=2, n_features=1)
        >>> emission.log_prob(torch.tensor([[0.0]])).exp()
        tensor([[0.3679, 0.3679]])
    """

    family = "poisson"
    discrete = True

    def __init__(self, n_states: int, n_features: int = 1) -> None:
        super().__init__(n_states)
        self.n_features = n_features
        self.event_shape = torch.Size([n_features])
        self.register_buffer("rates", torch.ones(n_states, n_features))

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        rates = self.rates.clamp_min(_RATE_FLOOR)
        values = values.to(rates.dtype)
        constant = torch.lgamma(values + 1).sum(-1, keepdim=True)
        return values @ rates.log().t() - rates.sum(-1) - constant

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"weight": weights.sum(0), "sum": weights.t() @ values.to(weights.dtype)}

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        weight = statistics["weight"][:, None]
        rates = statistics["sum"] / weight.clamp_min(1e-300)
        self.rates = torch.where(weight > 0, rates, self.rates).clamp_min(_RATE_FLOOR)

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        data = values.to(self.rates.dtype)
        centres, _ = kmeans(data, self.n_states, generator)
        self.rates = (centres + 0.1 * data.mean(0).clamp_min(_RATE_FLOOR)).clamp_min(_RATE_FLOOR)

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rates = self.rates.clamp_min(_RATE_FLOOR)[states]
        return torch.poisson(rates.to(generator.device), generator=generator).to(rates.device)

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        rates = self.rates if index is None else self.rates[index]
        return library.Independent(
            library.Poisson(rates.clamp_min(_RATE_FLOOR), validate_args=False), 1
        )

    def n_parameters(self) -> int:
        return self.n_states * self.n_features

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features}


# ------------------------------------------------------------------------------------------
# Any torch distribution batched over states (gradient fitting)
# ------------------------------------------------------------------------------------------
_ALLOWED_DISTRIBUTION_MODULES = ("torch.distributions.", "pyro.distributions.")


class TorchDistributionEmission(Emission):
    """Any torch distribution whose batch shape is (n_states,), fitted by gradient ascent.

    The distribution's parameters (those named in its `arg_constraints`) become unconstrained
    `nn.Parameter`s mapped through `torch.distributions.biject_to`, so any optimiser can fit
    them; the distribution is rebuilt from them on every call.

    Example:
        >>> template = torch.distributions.StudentT(4.0, torch.tensor([-1.0, 1.0]), torch.ones(2))
        >>> emission = TorchDistributionEmission.from_distribution(template)
        >>> emission.log_prob(torch.zeros(3)).shape
        torch.Size([3, 2])
    """

    family = "torch"
    supports_em = False

    def __init__(
        self,
        n_states: int,
        distribution_class: str,
        parameter_shapes: dict[str, list[int]],
        event_shape: list[int],
    ) -> None:
        super().__init__(n_states)
        self.distribution_class = distribution_class
        self.parameter_shapes = {k: list(v) for k, v in parameter_shapes.items()}
        self.event_shape = torch.Size(event_shape)
        self._class = _import_distribution_class(distribution_class)
        self.unconstrained = nn.ParameterDict()
        constraints = self._class.arg_constraints
        for name, shape in self.parameter_shapes.items():
            if name not in constraints:
                raise DataError(f"{distribution_class} has no parameter {name!r}")
            self.unconstrained[name] = nn.Parameter(torch.zeros(shape))

    @classmethod
    def from_distribution(
        cls, template: torch.distributions.Distribution
    ) -> TorchDistributionEmission:
        """Wrap `template` (batch shape (n_states,)); its parameter values are the start."""
        if not isinstance(template, torch.distributions.Distribution):
            raise DataError(
                f"emission must be a family name or a torch distribution, got {template!r}"
            )
        if len(template.batch_shape) != 1:
            raise DataError(
                f"emission distribution must have batch shape (n_states,), got "
                f"{tuple(template.batch_shape)}"
            )
        distribution_class = f"{type(template).__module__}.{type(template).__qualname__}"
        values = _distribution_parameters(template)
        unconstrained = {}
        for name, value in values.items():
            constraint = type(template).arg_constraints[name]
            unconstrained[name] = biject_to(constraint).inv(value.detach())
        emission = cls(
            int(template.batch_shape[0]),
            distribution_class,
            {name: list(value.shape) for name, value in unconstrained.items()},
            list(template.event_shape),
        )
        with torch.no_grad():
            for name, value in unconstrained.items():
                emission.unconstrained[name].copy_(value)
        return emission.to(next(iter(values.values())).dtype)

    def constrained_parameters(self) -> dict[str, torch.Tensor]:
        """The distribution's parameters in their natural (constrained) space."""
        constraints = self._class.arg_constraints
        return {
            name: biject_to(constraints[name])(value) for name, value in self.unconstrained.items()
        }

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        parameters = self.constrained_parameters()
        if index is not None:
            parameters = {
                name: value[index] if value.dim() > 0 else value
                for name, value in parameters.items()
            }
        cls = self._class
        if library is not torch.distributions:
            cls = getattr(library, cls.__name__, cls)
        return cls(**parameters, validate_args=False)

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        event_dims = len(self.event_shape)
        expanded = values.unsqueeze(values.dim() - event_dims)
        return self.distribution().log_prob(expanded)

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError("custom emissions are fitted by gradient, not EM")

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError("custom emissions are fitted by gradient, not EM")

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        """The template's parameters are the starting point; nothing to do."""

    def perturb(self, generator: torch.Generator, scale: float = 0.1) -> None:
        with torch.no_grad():
            for value in self.unconstrained.values():
                noise = torch.randn(value.shape, generator=generator, device=generator.device)
                value.add_(scale * noise.to(value))

    def n_parameters(self) -> int:
        return sum(int(value.numel()) for value in self.unconstrained.values())

    def config(self) -> dict[str, Any]:
        return {
            "emission": {
                "torch_distribution": self.distribution_class,
                "parameter_shapes": self.parameter_shapes,
                "event_shape": list(self.event_shape),
            }
        }


def _distribution_parameters(
    template: torch.distributions.Distribution,
) -> dict[str, torch.Tensor]:
    """The parameters the template was built with (logits preferred over probs)."""
    present = {
        name: getattr(template, name)
        for name in type(template).arg_constraints
        if name in vars(template) and isinstance(vars(template)[name], torch.Tensor)
    }
    if "logits" in present and "probs" in present:
        present.pop("probs")
    if not present:
        raise DataError(f"could not read the parameters of {type(template).__name__}")
    for name in present:
        constraint = type(template).arg_constraints[name]
        if torch.distributions.constraints.is_dependent(constraint):
            raise DataError(
                f"{type(template).__name__}.{name} has a data-dependent constraint; such "
                "distributions cannot be used as custom emissions"
            )
    batch = tuple(template.batch_shape)
    expanded = {}
    for name, value in present.items():
        rank = _event_rank(template, name)
        event = tuple(value.shape[value.dim() - rank :]) if rank else ()
        expanded[name] = value.expand(*batch, *event)
    return expanded


def _event_rank(template: torch.distributions.Distribution, name: str) -> int:
    constraint = type(template).arg_constraints[name]
    return int(getattr(constraint, "event_dim", 0))


def _import_distribution_class(path: str) -> type:
    if not path.startswith(_ALLOWED_DISTRIBUTION_MODULES):
        raise DataError(
            f"emission distribution {path!r} must come from torch.distributions or "
            "pyro.distributions"
        )
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise DataError(f"cannot import emission distribution {path!r}: {error}") from error
    if not (isinstance(cls, type) and issubclass(cls, torch.distributions.Distribution)):
        raise DataError(f"{path!r} is not a torch distribution class")
    return cls


def build_emission(
    emission: str | torch.distributions.Distribution | dict[str, Any],
    n_states: int,
    *,
    n_symbols: int | None,
    n_features: int | None,
    covariance: str,
    n_mix: int,
    pseudocount: float,
    covariance_prior: float,
    covariance_floor: float,
) -> Emission | None:
    """Build the emission module, or None when its size is only known from data."""
    if isinstance(emission, torch.distributions.Distribution):
        built = TorchDistributionEmission.from_distribution(emission)
        if built.n_states != n_states:
            raise DataError(
                f"emission distribution has batch shape ({built.n_states},) but n_states={n_states}"
            )
        return built
    if isinstance(emission, dict):
        return TorchDistributionEmission(
            n_states,
            emission["torch_distribution"],
            emission["parameter_shapes"],
            emission.get("event_shape", []),
        )
    if emission == "categorical":
        if n_symbols is None:
            return None
        return CategoricalEmission(n_states, n_symbols, pseudocount)
    if n_features is None:
        return None
    if emission == "gaussian":
        return GaussianEmission(
            n_states, n_features, covariance, covariance_prior, covariance_floor
        )
    if emission == "gmm":
        return GaussianMixtureEmission(
            n_states, n_features, n_mix, covariance, covariance_prior, covariance_floor, pseudocount
        )
    if emission == "poisson":
        return PoissonEmission(n_states, n_features)
    raise DataError(
        f"emission must be 'categorical', 'gaussian', 'gmm', 'poisson' or a torch distribution "
        f"batched over states; got {emission!r}"
    )
