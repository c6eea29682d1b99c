"""Hidden semi-Markov model inference as pure, batched tensor functions.

A segment of state s lasting d steps has probability  p_s(d)  times its emissions; segments
follow each other through the transition matrix, the first starts in the start distribution,
and the last segment of a sequence is right-censored: it is only known to last at least until
the sequence ends, so it contributes the survival P(duration >= d) instead of p_s(d). The
process observed over T steps then has probabilities that sum to one over everything it can
emit in T steps, as an HMM's, and an HSMM whose durations are geometric is that HMM.

`segment_forward` is the forward recursion over segment ends in log space, O(T D S) per
sequence (D = max_duration), batched over sequences of different lengths: each sequence's
value is read at its own end. With ``maximum=True`` it is the max-product (Viterbi) recursion.
Everything else comes from differentiating it (Eisner, 2016, "Inside-outside and
forward-backward algorithms are just backprop"): the gradient of log p(x) with respect to an
additive log-potential is the expected number of times it is used, so the gradients with
respect to the start, transition, duration, survival and per-step emission log-probabilities
are the e-step's expected counts and state posteriors, and the gradient of the max-product
score is the indicator of the best segmentation.

Example:
    >>> import torch
    >>> log_start = torch.tensor([0.5, 0.5]).log()
    >>> log_transition = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).log()
    >>> log_durations = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).log()
    >>> log_survival = torch.tensor([[1.0, 0.5], [1.0, 0.5]]).log()
    >>> emissions = torch.zeros(1, 3, 2)
    >>> log_p = segment_forward(log_start, log_transition, log_durations, log_survival,
    ...                         emissions, torch.tensor([3]))
    >>> log_p.exp().round(decimals=5).tolist()  # no information in the emissions
    [1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _log_sum_exp(values: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp whose gradient is zero, not NaN, where every entry is -inf."""
    top = values.detach().amax(dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = (values - top).exp().sum(dim)
    positive = total > 0
    safe = torch.where(positive, total, torch.ones_like(total))
    return torch.where(positive, safe.log() + top.squeeze(dim), torch.full_like(total, -torch.inf))


def _reduce(values: torch.Tensor, dim: int, maximum: bool) -> torch.Tensor:
    return values.max(dim).values if maximum else _log_sum_exp(values, dim)


def segment_forward(
    log_start: torch.Tensor,
    log_transition: torch.Tensor,
    log_durations: torch.Tensor,
    log_survival: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor,
    *,
    maximum: bool = False,
) -> torch.Tensor:
    """log p(x) (or the best segmentation's log p(x, segments)) of each sequence.

    Args:
        log_start: (n_states,).
        log_transition: (n_states, n_states) between segments.
        log_durations: (n_states, max_duration) log p_s(d), d = 1..max_duration.
        log_survival: (n_states, max_duration) log P(duration >= d) of the censored last
            segment.
        emission_log_probs: (n_sequences, max_length, n_states).
        lengths: (n_sequences,) long.
        maximum: max-product instead of sum-product.

    Returns:
        (n_sequences,).
    """
    n_sequences, max_length, n_states = emission_log_probs.shape
    max_duration = log_durations.shape[1]
    durations_t = log_durations.t()  # (D, S)
    survival_t = log_survival.t()
    lengths = lengths.to(emission_log_probs.device)
    wanted = set(lengths.tolist())
    # starts[-d] = log p(x_<t, a segment starts at t - d + 1 ... ) kept for the last D steps.
    starts = [log_start.expand(n_sequences, n_states)]
    segment_sums = emission_log_probs.new_full((n_sequences, 0, n_states), 0.0)
    final = emission_log_probs.new_full((n_sequences,), -torch.inf)
    for t in range(1, max_length + 1):
        step = emission_log_probs[:, t - 1].unsqueeze(1)
        # Emissions of the segments ending at t that last 1, 2, ..., min(D, t) steps.
        segment_sums = torch.cat([step, segment_sums[:, : max_duration - 1] + step], 1)
        reach = segment_sums.shape[1]
        previous = torch.stack(starts[::-1], 1)  # (B, reach, S): starts at t - 1, t - 2, ...
        base = previous + segment_sums
        if t in wanted:
            censored = _reduce(_reduce(base + survival_t[:reach], 1, maximum), 1, maximum)
            final = torch.where(lengths == t, censored, final)
        if t == max_length:
            break
        ends = _reduce(base + durations_t[:reach], 1, maximum)  # (B, S)
        starts.append(_reduce(ends.unsqueeze(-1) + log_transition, 1, maximum))
        if len(starts) > max_duration:
            starts.pop(0)
    return final


@dataclass
class SegmentStatistics:
    """Expected counts of an HSMM e-step (sums over sequences) and per-step posteriors."""

    log_likelihood: torch.Tensor  # (n_sequences,)
    posteriors: torch.Tensor  # (n_sequences, max_length, n_states), 0 on padding
    start_counts: torch.Tensor  # (n_states,)
    transition_counts: torch.Tensor  # (n_states, n_states)
    duration_counts: torch.Tensor  # (n_states, max_duration) complete segments
    censored_counts: torch.Tensor  # (n_states, max_duration) censored last segments


def segment_statistics(
    log_start: torch.Tensor,
    log_transition: torch.Tensor,
    log_durations: torch.Tensor,
    log_survival: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor,
) -> SegmentStatistics:
    """The e-step: expected counts and posteriors, as gradients of log p(x).

    Sequences of probability zero contribute nothing (their log-likelihood is -inf).

    Example:
        >>> flat = torch.zeros(2).log_softmax(0)
        >>> stats = segment_statistics(flat, torch.tensor([[0.0, 1.0], [1.0, 0.0]]).log(),
        ...                            torch.ones(2, 2).log_softmax(1), torch.zeros(2, 2),
        ...                            torch.zeros(1, 2, 2), torch.tensor([2]))
        >>> stats.posteriors.sum(-1).tolist(), stats.start_counts.sum().item()
        ([[1.0, 1.0]], 1.0)
    """
    leaves = [
        tensor.detach().clone().requires_grad_(True)
        for tensor in (log_start, log_transition, log_durations, log_survival, emission_log_probs)
    ]
    with torch.enable_grad():
        log_likelihood = segment_forward(*leaves, lengths)
        finite = torch.isfinite(log_likelihood)
        total = torch.where(finite, log_likelihood, torch.zeros_like(log_likelihood)).sum()
        if total.requires_grad:
            gradients = torch.autograd.grad(total, leaves, allow_unused=True)
        else:  # pragma: no cover - every sequence impossible
            gradients = [None] * len(leaves)
    start, transition, durations, censored, posteriors = (
        torch.zeros_like(leaf) if gradient is None else gradient
        for leaf, gradient in zip(leaves, gradients)
    )
    return SegmentStatistics(
        log_likelihood.detach(), posteriors, start, transition, durations, censored
    )


def segment_viterbi(
    log_start: torch.Tensor,
    log_transition: torch.Tensor,
    log_durations: torch.Tensor,
    log_survival: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The most probable segmentation: per-step states and log p(x, segments).

    Returns:
        `(paths, log_probs)`: (n_sequences, max_length) long, -1 past each end (and for a
        sequence of probability zero), and (n_sequences,).

    Example:
        >>> paths, scores = segment_viterbi(
        ...     torch.tensor([0.9, 0.1]).log(), torch.tensor([[0.0, 1.0], [1.0, 0.0]]).log(),
        ...     torch.ones(2, 3).log_softmax(1), torch.zeros(2, 3),
        ...     torch.tensor([[[0.0, -5.0], [0.0, -5.0], [-5.0, 0.0]]]), torch.tensor([3]))
        >>> paths.tolist()
        [[0, 0, 1]]
    """
    emissions = emission_log_probs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = segment_forward(
            log_start.detach(),
            log_transition.detach(),
            log_durations.detach(),
            log_survival.detach(),
            emissions,
            lengths,
            maximum=True,
        )
        finite = torch.isfinite(scores)
        total = torch.where(finite, scores, torch.zeros_like(scores)).sum()
        if total.requires_grad:
            (indicator,) = torch.autograd.grad(total, [emissions])
        else:  # pragma: no cover - every sequence impossible
            indicator = torch.zeros_like(emissions)
    n_sequences, max_length, _ = emissions.shape
    steps = torch.arange(max_length, device=emissions.device)
    real = (steps[None, :] < lengths.to(emissions.device)[:, None]) & finite[:, None]
    paths = indicator.argmax(-1).masked_fill(~real, -1)
    return paths, scores.detach()
