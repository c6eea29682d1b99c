"""Deep belief networks: a stack of RBMs trained greedily, layer by layer (Hinton et al. 2006).

Layer 0 is an RBM on the data (Bernoulli, Gaussian or categorical visible units); each next
layer is a Bernoulli RBM trained on the hidden-unit probabilities of the layer below. The
generative model is the top RBM (an undirected prior over the last two layers) above directed
sigmoid layers: sampling runs Gibbs (or exact sampling) in the top RBM and then draws each
lower layer from its conditional.

`log_prob` of a DBN with more than one layer is a Monte Carlo estimate of the variational
lower bound that uses the recognition conditionals q(h_{l+1} | h_l); its top term uses the top
RBM's partition function. Its kind is LOWER_BOUND when that log Z is exact (the top RBM's
enumerated layer has at most `exact_max_units` units) and ESTIMATE when log Z comes from AIS,
whose error can push the value above log p(x).

Example:
    >>> import torch
    >>> from probgen.boltzmann.dbn import DBN
    >>> data = (torch.rand(200, 10, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    >>> dbn = DBN([10, 8, 4], n_epochs=2, seed=0).fit(data)
    >>> dbn.sample(3, seed=0).shape, dbn.log_prob(data[:5]).shape, dbn.log_prob_kind.value
    (torch.Size([3, 10]), torch.Size([5]), 'lower_bound')
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probgen.boltzmann.common import KeepsSavedDtype, warn_fit_settings
from probgen.boltzmann.rbm import RBM, VISIBLE_TYPES
from probgen.boltzmann.rbm_functions import (
    RBMParams,
    bernoulli,
    free_energy,
    hidden_preactivation,
    sample_visible,
    visible_preactivation,
)
from probgen.core.contract import LogProbKind, Model
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError

_LOG_2PI = float(torch.log(torch.tensor(2 * torch.pi)))


def conditional_log_prob(
    params: RBMParams, visible: torch.Tensor, hidden: torch.Tensor
) -> torch.Tensor:
    """log p(visible | hidden) of one RBM layer, summed over units; shape (...,)."""
    preactivation = visible_preactivation(params, hidden)
    if params.visible == "bernoulli":
        return -F.binary_cross_entropy_with_logits(preactivation, visible, reduction="none").sum(-1)
    if params.visible == "categorical":
        grouped = preactivation.reshape(*preactivation.shape[:-1], -1, params.n_categories)
        log_probabilities = torch.log_softmax(grouped, -1).reshape(preactivation.shape)
        return (log_probabilities * visible).sum(-1)
    variance_term = params.log_variance + _LOG_2PI
    squared = (visible - preactivation) ** 2 * torch.exp(-params.log_variance)
    return -0.5 * (squared + variance_term).sum(-1)


def bernoulli_log_prob(probabilities: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """log q(values) for independent Bernoulli units with the given logits-free probabilities."""
    tiny = torch.finfo(probabilities.dtype).tiny
    return (
        values * torch.log(probabilities.clamp_min(tiny))
        + (1 - values) * torch.log((1 - probabilities).clamp_min(tiny))
    ).sum(-1)


class DBN(KeepsSavedDtype, Model):
    """A deep belief network: RBMs stacked and pretrained greedily.

    Args:
        layer_sizes: ``[n_visible, n_hidden_1, ..., n_hidden_L]`` (at least two entries).
        visible: visible unit type of the bottom RBM (see `RBM`).
        n_categories: states per categorical visible variable.
        top_gibbs_steps: Gibbs sweeps in the top RBM when sampling (when it is too large for
            exact sampling).
        elbo_samples: Monte Carlo samples per row in `log_prob` (depth > 1).
        elbo_seed: seed of those samples, so `log_prob` is repeatable.
        seed: seed of training.
        **rbm_options: training options passed to every layer's `RBM` (learning_rate,
            n_epochs, batch_size, method, cd_steps, momentum, weight_decay, ...).

    Example:
        >>> dbn = DBN([6, 4, 3], n_epochs=1)
        >>> [layer.n_hidden for layer in dbn.layers]
        [4, 3]
    """

    fitted_attributes = ("history_", "n_iter_")

    def __init__(
        self,
        layer_sizes: list[int] | tuple[int, ...],
        visible: str = "bernoulli",
        *,
        n_categories: int | None = None,
        top_gibbs_steps: int = 1000,
        elbo_samples: int = 10,
        elbo_seed: int = 0,
        seed: int | None = None,
        **rbm_options: Any,
    ) -> None:
        super().__init__()
        if not isinstance(layer_sizes, (list, tuple)) or len(layer_sizes) < 2:
            raise DataError(
                f"layer_sizes must list at least [n_visible, n_hidden], got {layer_sizes!r}"
            )
        self.layer_sizes = [
            check_positive_int(size, f"layer_sizes[{i}]") for i, size in enumerate(layer_sizes)
        ]
        self.visible = check_choice(visible, "visible", VISIBLE_TYPES)
        self.n_categories = n_categories
        self.top_gibbs_steps = check_positive_int(top_gibbs_steps, "top_gibbs_steps")
        self.elbo_samples = check_positive_int(elbo_samples, "elbo_samples")
        self.elbo_seed = int(elbo_seed)
        self.seed = seed
        for reserved in ("n_visible", "n_hidden", "visible", "seed", "monitor"):
            if reserved in rbm_options:
                raise DataError(f"{reserved} is set by DBN itself, not through rbm_options")
        self.rbm_options = dict(rbm_options)
        layers = [
            RBM(
                self.layer_sizes[0],
                self.layer_sizes[1],
                visible,
                n_categories=n_categories,
                **self.rbm_options,
            )
        ]
        for below, above in zip(self.layer_sizes[1:-1], self.layer_sizes[2:]):
            layers.append(
                RBM(
                    below, above, "bernoulli", monitor=("reconstruction_error",), **self.rbm_options
                )
            )
        self.layers = nn.ModuleList(layers)
        self.event_shape = layers[0].event_shape
        self.log_prob_kind = layers[0].log_prob_kind if len(layers) == 1 else self._deep_kind()

    def _deep_kind(self) -> LogProbKind:
        """LOWER_BOUND with the top layer's exact log Z; with AIS's estimate of it the value
        carries AIS's error (either sign), so it is only an ESTIMATE."""
        exact_top = self.layers[-1].log_prob_kind == LogProbKind.EXACT
        return LogProbKind.LOWER_BOUND if exact_top else LogProbKind.ESTIMATE

    def get_config(self) -> dict[str, Any]:
        # The derived config skips **rbm_options; they are constructor arguments too.
        return {**super().get_config(), **self.rbm_options}

    def get_fitted_state(self) -> dict[str, Any]:
        state = super().get_fitted_state()
        state["layer_fitted"] = [bool(layer.fitted_) for layer in self.layers]
        return state

    def set_fitted_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for layer, fitted in zip(self.layers, state.pop("layer_fitted", [])):
            layer.fitted_ = fitted
        super().set_fitted_state(state)

    def fit(
        self,
        data: Any,
        *,
        n_epochs: int | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> DBN:
        """Greedy layer-wise pretraining: each RBM learns the hidden probabilities below it.

        `history_` holds every layer's per-epoch records, each with a ``"layer"`` key.
        `n_epochs`, `seed` and `progress` are deprecated here (set them in the constructor:
        `n_epochs` and `progress` go to every layer); given, they warn and override the
        constructor's values for this call.
        """
        warn_fit_settings("DBN", stacklevel=3, n_epochs=n_epochs, seed=seed, progress=progress)
        x, _ = self.layers[0]._check_visible(data, "data")
        generator = self.make_generator(self.seed if seed is None else seed)
        self.history_: list[dict[str, Any]] = []
        with torch.no_grad():
            features = x
            for index, layer in enumerate(self.layers):
                epochs = (
                    layer.n_epochs if n_epochs is None else check_positive_int(n_epochs, "n_epochs")
                )
                show = layer.progress if progress is None else bool(progress)
                layer._fit_tensor(
                    features, validation=None, n_epochs=epochs, generator=generator, progress=show
                )
                self.history_ += [{"layer": index, **record} for record in layer.history_]
                features = torch.sigmoid(hidden_preactivation(layer.params(), features))
        self.n_iter_ = len(self.layers)
        self._mark_fitted()
        return self

    def transform(self, x: Any) -> torch.Tensor:
        """Top-layer hidden probabilities from a deterministic upward pass."""
        self.check_fitted("transform")
        flat, batch_shape = self.layers[0]._check_visible(x)
        with torch.no_grad():
            for layer in self.layers:
                flat = torch.sigmoid(hidden_preactivation(layer.params(), flat))
        return flat.reshape(*batch_shape, -1)

    def sample(
        self, n: int, *, seed: int | torch.Generator | None = None, gibbs_steps: int | None = None
    ) -> torch.Tensor:
        """Draw n visible vectors: sample the top RBM, then each layer below given the one above."""
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        top = self.layers[-1]
        steps = gibbs_steps
        if steps is None and top._enumerated_units() > min(top.exact_max_units, 22):
            steps = self.top_gibbs_steps
        with torch.no_grad():
            state = top.sample(n, seed=generator, gibbs_steps=steps).reshape(n, -1)
            for layer in reversed(self.layers[:-1]):
                hidden = state
                params = layer.params()
                state = sample_visible(params, visible_preactivation(params, hidden), generator)
        return state.reshape(n, *self.event_shape)

    def log_prob(self, x: Any) -> torch.Tensor:
        """log p(x) for one layer; for deeper DBNs a Monte Carlo variational lower bound (an
        estimate of it when the top layer's log Z comes from AIS: see `log_prob_kind`)."""
        self.check_fitted("log_prob")
        if len(self.layers) == 1:
            return self.layers[0].log_prob(x)
        flat, batch_shape = self.layers[0]._check_visible(x)
        generator = self.make_generator(self.elbo_seed)
        top = self.layers[-1]
        method = "exact" if top.log_prob_kind == LogProbKind.EXACT else "ais"
        log_z_top = top.log_partition(method).estimate
        with torch.no_grad():
            below = flat.double().repeat(self.elbo_samples, 1)
            bound = torch.zeros(below.shape[0], dtype=torch.float64, device=below.device)
            for layer in self.layers[:-1]:
                params = layer.params(torch.float64)
                probabilities = torch.sigmoid(hidden_preactivation(params, below))
                hidden = bernoulli(probabilities, generator)
                bound += conditional_log_prob(params, below, hidden)
                bound -= bernoulli_log_prob(probabilities, hidden)
                below = hidden
            top_params = top.params(torch.float64)
            bound += -free_energy(top_params, below) - log_z_top
            bound = bound.reshape(self.elbo_samples, -1).mean(0)
        return bound.to(self.dtype).reshape(batch_shape)
