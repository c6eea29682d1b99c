"""One RBM `fit` call's moving parts: negative-phase chains, momentum, the batch update.

CD-k restarts the chains at the data; PCD-k keeps hidden chain states across updates
(Tieleman 2008); with several temperatures the persistent chains run parallel tempering on
the path from the base-rate model to the RBM and swap neighbours after every sweep.

The code works on the RBM's parameter record (`RBMParams`, whose tensors it updates in
place), the base-rate model and a `TrainingSettings` record, never on the `RBM` class itself.

Example:
    >>> import torch
    >>> from probgen.boltzmann.rbm_functions import BaseRates, RBMParams
    >>> params = RBMParams("bernoulli", 1, torch.zeros(4, 2), torch.zeros(4), torch.zeros(2), None)
    >>> settings = TrainingSettings(method="pcd", n_temperatures=3)
    >>> state = TrainingState(params, BaseRates(torch.zeros(4), None), settings, 5,
    ...                       torch.Generator().manual_seed(0))
    >>> state.update((torch.arange(20).reshape(5, 4) % 3 == 0).float(), 0.1)
    >>> bool(params.weights.abs().sum() > 0)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from probgen.boltzmann.ais import temperature_schedule
from probgen.boltzmann.rbm_functions import (
    BaseRates,
    RBMParams,
    bernoulli,
    hidden_preactivation,
    sample_base,
    sample_visible,
    tempered_gibbs_step,
    tempered_log_unnormalized,
    visible_features,
    visible_preactivation,
)
from probgen.boltzmann.sharded import summed

# Gaussian visible variances are kept inside [exp(-9), exp(9)] so a bad step cannot make the
# conditional densities degenerate.
LOG_VARIANCE_BOUNDS = (-9.0, 9.0)


@dataclass(frozen=True)
class TrainingSettings:
    """The RBM's training options that one `fit` call's updates read (see `RBM`)."""

    method: str = "pcd"
    cd_steps: int = 1
    n_temperatures: int = 1
    momentum: float = 0.0
    weight_decay: float = 0.0
    learn_variance: bool = True
    variance_learning_rate_scale: float = 0.1


def parameter_list(params: RBMParams) -> list[torch.Tensor]:
    """The trained tensors in update order: weights, visible and hidden biases, log-variances."""
    tensors = [params.weights, params.visible_bias, params.hidden_bias]
    if params.log_variance is not None:
        tensors.append(params.log_variance)
    return tensors


def swap_neighbours(
    params: RBMParams,
    base: BaseRates,
    chains: torch.Tensor,
    betas: list[float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | int, int]:
    """Parallel-tempering swaps of neighbouring chains, even pairs then odd pairs.

    Row r of chain i (at inverse temperature ``betas[i]``) trades states with row r of chain
    i + 1 with the Metropolis probability ``min(1, p_i(v_j) p_j(v_i) / (p_i(v_i) p_j(v_j)))``
    of the tempered path (`tempered_log_unnormalized`). `chains` (n_temperatures, rows, width)
    is updated in place.

    Returns:
        (chains, swaps accepted (a 0-dim tensor), swaps attempted), counted over rows and
        pairs.
    """
    accepted = attempted = 0
    for offset in (0, 1):
        for i in range(offset, len(betas) - 1, 2):
            beta_i, beta_j = betas[i], betas[i + 1]
            v_i, v_j = chains[i], chains[i + 1]
            log_accept = (
                tempered_log_unnormalized(params, base, v_j, beta_i)
                + tempered_log_unnormalized(params, base, v_i, beta_j)
                - tempered_log_unnormalized(params, base, v_i, beta_i)
                - tempered_log_unnormalized(params, base, v_j, beta_j)
            )
            uniform = torch.rand(
                log_accept.shape,
                generator=generator,
                dtype=log_accept.dtype,
                device=log_accept.device,
            )
            accept = (torch.log(uniform) < log_accept)[:, None]
            chains[i], chains[i + 1] = (
                torch.where(accept, v_j, v_i),
                torch.where(accept, v_i, v_j),
            )
            accepted = accept.sum() + accepted  # a tensor: no device sync per update
            attempted += accept.shape[0]
    return chains, accepted, attempted


class _FusedViews(NamedTuple):
    """Views of the fused PCD-1 buffers for one batch size (see `TrainingState`)."""

    chains: torch.Tensor
    stacked: torch.Tensor
    stacked_t: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    visible_probability: torch.Tensor
    hidden_probability: torch.Tensor
    negative_hidden: torch.Tensor
    signs: torch.Tensor
    weights_t: torch.Tensor


class TrainingState:
    """Negative-phase chains, momentum buffers and the per-batch update of one `fit` call.

    Args:
        params: the RBM's parameters; `update` changes these tensors in place.
        base: the base-rate model (start of the chains and of the tempering path).
        settings: the training options.
        batch_size: rows per update (and persistent chains).
        generator: source of randomness.
        sharded: under `torch.distributed`, each rank passes its rows of a global batch to
            `update`: the data term of the gradient is summed over the ranks
            (`probgen.boltzmann.sharded`); the persistent chains, the same on every rank,
            give the model term.
    """

    def __init__(
        self,
        params: RBMParams,
        base: BaseRates,
        settings: TrainingSettings,
        batch_size: int,
        generator: torch.Generator,
        *,
        sharded: bool = False,
    ) -> None:
        self.params = params
        self.sharded = sharded
        # The current update's batch size and, in sharded CD, this rank's rows in it.
        self._batch = batch_size
        self._batch_rows: torch.Tensor | None = None
        self.base = base
        self.settings = settings
        self.generator = generator
        self.persistent = settings.method == "pcd"
        self.chain_hidden: torch.Tensor | None = None
        self.tempered_chains: torch.Tensor | None = None
        if self.persistent and settings.n_temperatures > 1:
            self.betas = temperature_schedule(settings.n_temperatures, "linear").flip(0).tolist()
            start = sample_base(params, base, settings.n_temperatures * batch_size, generator)
            self.tempered_chains = start.reshape(settings.n_temperatures, batch_size, -1)
            self.swap_attempts = 0
            self.swap_accepts = 0
        elif self.persistent:
            start = sample_base(params, base, batch_size, generator)
            self.chain_hidden = bernoulli(
                torch.sigmoid(hidden_preactivation(params, start)), generator=generator
            )
        self.velocities: list[torch.Tensor] | None = None
        if settings.momentum > 0:
            self.velocities = [torch.zeros_like(t) for t in parameter_list(params)]
        self.fused = (
            not sharded
            and self.chain_hidden is not None
            and settings.cd_steps == 1
            and params.visible == "bernoulli"
            and settings.momentum == 0
            and settings.weight_decay == 0
        )
        if self.fused:
            self._allocate_fused_buffers(batch_size)

    def _allocate_fused_buffers(self, batch_size: int) -> None:
        """Working memory of the fused PCD-1 update, allocated once per `fit`.

        Every batch writes into the same buffers (a short last batch into their leading rows)
        through views made once per batch size, so an update allocates nothing; the
        parameter tensors are held directly because the update changes them in place, and
        the persistent chains are overwritten in place too.
        """
        params = self.params
        self._weights, self._visible_bias, self._hidden_bias = (
            params.weights,
            params.visible_bias,
            params.hidden_bias,
        )
        like = params.weights
        n_visible_units, n_hidden = like.shape
        # Rows [0, batch) hold the positive (data) batch, rows [batch, 2 batch) the negative one.
        self._stacked = like.new_empty(2 * batch_size, n_visible_units)
        self._hidden_probability = like.new_empty(2 * batch_size, n_hidden)
        self._visible_probability = like.new_empty(batch_size, n_visible_units)
        self._hidden_sum = like.new_empty(n_hidden)
        self._visible_sum = like.new_empty(n_visible_units)
        self._fused_views: dict[int, _FusedViews] = {}

    def _views_for(self, batch: int) -> _FusedViews:
        views = self._fused_views.get(batch)
        if views is None:
            stacked = self._stacked[: 2 * batch]
            hidden = self._hidden_probability[: 2 * batch]
            signs = stacked.new_ones(2 * batch)
            signs[batch:] = -1
            views = _FusedViews(
                chains=self.chain_hidden[:batch],
                stacked=stacked,
                stacked_t=stacked.T,
                positive=stacked[:batch],
                negative=stacked[batch:],
                visible_probability=self._visible_probability[:batch],
                hidden_probability=hidden,
                negative_hidden=hidden[batch:],
                signs=signs,
                weights_t=self._weights.T,
            )
            self._fused_views[batch] = views
        return views

    def take_swap_acceptance(self) -> float | None:
        """Share of tempering swaps accepted since the last call (None without tempering)."""
        if self.tempered_chains is None or self.swap_attempts == 0:
            return None
        rate = float(self.swap_accepts) / self.swap_attempts
        self.swap_accepts, self.swap_attempts = 0, 0
        return rate

    def _negative_from_hidden(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k Gibbs sweeps starting from hidden states; returns (v_negative, p(h | v_negative))."""
        settings, params = self.settings, self.params
        weights_t = params.weights.T
        for step in range(settings.cd_steps):
            if params.visible == "bernoulli":
                visible = self._draw(
                    bernoulli, torch.sigmoid(torch.addmm(params.visible_bias, hidden, weights_t))
                )
            else:
                visible = self._draw(
                    lambda values, generator: sample_visible(params, values, generator),
                    visible_preactivation(params, hidden),
                )
            hidden_probability = torch.sigmoid(
                torch.addmm(params.hidden_bias, visible_features(params, visible), params.weights)
            )
            if step + 1 < settings.cd_steps:
                hidden = self._draw(bernoulli, hidden_probability)
        return visible, hidden_probability

    def _draw(
        self,
        sample: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
        values: torch.Tensor,
    ) -> torch.Tensor:
        """``sample(values, generator)``, one draw per row of `values`.

        In sharded CD (`update`'s `rows`), the draw is made for the whole batch, the other
        ranks' rows padded with zeros, and this rank's rows are kept: the generator then
        gives each row the numbers a single process gives it, and stays in step on every rank.
        """
        rows = self._batch_rows
        if rows is None:
            return sample(values, self.generator)
        whole = values.new_zeros((self._batch, *values.shape[1:]))
        whole[rows] = values
        return sample(whole, self.generator)[rows]

    def _tempered_negative(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One sweep of every tempered chain, neighbour swaps, and the beta = 1 statistics."""
        settings, generator = self.settings, self.generator
        params, base = self.params, self.base
        chains = self.tempered_chains
        for _ in range(settings.cd_steps):
            chains = torch.stack(
                [
                    tempered_gibbs_step(params, base, chains[i], beta, generator)
                    for i, beta in enumerate(self.betas)
                ]
            )
        chains, accepted, attempted = swap_neighbours(params, base, chains, self.betas, generator)
        self.swap_accepts += accepted
        self.swap_attempts += attempted
        self.tempered_chains = chains
        visible = chains[0]
        return visible, torch.sigmoid(hidden_preactivation(params, visible))

    def _fused_pcd1_update(self, positive: torch.Tensor, learning_rate: float) -> None:
        """PCD-1 for binary visible units with plain SGD, in as few kernels as possible.

        The negative visible states depend only on the persistent hidden chains, so the
        positive and negative batches share one hidden matrix product and one gradient
        product (on the stacked batch, with the negative half's hidden probabilities negated).
        Draws go straight into preallocated buffers; the generator is consumed in the same
        order and amounts as by `bernoulli`, so seeded fits are unchanged.
        """
        generator = self.generator
        weights, visible_bias, hidden_bias = self._weights, self._visible_bias, self._hidden_bias
        batch = positive.shape[0]
        views = self._views_for(batch)
        views.positive.copy_(positive)
        torch.addmm(visible_bias, views.chains, views.weights_t, out=views.visible_probability)
        views.negative.uniform_(generator=generator).lt_(views.visible_probability.sigmoid_())
        hidden = torch.addmm(hidden_bias, views.stacked, weights, out=views.hidden_probability)
        hidden.sigmoid_()
        views.chains.uniform_(generator=generator).lt_(views.negative_hidden)
        views.negative_hidden.neg_()
        step = learning_rate / batch
        weights.addmm_(views.stacked_t, hidden, alpha=step)
        hidden_bias.add_(torch.sum(hidden, 0, out=self._hidden_sum), alpha=step)
        visible_bias.add_(torch.mv(views.stacked_t, views.signs, out=self._visible_sum), alpha=step)

    def update(
        self,
        positive: torch.Tensor,
        learning_rate: float,
        batch: int | None = None,
        rows: torch.Tensor | None = None,
    ) -> None:
        """One gradient step on the batch `positive` (rows of visible units).

        Sharded training passes this rank's part of a batch: `batch` is the number of rows of
        the whole batch, `rows` where this rank's rows sit in it (CD draws its chains' noise
        for the whole batch and keeps those rows). Default: `positive` is the whole batch.
        """
        if self.fused:
            self._fused_pcd1_update(positive, learning_rate)
            return
        settings, params = self.settings, self.params
        batch = positive.shape[0] if batch is None else batch
        self._batch, self._batch_rows = batch, None if self.persistent else rows
        positive_features = visible_features(params, positive)
        hidden_positive = torch.sigmoid(
            torch.addmm(params.hidden_bias, positive_features, params.weights)
        )
        if self.tempered_chains is not None:
            negative, hidden_negative = self._tempered_negative()
            negative = negative[:batch]
            hidden_negative = hidden_negative[:batch]
        else:
            if self.persistent:
                start = self.chain_hidden[:batch]
            else:
                start = self._draw(bernoulli, hidden_positive)
            negative, hidden_negative = self._negative_from_hidden(start)
            if self.persistent:
                new_hidden = bernoulli(hidden_negative, generator=self.generator)
                if batch == self.chain_hidden.shape[0]:
                    self.chain_hidden = new_hidden
                else:
                    self.chain_hidden[:batch] = new_hidden
        step = learning_rate / batch
        if self.sharded:
            gradients = self._sharded_gradients(
                positive, positive_features, hidden_positive, negative, hidden_negative
            )
            self._apply(gradients, step, batch)
            return
        simple = (
            self.velocities is None
            and settings.weight_decay == 0
            and params.log_variance is None
        )
        if simple:
            # The common case in as few kernels as possible: it dominates training time.
            params.weights.addmm_(positive.T, hidden_positive, alpha=step)
            params.weights.addmm_(negative.T, hidden_negative, alpha=-step)
            params.hidden_bias.add_(hidden_positive.sum(0) - hidden_negative.sum(0), alpha=step)
            params.visible_bias.add_(positive.sum(0) - negative.sum(0), alpha=step)
            return
        negative_features = visible_features(params, negative)
        gradients = [
            positive_features.T @ hidden_positive - negative_features.T @ hidden_negative,
            (positive_features - negative_features).sum(0),
            hidden_positive.sum(0) - hidden_negative.sum(0),
        ]
        if params.log_variance is not None:
            gradients[1] = ((positive - negative).sum(0)) * torch.exp(-params.log_variance)
            gradients.append(
                self._log_variance_statistic(params, positive, hidden_positive)
                - self._log_variance_statistic(params, negative, hidden_negative)
            )
        self._apply(gradients, step, batch)

    def _sharded_gradients(
        self,
        positive: torch.Tensor,
        positive_features: torch.Tensor,
        hidden_positive: torch.Tensor,
        negative: torch.Tensor,
        hidden_negative: torch.Tensor,
    ) -> list[torch.Tensor]:
        """The gradient sums of `update` over all ranks' rows of the batch.

        PCD: each rank sums its rows' data term and one collective adds the sums up; the model
        term comes from the persistent chains, the same on every rank. CD: the chains start
        at each rank's rows, so the data-minus-model sums are added up.
        """
        params = self.params
        gaussian = params.log_variance is not None

        def sums(visible: torch.Tensor, features: torch.Tensor, hidden: torch.Tensor) -> list:
            terms = [features.T @ hidden, (visible if gaussian else features).sum(0), hidden.sum(0)]
            if gaussian:
                terms.append(self._log_variance_statistic(params, visible, hidden))
            return terms

        data_terms = sums(positive, positive_features, hidden_positive)
        model_terms = sums(negative, visible_features(params, negative), hidden_negative)
        if self.persistent:
            summed(data_terms)
            gradients = [data - model for data, model in zip(data_terms, model_terms)]
        else:
            gradients = summed([data - model for data, model in zip(data_terms, model_terms)])
        if gaussian:
            gradients[1] = gradients[1] * torch.exp(-params.log_variance)
        return gradients

    def _apply(self, gradients: list[torch.Tensor], step: float, batch: int) -> None:
        """Weight decay, momentum and the step along the summed `gradients` of a batch."""
        settings, params = self.settings, self.params
        if settings.weight_decay > 0:
            gradients[0] = gradients[0] - batch * settings.weight_decay * params.weights
        variance_step = step * settings.variance_learning_rate_scale * settings.learn_variance
        scales = [step, step, step, variance_step]
        for index, (tensor, gradient) in enumerate(zip(parameter_list(params), gradients)):
            if self.velocities is not None:
                velocity = self.velocities[index]
                velocity.mul_(settings.momentum).add_(gradient, alpha=scales[index])
                tensor.add_(velocity)
            else:
                tensor.add_(gradient, alpha=scales[index])
        if params.log_variance is not None:
            params.log_variance.clamp_(*LOG_VARIANCE_BOUNDS)

    @staticmethod
    def _log_variance_statistic(
        params: RBMParams, visible: torch.Tensor, hidden: torch.Tensor
    ) -> torch.Tensor:
        """Summed ``-dE/d log s^2`` over the batch, per visible unit."""
        inverse_variance = torch.exp(-params.log_variance)
        quadratic = (visible - params.visible_bias) ** 2 * inverse_variance / 2
        interaction = visible * inverse_variance * (hidden @ params.weights.T)
        return (quadratic - interaction).sum(0)
