"""Hidden Markov model inference as pure, batched tensor functions.

Every function here takes the HMM's parameters as tensors and works on a batch of sequences at
once; there are no model classes and no loops over sequences or states. The only Python loop is
over time steps, where the recursion demands it, and `forward_parallel_scan` removes even that
for long sequences.

Conventions:
    - `emission_log_probs` has shape (n_sequences, max_length, n_states): the log-density of
      each observation under each state, computed by the caller as one tensor op. Entries past a
      sequence's length are ignored (`lengths` gives each sequence's length).
    - `start_probs` (n_states,) and `transition_probs` (n_states, n_states), rows summing to
      one, with `transition_probs[i, j] = p(z_t = j | z_{t-1} = i)`.

The forward and backward passes are *scaled* (Rabiner 1989): probabilities are renormalised at
every step and the log-likelihood is the sum of the logs of the normalisers. Emissions are
brought to probability scale by subtracting each step's largest log-density (which is added
back to the log-likelihood), so the recursion is one small matrix product per step for all
sequences together. That is several times faster than a log-space `logsumexp` recursion and as
accurate in float64.

The e-step's (max_length, n_states, n_sequences) arrays (the "state-major" layout of the
time-step loops) may also be stored state-outer, as (n_states, max_length, n_sequences) in memory
(`state_major_empty`); the forward and backward passes keep whichever storage the emissions come
in. Each step is an (n_states, n_sequences) matrix for the loops either way; state-outer, every
step of a state is one row, so sums over all steps (the expected transition counts here, the
Gaussian emission densities and statistics) are each one matrix product (`states_by_steps`)
instead of a batch of max_length small ones. The loops themselves run a little faster on
contiguous steps, so families choose (`Emission.state_outer`).

The time-step loops are bound by per-kernel latency. When each step is small (below
`THREADED_STEP_WORK` multiply-adds) and the tensors are on the CPU, the loop runs with one
intra-op thread and restores the caller's setting afterwards: threads cannot speed up kernels
this small, and on a busy machine their synchronisation makes each step 10-100x slower.

The layout helpers live in `probgen.hmm.layout` and the reductions over time (parallel scans,
the differentiable `hmm_log_likelihood`) in `probgen.hmm.scan`; both are re-exported here.

Example:
    >>> import torch
    >>> from probgen.hmm.inference import log_likelihood, viterbi
    >>> start = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> transition = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
    >>> emission_probs = torch.tensor([[[0.9, 0.2], [0.1, 0.8]]], dtype=torch.float64)
    >>> emission_log_probs = emission_probs.log()
    >>> log_likelihood(start, transition, emission_log_probs).shape
    torch.Size([1])
    >>> viterbi(start.log(), transition.log(), emission_log_probs)[0].tolist()
    [[1, 1]]
"""

from __future__ import annotations

import torch

from probgen.hmm.layout import (
    THREADED_STEP_WORK,
    ExpectedStatistics,
    Workspace,
    _buffer,
    _nonzero,
    _state_major_copy,
    _total_log_likelihood,
    is_state_outer,
    length_mask,
    neutral_padding,
    normalize_rows,
    scale_emissions,
    scale_state_major,
    state_major_empty,
    states_by_steps,
    states_by_steps_view,
    step_loop_threads,
    summed_step_products,
)
from probgen.hmm.scan import (
    DIFFERENTIABLE_SCAN_MAX_STATES,
    DIFFERENTIABLE_SCAN_MAX_STEP_ENTRIES,
    _expected_statistics_scan,
    forward_parallel_scan,
    hmm_log_likelihood,
)

__all__ = [
    "DIFFERENTIABLE_SCAN_MAX_STATES",
    "DIFFERENTIABLE_SCAN_MAX_STEP_ENTRIES",
    "THREADED_STEP_WORK",
    "ExpectedStatistics",
    "Workspace",
    "backward_scaled",
    "expected_statistics",
    "expected_statistics_state_major",
    "forward_method",
    "forward_parallel_scan",
    "forward_scaled",
    "is_state_outer",
    "hmm_log_likelihood",
    "length_mask",
    "log_likelihood",
    "log_likelihood_state_major",
    "neutral_padding",
    "normalize_rows",
    "posteriors",
    "scale_emissions",
    "scale_state_major",
    "state_major_empty",
    "states_by_steps",
    "states_by_steps_view",
    "summed_step_products",
    "statistics_method",
    "viterbi",
]


# Above this many elements in the (n_sequences, length, n_states, n_states) stack of step
# matrices, the parallel scan uses too much memory and the sequential pass is used instead.
_SCAN_MAX_ELEMENTS = 2**25


def forward_method(n_sequences: int, max_length: int, n_states: int) -> str:
    """What `log_likelihood(..., method="auto")` runs: ``"scan"`` or ``"sequential"``.

    The parallel scan wins for long sequences with few states, where per-step latency
    dominates, as long as its stack of step matrices fits in memory.

    Example:
        >>> forward_method(10, 100, 4), forward_method(10, 4096, 4)
        ('sequential', 'scan')
    """
    elements = n_sequences * max_length * n_states * n_states
    if max_length >= 1024 and n_states <= 16 and elements <= _SCAN_MAX_ELEMENTS:
        return "scan"
    return "sequential"


def statistics_method(n_sequences: int, max_length: int, n_states: int) -> str:
    """What `expected_statistics(..., method="auto")` runs: ``"scan"`` or ``"sequential"``.

    Example:
        >>> statistics_method(500, 200, 8), statistics_method(10, 512, 4)
        ('sequential', 'scan')
    """
    elements = n_sequences * max_length * n_states * n_states
    if max_length >= 256 and n_states <= 8 and elements <= _SCAN_MAX_ELEMENTS // 4:
        return "scan"
    return "sequential"


def forward_scaled(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_probs: torch.Tensor,
    *,
    keep_alphas: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Scaled forward pass over time-major emission probabilities.

    Args:
        start_probs: (n_states,).
        transition_probs: (n_states, n_states).
        emission_probs: (max_length, n_sequences, n_states), e.g. from `scale_emissions`.
        keep_alphas: store the filtered state probabilities (needed for posteriors).

    Returns:
        `(alphas, scales)`: alphas (max_length, n_sequences, n_states) with
        `alphas[t] = p(z_t | x_{0..t})` (None when `keep_alphas` is False), and the normalisers
        scales (max_length, n_sequences), whose logs sum to the (shifted) log-likelihood. A zero
        normaliser marks an impossible observation (log-likelihood -inf).

    Example:
        >>> alphas, scales = forward_scaled(torch.ones(2) / 2, torch.eye(2), torch.ones(3, 1, 2))
        >>> scales.squeeze(1).tolist()
        [1.0, 1.0, 1.0]
    """
    state_major = _state_major_copy(emission_probs)
    alphas, scales, _ = _forward_state_major(
        start_probs, transition_probs, state_major, keep_alphas
    )
    return (None if alphas is None else alphas.transpose(1, 2)), scales


def _forward_state_major(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_probs: torch.Tensor,
    keep_alphas: bool,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, bool]:
    """Forward pass over (max_length, n_states, n_sequences) emissions (alphas in that layout).

    The state-major layout makes each step's product `A^T @ alpha` a (S, S) x (S, B) matrix
    product, two to three times faster than (B, S) x (S, S) for small S.

    Returns:
        `(alphas, scales, possible)`: alphas (None unless `keep_alphas`), scales
        (max_length, n_sequences), and whether every scale is positive (no impossible step).
    """
    length, n_states, n_sequences = emission_probs.shape
    # Scales are stored (length, 1, n_sequences) so that sums can be written in place.
    shape = (length, 1, n_sequences)
    scales = (
        emission_probs.new_empty(shape)
        if workspace is None
        else workspace.buffer("scales", shape, emission_probs)
    )
    alphas = (
        _buffer(workspace, "alphas", (length, n_states, n_sequences), emission_probs)
        if keep_alphas
        else None
    )
    with step_loop_threads(emission_probs, n_sequences, n_states):
        _forward_loop(start_probs, transition_probs, emission_probs, alphas, scales, safe=False)
        # The smallest scale is positive exactly when every one is (NaN compares False too).
        possible = bool(scales.amin() > 0)
        if not possible:
            # Some observation is impossible under every state: redo with guarded divisions.
            _forward_loop(start_probs, transition_probs, emission_probs, alphas, scales, safe=True)
    return alphas, scales.squeeze(1), possible


def _forward_loop(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_probs: torch.Tensor,
    alphas: torch.Tensor | None,
    scales: torch.Tensor,
    safe: bool,
) -> None:
    """Fill `alphas` (T, S, B) (when given) and `scales` (T, 1, B) step by step."""
    length = emission_probs.shape[0]
    tiny = torch.finfo(emission_probs.dtype).tiny
    transition_t = transition_probs.t().contiguous()
    # Every step's view made in one call: indexing inside the loop costs as much as a kernel.
    emission_steps = emission_probs.unbind(0)
    scale_steps = scales.unbind(0)
    alpha_steps = alphas.unbind(0) if alphas is not None else [None] * length
    alpha = torch.mul(start_probs.unsqueeze(-1), emission_steps[0], out=alpha_steps[0])
    torch.sum(alpha, 0, keepdim=True, out=scale_steps[0])
    alpha.div_(scale_steps[0].clamp_min(tiny) if safe else scale_steps[0])
    for t in range(1, length):
        # Four kernels per step: product, emission, normaliser, division.
        current = torch.mm(transition_t, alpha, out=alpha_steps[t])
        current.mul_(emission_steps[t])
        norm = torch.sum(current, 0, keepdim=True, out=scale_steps[t])
        current.div_(norm.clamp_min(tiny) if safe else norm)
        alpha = current


def backward_scaled(
    transition_probs: torch.Tensor, emission_probs: torch.Tensor, scales: torch.Tensor
) -> torch.Tensor:
    """Scaled backward pass matching `forward_scaled`'s normalisers.

    Returns betas (max_length, n_sequences, n_states) such that `alphas * betas` are the
    posterior state marginals. Padded steps (emission probability one in every state) keep
    `beta = 1`, so sequences of different lengths need no special treatment.

    Example:
        >>> betas = backward_scaled(torch.eye(2), torch.ones(3, 1, 2), torch.ones(3, 1))
        >>> betas[0].tolist()
        [[1.0, 1.0]]
    """
    state_major = _state_major_copy(emission_probs)
    betas = _backward_loop(transition_probs, _divide_by_scales(state_major, scales))
    return betas.transpose(1, 2)


def _divide_by_scales(emission_probs: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """State-major emissions (T, S, B) divided by each step's normaliser (T, B)."""
    return emission_probs / _nonzero(scales).unsqueeze(1)


def _backward_loop(
    transition_probs: torch.Tensor,
    scaled_emissions: torch.Tensor,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """beta_t = A (b_{t+1} / c_{t+1} * beta_{t+1}), state-major: two kernels per step.

    `scaled_emissions` (T, S, B) holds b_t / c_t and is overwritten: on return its steps
    t >= 1 hold b_t / c_t * beta_t, the factor the expected transition counts need, so they
    cost no second pass.
    """
    length, n_states, n_sequences = scaled_emissions.shape
    betas = _buffer(workspace, "betas", (length, n_states, n_sequences), scaled_emissions)
    betas[length - 1] = 1.0
    transition = transition_probs.contiguous()
    beta_steps = betas.unbind(0)
    emission_steps = scaled_emissions.unbind(0)
    with step_loop_threads(scaled_emissions, n_sequences, n_states):
        for t in range(length - 2, -1, -1):
            weighted = emission_steps[t + 1].mul_(beta_steps[t + 1])
            torch.mm(transition, weighted, out=beta_steps[t])
    return betas


def expected_statistics(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    time_major: bool = False,
    method: str = "auto",
) -> ExpectedStatistics:
    """Forward-backward: log-likelihoods, state posteriors and expected transition counts.

    The counts are additive over sequences (and over batches), which is what EM, minibatch EM
    and sharded EM need.

    Args:
        start_probs: (n_states,).
        transition_probs: (n_states, n_states).
        emission_log_probs: (n_sequences, max_length, n_states), or time-major
            (max_length, n_sequences, n_states) when `time_major` (posteriors then come back
            time-major too, which saves two transposes in EM).
        lengths: (n_sequences,) long, or None when every sequence has `max_length` steps.
        method: ``"sequential"`` (scaled forward-backward), ``"scan"`` (prefix and suffix
            products by parallel scan: O(log T) steps, for long sequences with few states) or
            ``"auto"``.

    Example:
        >>> stats = expected_statistics(torch.ones(2) / 2, torch.full((2, 2), 0.5),
        ...                             torch.zeros(1, 3, 2))
        >>> stats.transition_counts.sum().item()
        2.0
    """
    if time_major:
        max_length, n_sequences, n_states = emission_log_probs.shape
        log_probs_tm = emission_log_probs
    else:
        n_sequences, max_length, n_states = emission_log_probs.shape
        log_probs_tm = emission_log_probs.transpose(0, 1)
    mask_tm = length_mask(lengths, n_sequences, max_length, emission_log_probs.device).t()
    if method == "auto":
        method = statistics_method(n_sequences, max_length, n_states)
    if method == "scan":
        emission_probs, offsets = scale_emissions(log_probs_tm, mask_tm, time_major=True)
        return _expected_statistics_scan(
            start_probs, transition_probs, emission_probs, offsets, mask_tm, time_major
        )
    if method != "sequential":
        raise ValueError(f"method must be 'auto', 'sequential' or 'scan', got {method!r}")
    complete_mask = None if bool(mask_tm.all()) else mask_tm
    state_major = _state_major_copy(log_probs_tm)
    emission_probs, offsets = scale_state_major(state_major, complete_mask)
    expected = expected_statistics_state_major(
        start_probs, transition_probs, emission_probs, offsets, complete_mask
    )
    posteriors_tm = expected.posteriors.transpose(1, 2)  # (T, B, S) view
    expected.posteriors = posteriors_tm if time_major else posteriors_tm.transpose(0, 1)
    return expected


def expected_statistics_state_major(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_probs: torch.Tensor,
    log_offsets: torch.Tensor,
    mask_tm: torch.Tensor | None = None,
    *,
    workspace: Workspace | None = None,
) -> ExpectedStatistics:
    """Forward-backward on scaled, state-major emissions: the EM e-step's core.

    Everything stays in the (max_length, n_states, n_sequences) layout of the time-step loops,
    so no transposed copies are made, and the pair sums are one batched matrix product.

    Args:
        start_probs: (n_states,).
        transition_probs: (n_states, n_states).
        emission_probs: (max_length, n_states, n_sequences) scaled emission probabilities, as
            from `scale_state_major`; overwritten (the caller hands over its buffer).
        log_offsets: (max_length, n_sequences) log of each step's scale.
        mask_tm: (max_length, n_sequences) bool, True on real steps; None when every sequence
            has max_length steps.
        workspace: where the (max_length, n_states, n_sequences) arrays are kept between
            calls (the posteriors live there until the next call); None allocates them.

    Returns:
        `ExpectedStatistics` whose posteriors are state-major (max_length, n_states,
        n_sequences), zero on padded steps.

    Example:
        >>> probs, offsets = scale_state_major(torch.zeros(3, 2, 1))
        >>> stats = expected_statistics_state_major(torch.ones(2) / 2, torch.full((2, 2), 0.5),
        ...                                         probs, offsets)
        >>> stats.posteriors.shape, stats.transition_counts.sum().item()
        (torch.Size([3, 2, 1]), 2.0)
    """
    max_length, n_states, _ = emission_probs.shape
    alphas, scales, possible = _forward_state_major(
        start_probs, transition_probs, emission_probs, True, workspace
    )
    assert alphas is not None
    log_likelihood = _total_log_likelihood(scales, log_offsets, mask_tm)
    # b_t / c_t in place; the backward loop then turns steps t >= 1 into b_t / c_t * beta_t.
    weighted = emission_probs.div_((scales if possible else _nonzero(scales)).unsqueeze(1))
    betas = _backward_loop(transition_probs, weighted, workspace)
    if max_length > 1:
        # xi_t(i, j) = alpha_t(i) A(i, j) b_{t+1}(j) beta_{t+1}(j) / c_{t+1}; summed over
        # sequences and steps this is one (batched) matrix product and an elementwise product
        # with A.
        if mask_tm is not None:
            weighted[1:].mul_(mask_tm[1:].unsqueeze(1))
        pair_sums = summed_step_products(alphas[:-1], weighted[1:].transpose(1, 2))
        transition_counts = pair_sums * transition_probs
    else:
        transition_counts = transition_probs.new_zeros(n_states, n_states)
    # With Rabiner's scaling alpha_t * beta_t already sums to one over states; only a
    # sequence with an impossible step (a zero normaliser) needs renormalising.
    posteriors = alphas.mul_(betas)  # the alphas are not needed any more
    if not possible:
        posteriors.div_(_nonzero(posteriors.sum(1, keepdim=True)))
    if mask_tm is not None:
        posteriors.mul_(mask_tm.unsqueeze(1))
    return ExpectedStatistics(
        log_likelihood=log_likelihood,
        posteriors=posteriors,
        start_counts=posteriors[0].sum(-1),
        transition_counts=transition_counts,
    )


def posteriors(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Posterior state marginals p(z_t | x), shape (n_sequences, max_length, n_states).

    Example:
        >>> posteriors(torch.ones(2) / 2, torch.eye(2), torch.zeros(1, 2, 2)).sum(-1).tolist()
        [[1.0, 1.0]]
    """
    return expected_statistics(
        start_probs, transition_probs, emission_log_probs, lengths
    ).posteriors


def log_likelihood(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    method: str = "auto",
) -> torch.Tensor:
    """Log-likelihood log p(x) of each sequence, shape (n_sequences,).

    Args:
        start_probs: (n_states,).
        transition_probs: (n_states, n_states).
        emission_log_probs: (n_sequences, max_length, n_states).
        lengths: (n_sequences,) or None.
        method: ``"sequential"`` (scaled forward pass, one step at a time), ``"scan"``
            (`forward_parallel_scan`, O(log T) steps) or ``"auto"`` (scan for long sequences
            with few states, where per-step latency dominates).

    Example:
        >>> log_likelihood(torch.ones(2) / 2, torch.eye(2), torch.zeros(2, 5, 2)).tolist()
        [0.0, 0.0]
    """
    n_sequences, max_length, n_states = emission_log_probs.shape
    if method == "auto":
        method = forward_method(n_sequences, max_length, n_states)
    if method == "scan":
        return forward_parallel_scan(start_probs, transition_probs, emission_log_probs, lengths)
    if method != "sequential":
        raise ValueError(f"method must be 'auto', 'sequential' or 'scan', got {method!r}")
    mask_tm = length_mask(lengths, n_sequences, max_length, emission_log_probs.device).t()
    complete_mask = None if bool(mask_tm.all()) else mask_tm
    state_major = _state_major_copy(emission_log_probs.transpose(0, 1))
    emission_probs, offsets = scale_state_major(state_major, complete_mask)
    return log_likelihood_state_major(
        start_probs, transition_probs, emission_probs, offsets, complete_mask
    )


def log_likelihood_state_major(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_probs: torch.Tensor,
    log_offsets: torch.Tensor,
    mask_tm: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-likelihood of each sequence from scaled, state-major emissions (forward pass only).

    Args:
        start_probs: (n_states,).
        transition_probs: (n_states, n_states).
        emission_probs: (max_length, n_states, n_sequences), as from `scale_state_major`.
        log_offsets: (max_length, n_sequences).
        mask_tm: (max_length, n_sequences) bool or None (every step real).

    Returns:
        (n_sequences,) log p(x).

    Example:
        >>> probs, offsets = scale_state_major(torch.zeros(5, 2, 1))
        >>> log_likelihood_state_major(torch.ones(2) / 2, torch.eye(2), probs, offsets).tolist()
        [0.0]
    """
    _, scales, _ = _forward_state_major(start_probs, transition_probs, emission_probs, False)
    return _total_log_likelihood(scales, log_offsets, mask_tm)


def viterbi(
    log_start_probs: torch.Tensor,
    log_transition_probs: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Most probable state paths (max-product in log space) and their joint log-probabilities.

    Args:
        log_start_probs: (n_states,).
        log_transition_probs: (n_states, n_states).
        emission_log_probs: (n_sequences, max_length, n_states).
        lengths: (n_sequences,) or None.

    Returns:
        `(paths, log_probs)`: paths (n_sequences, max_length) long, -1 past each sequence's
        end; log_probs (n_sequences,) = log p(x, z*) of the best path z*.

    Example:
        >>> paths, scores = viterbi(torch.log(torch.tensor([0.5, 0.5])),
        ...                         torch.log(torch.tensor([[0.9, 0.1], [0.1, 0.9]])),
        ...                         torch.log(torch.tensor([[[0.9, 0.1], [0.8, 0.2]]])))
        >>> paths.tolist()
        [[0, 0]]
    """
    n_sequences, max_length, n_states = emission_log_probs.shape
    device = emission_log_probs.device
    ragged = lengths is not None and bool((lengths.to(device) < max_length).any())
    mask_tm = length_mask(lengths, n_sequences, max_length, device).transpose(0, 1)
    emissions_tm = emission_log_probs.transpose(0, 1)
    backpointers = torch.empty(max_length, n_sequences, n_states, dtype=torch.long, device=device)
    identity = torch.arange(n_states, device=device).expand(n_sequences, n_states)
    delta = log_start_probs + emissions_tm[0]
    transition = log_transition_probs.unsqueeze(0)
    with step_loop_threads(emission_log_probs, n_sequences, n_states):
        for t in range(1, max_length):
            scores, best_previous = (delta.unsqueeze(-1) + transition).max(dim=1)
            scores = scores + emissions_tm[t]
            if ragged:
                # Past a sequence's end the path stays where it is, so its last real state wins.
                keep = mask_tm[t].unsqueeze(-1)
                scores = torch.where(keep, scores, delta)
                best_previous = torch.where(keep, best_previous, identity)
            delta = scores
            backpointers[t] = best_previous
        best_log_probs, state = delta.max(dim=-1)
        paths = torch.empty(max_length, n_sequences, dtype=torch.long, device=device)
        paths[max_length - 1] = state
        for t in range(max_length - 1, 0, -1):
            state = backpointers[t].gather(1, state.unsqueeze(1)).squeeze(1)
            paths[t - 1] = state
    paths = paths.t().contiguous()
    if ragged:
        paths = paths.masked_fill(~mask_tm.t(), -1)
    return paths, best_log_probs
