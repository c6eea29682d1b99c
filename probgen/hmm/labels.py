"""Partially labelled sequences: state evidence for the HMM's forward-backward and EM.

`HMM.fit(sequences, states=...)` takes, beside the observations, a state array per sequence
holding the known state at each step and -1 where it is unknown. Known states are evidence:
the e-step's forward-backward runs with every other state's emission probability set to zero
at those steps, so posteriors, expected counts and the recorded log-likelihood are those of
p(z, x_observed, z_known) (semi-supervised EM; Scheffer & Wrobel's "clamped" forward-backward).
When every step is labelled, the posteriors are the labels themselves and one m-step is the
closed-form maximum-likelihood estimate (counting), which `fit` then returns without
iterating.

Example:
    >>> import torch
    >>> from probgen.hmm import HMM
    >>> x = [torch.tensor([0, 0, 2, 2]), torch.tensor([2, 0])]
    >>> z = [torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0])]
    >>> model = HMM(2, "categorical", n_symbols=3, seed=0).fit(x, states=z)
    >>> model.transition_probs.round(decimals=6).tolist()  # counted: each transition once
    [[0.5, 0.5], [0.5, 0.5]]
    >>> model.emission_probs[0].round(decimals=6).tolist()
    [1.0, 0.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import torch

import probgen.hmm.inference as hmm_inference
from probgen.core.data import Sequences, as_sequences
from probgen.core.errors import DataError
from probgen.fitting.em import EMResult

# Families whose m-step from one-hot state weights is the closed-form maximum-likelihood
# estimate (no latent variable left: mixtures keep their component responsibilities).
CLOSED_FORM_FAMILIES = ("categorical", "gaussian", "poisson", "multinomial")


def check_states(states: Any, data: Sequences, n_states: int) -> torch.Tensor:
    """The `states` argument as a (n_sequences, max_length) long tensor, -1 where unknown.

    Args:
        states: one integer array per sequence (a list), or an array (n_sequences, length),
            holding a state in 0..n_states-1 or -1 (unknown) at each step.
        data: the prepared observations the states belong to.
        n_states: number of hidden states.

    Raises:
        DataError: naming `states`: not integers, out of range, or a length that differs
            from its sequence's.

    Example:
        >>> data = Sequences(torch.zeros(2, 3, dtype=torch.long), torch.tensor([3, 2]))
        >>> check_states([[0, -1, 1], [1, 1]], data, 2).tolist()
        [[0, -1, 1], [1, 1, -1]]
    """
    labels = as_sequences(
        states, "states", event_shape=(), integer=True, min_value=-1, max_value=n_states - 1
    )
    if labels.n_sequences != data.n_sequences:
        raise DataError(
            f"states has {labels.n_sequences} sequences but the data has {data.n_sequences}"
        )
    lengths = labels.lengths.to(data.lengths.device)
    differ = (lengths != data.lengths).nonzero()
    if differ.numel():
        index = int(differ[0, 0])
        raise DataError(
            f"states[{index}] has length {int(lengths[index])} but its sequence has "
            f"{int(data.lengths[index])} steps"
        )
    values = labels.values.long().to(data.lengths.device)
    width = data.max_length
    if values.shape[1] < width:
        values = torch.nn.functional.pad(values, (0, width - values.shape[1]), value=-1)
    values = values[:, :width]
    return values.masked_fill(~data.mask.to(values.device), -1)


def clamp_log_probs(log_probs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Emission log-probabilities with the evidence of known states: -inf for the others.

    Args:
        log_probs: (..., n_states) emission log-densities.
        states: (...) long, a known state or -1.

    Example:
        >>> clamp_log_probs(torch.zeros(2, 2), torch.tensor([1, -1])).tolist()
        [[-inf, 0.0], [0.0, 0.0]]
    """
    index = torch.arange(log_probs.shape[-1], device=log_probs.device)
    known = states.unsqueeze(-1).to(log_probs.device)
    excluded = (known >= 0) & (known != index)
    return log_probs.masked_fill(excluded, float("-inf"))


class HMMLabelsMixin:
    """The labelled e-step and the closed-form fit of `probgen.hmm.model.HMM` (a mixin)."""

    def _e_step_labelled(
        self, batch: Any, emission: Any
    ) -> tuple[hmm_inference.ExpectedStatistics, dict[str, torch.Tensor]]:
        """Forward-backward with state evidence (time-major labels carried by the batch)."""
        max_length, n_sequences = batch.mask_tm.shape
        log_probs = clamp_log_probs(emission.log_prob(batch.values_tm), batch.states_tm)
        expected = hmm_inference.expected_statistics(
            self.start_probs,
            self.transition_probs,
            log_probs,
            None if batch.complete else batch.lengths,
            time_major=True,
            method=hmm_inference.statistics_method(n_sequences, max_length, self.n_states),
        )
        if batch.complete:
            weights = expected.posteriors.reshape(-1, self.n_states)
        else:
            weights = expected.posteriors[batch.mask_tm]
        return expected, emission.statistics(batch.observed_values, weights)

    def _closed_form(self, batch: Any) -> bool:
        """Whether labels on every step make one m-step the maximum-likelihood estimate."""
        if batch.states_tm is None or self.family not in CLOSED_FORM_FAMILIES:
            return False
        if not bool((batch.states_tm[batch.mask_tm] >= 0).all()):
            return False
        values = batch.observed_values
        if values.is_floating_point():
            return not bool(torch.isnan(values).any())
        return not bool((values < 0).any())  # a missing symbol is -1

    def _fit_counting(self, batch: Any) -> EMResult:
        """The closed-form fit of fully labelled sequences: one m-step from the label counts.

        The record holds one iteration: log p(x, z) at the estimate.
        """
        statistics, _ = self.e_step(batch)
        self.m_step(statistics)
        _, log_likelihoods = self.e_step(batch)
        return EMResult(history=[float(log_likelihoods.sum())], converged=True)
