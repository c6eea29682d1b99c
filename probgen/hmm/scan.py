"""Reductions over time for HMMs: the parallel (doubling) scans and the pairwise product.

`forward_parallel_scan` and the scan e-step replace the time-step loop with log2(length)
rounds of batched matrix products (long sequences with few states); `hmm_log_likelihood` is
the differentiable log-likelihood, reduced over time pairwise when each step is small.

Example:
    >>> import torch
    >>> from probgen.hmm.scan import hmm_log_likelihood
    >>> start = torch.tensor([0.5, 0.5]).log()
    >>> transition = torch.tensor([[0.9, 0.1], [0.2, 0.8]]).log()
    >>> hmm_log_likelihood(start, transition, torch.zeros(3, 4, 2)).shape
    torch.Size([3])
"""

from __future__ import annotations

import torch

from probgen.hmm.layout import (
    ExpectedStatistics,
    _nonzero,
    length_mask,
    scale_emissions,
    step_loop_threads,
)

# hmm_log_likelihood reduces over time pairwise (log2(length) rounds of batched n x n products)
# when each step is small work (batch * n_states**2 entries, n_states at most 32): that costs
# n_states times the arithmetic of the sequential pass but a few dozen tensor operations instead
# of several per step, which is what a gradient evaluation pays for on CPU (a 100-step series
# with 2 states: about 12x faster forward and backward). For larger steps the sequential pass's
# lesser arithmetic wins.
DIFFERENTIABLE_SCAN_MAX_STEP_ENTRIES = 4096
DIFFERENTIABLE_SCAN_MAX_STATES = 32


def _expected_statistics_scan(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_probs: torch.Tensor,
    offsets: torch.Tensor,
    mask_tm: torch.Tensor,
    time_major: bool,
) -> ExpectedStatistics:
    """Forward-backward by parallel prefix (forward) and suffix (backward) matrix products.

    With step matrices M_t = A diag(b_t), the filtered vector at t is alpha_0 M_1 ... M_t and
    the backward vector is M_{t+1} ... M_{T-1} 1; both come from log2(T) rounds of batched
    products (Hillis-Steele doubling), each partial product rescaled by its largest entry.
    Posteriors and pair marginals only need these vectors up to scale.
    """
    max_length, n_sequences, n_states = emission_probs.shape
    probs = emission_probs.transpose(0, 1)  # (n_sequences, max_length, n_states)
    mask = mask_tm.t()
    first = start_probs * probs[:, 0]
    eye = torch.eye(n_states, dtype=probs.dtype, device=probs.device)
    total_offsets = offsets.sum(0)
    if max_length == 1:
        norm = first.sum(-1, keepdim=True)
        posteriors = (first / _nonzero(norm)).unsqueeze(1)
        log_likelihood = norm.squeeze(-1).log() + total_offsets
        transition_counts = transition_probs.new_zeros(n_states, n_states)
    else:
        steps = transition_probs * probs[:, 1:].unsqueeze(-2)  # M_t for t = 1..T-1
        steps = torch.where(mask[:, 1:, None, None], steps, eye)
        prefix, prefix_log_scales = _doubling_scan(steps, reverse=False)
        suffix, _ = _doubling_scan(steps, reverse=True)
        alphas = torch.cat(
            [first.unsqueeze(1), (first.unsqueeze(1).unsqueeze(-2) @ prefix).squeeze(-2)], 1
        )
        last = alphas[:, -1].sum(-1)
        log_likelihood = last.log() + prefix_log_scales[:, -1] + total_offsets
        alphas = alphas / _nonzero(alphas.sum(-1, keepdim=True))
        betas = torch.cat([suffix.sum(-1), torch.ones_like(first).unsqueeze(1)], 1)
        betas = betas / _nonzero(betas.amax(-1, keepdim=True))
        posteriors = alphas * betas
        posteriors = posteriors / _nonzero(posteriors.sum(-1, keepdim=True))
        pairs = alphas[:, :-1].unsqueeze(-1) * steps * betas[:, 1:].unsqueeze(-2)
        pairs = pairs / _nonzero(pairs.sum((-2, -1), keepdim=True))
        pairs = pairs * mask[:, 1:, None, None]
        transition_counts = pairs.sum((0, 1))
    posteriors = posteriors * mask.unsqueeze(-1)
    return ExpectedStatistics(
        log_likelihood=log_likelihood,
        posteriors=posteriors.transpose(0, 1) if time_major else posteriors,
        start_counts=posteriors[:, 0].sum(0),
        transition_counts=transition_counts,
    )


def _doubling_scan(steps: torch.Tensor, *, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive prefix (or suffix, when `reverse`) products of (batch, n, S, S) matrices.

    Returns the rescaled products and the log of their scales, shape (batch, n).
    """
    products = steps
    log_scales = steps.new_zeros(steps.shape[:2])
    n = steps.shape[1]
    offset = 1
    while offset < n:
        # Prefix: new[t] = old[t - offset] @ old[t]; suffix: new[t] = old[t] @ old[t + offset].
        # Both are the same slices, kept at the end (prefix) or the start (suffix).
        combined = products[:, :-offset] @ products[:, offset:]
        combined_scales = log_scales[:, :-offset] + log_scales[:, offset:]
        peak = combined.amax(dim=(-2, -1))
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))
        combined = combined / peak[..., None, None]
        combined_scales = combined_scales + peak.log()
        if reverse:
            products = torch.cat([combined, products[:, n - offset :]], 1)
            log_scales = torch.cat([combined_scales, log_scales[:, n - offset :]], 1)
        else:
            products = torch.cat([products[:, :offset], combined], 1)
            log_scales = torch.cat([log_scales[:, :offset], combined_scales], 1)
        offset *= 2
    return products, log_scales


def forward_parallel_scan(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-likelihood of each sequence by a parallel (tree) reduction over time.

    The forward recursion is a product of step matrices `M_t = A diag(b_t)`; matrix products
    are associative, so they can be combined pairwise in log2(T) rounds of one batched matrix
    product each instead of T sequential steps. Each partial product is rescaled by its largest
    entry, with the log of the scale carried alongside, so nothing underflows. This does
    n_states times more arithmetic than the sequential pass and pays off for long sequences
    with few states (and on GPUs). Padded steps use the identity matrix.

    Returns:
        (n_sequences,) log-likelihoods, equal to `log_likelihood(..., method="sequential")`.

    Example:
        >>> from probgen.hmm.inference import log_likelihood
        >>> start = torch.tensor([0.3, 0.7], dtype=torch.float64)
        >>> transition = torch.tensor([[0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
        >>> generator = torch.Generator().manual_seed(0)
        >>> emissions = torch.randn(2, 50, 2, dtype=torch.float64, generator=generator)
        >>> bool(torch.allclose(forward_parallel_scan(start, transition, emissions),
        ...      log_likelihood(start, transition, emissions, method="sequential")))
        True
    """
    n_sequences, max_length, n_states = emission_log_probs.shape
    mask = length_mask(lengths, n_sequences, max_length, emission_log_probs.device)
    emission_probs, offsets = scale_emissions(emission_log_probs, mask)
    emission_probs = emission_probs.transpose(0, 1)  # (n_sequences, max_length, n_states)
    first = start_probs * emission_probs[:, 0]  # (n_sequences, n_states)
    total_log = offsets.sum(0)
    if max_length > 1:
        steps = transition_probs.unsqueeze(0).unsqueeze(0) * emission_probs[:, 1:].unsqueeze(-2)
        eye = torch.eye(n_states, dtype=steps.dtype, device=steps.device)
        steps = torch.where(mask[:, 1:, None, None], steps, eye)
        log_scales = steps.new_zeros(steps.shape[:2])
        while steps.shape[1] > 1:
            if steps.shape[1] % 2 == 1:
                steps = torch.cat([steps, eye.expand(n_sequences, 1, n_states, n_states)], 1)
                log_scales = torch.cat([log_scales, log_scales.new_zeros(n_sequences, 1)], 1)
            product = steps[:, 0::2] @ steps[:, 1::2]
            peak = product.amax(dim=(-2, -1))
            peak = torch.where(peak > 0, peak, torch.ones_like(peak))
            steps = product / peak[..., None, None]
            log_scales = log_scales[:, 0::2] + log_scales[:, 1::2] + peak.log()
        total = (first.unsqueeze(1) @ steps[:, 0]).squeeze(1).sum(-1)
        total_log = total_log + log_scales[:, 0]
    else:
        total = first.sum(-1)
    return total.log() + total_log


def hmm_log_likelihood(
    initial_logits: torch.Tensor,
    transition_logits: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable log-likelihood of an HMM, for use inside Pyro models and gradient fits.

    Unlike the functions above it broadcasts over leading batch dimensions of the *parameters*
    too (chains, particles), and every operation is differentiable, so it can serve as a
    `pyro.factor` when the HMM's parameters (say its emission means) are sampled. Logits need
    not be normalised: `log_softmax` is applied over the last dimension.

    Args:
        initial_logits: (..., n_states) logits of the first state.
        transition_logits: (..., n_states, n_states), row i the logits of p(z_t | z_{t-1} = i).
        emission_log_probs: (..., length, n_states) log p(x_t | z_t = s), computed by the caller
            from whatever parameters it samples.
        lengths: optional (...,) lengths; steps past them are ignored.

    Returns:
        Tensor of shape broadcast(...) with log p(x_{0..length-1}).

    Example:
        >>> import torch
        >>> means = torch.tensor([-1.0, 1.0], requires_grad=True)
        >>> x = torch.tensor([[-1.2, 0.9, 1.1]])
        >>> emission = torch.distributions.Normal(means, 1.0).log_prob(x.unsqueeze(-1))
        >>> value = hmm_log_likelihood(torch.zeros(2), torch.zeros(2, 2), emission)
        >>> value.sum().backward(); means.grad.shape
        torch.Size([2])
    """
    log_start = torch.log_softmax(initial_logits, dim=-1)
    transition = torch.softmax(transition_logits, dim=-1)
    length = emission_log_probs.shape[-2]
    mask = None
    if lengths is not None:
        steps = torch.arange(length, device=emission_log_probs.device)
        mask = steps < lengths.unsqueeze(-1)  # (..., length)
        emission_log_probs = torch.where(
            mask.unsqueeze(-1), emission_log_probs, torch.zeros_like(emission_log_probs)
        )
    offsets = emission_log_probs.detach().amax(dim=-1, keepdim=True)
    offsets = torch.where(torch.isfinite(offsets), offsets, torch.zeros_like(offsets))
    emission_probs = (emission_log_probs - offsets).exp()
    first = log_start + emission_log_probs[..., 0, :]
    first_offset = first.detach().amax(dim=-1, keepdim=True)
    first_offset = torch.where(
        torch.isfinite(first_offset), first_offset, torch.zeros_like(first_offset)
    )
    alpha = (first - first_offset).exp()
    norm = alpha.sum(-1, keepdim=True)
    total = norm.log() + first_offset
    alpha = alpha / _nonzero(norm)
    n_states = emission_log_probs.shape[-1]
    batch_size = max(alpha.numel(), transition.numel() // n_states) // n_states
    if (
        length > 1
        and n_states <= DIFFERENTIABLE_SCAN_MAX_STATES
        and batch_size * n_states**2 <= DIFFERENTIABLE_SCAN_MAX_STEP_ENTRIES
    ):
        step_probs = transition.unsqueeze(-3) * emission_probs[..., 1:, :].unsqueeze(-2)
        if mask is not None:
            eye = torch.eye(n_states, dtype=step_probs.dtype, device=step_probs.device)
            step_probs = torch.where(mask[..., 1:, None, None], step_probs, eye)
        product, log_scale = _scaled_matrix_product(step_probs)
        last = (alpha.unsqueeze(-2) @ product).squeeze(-2).sum(-1, keepdim=True)
        total = total + last.log() + log_scale.unsqueeze(-1) + offsets[..., 1:, :].sum(-2)
        return total.squeeze(-1)
    n_rows = emission_log_probs[..., 0, :].numel() // max(1, n_states)
    with step_loop_threads(emission_log_probs, n_rows, n_states):
        for t in range(1, length):
            alpha = (alpha.unsqueeze(-2) @ transition).squeeze(-2) * emission_probs[..., t, :]
            norm = alpha.sum(-1, keepdim=True)
            total = total + norm.log() + offsets[..., t, :]
            alpha = alpha / _nonzero(norm)
    return total.squeeze(-1)


def _scaled_matrix_product(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of the non-negative (..., steps, n, n) matrices over `steps`, pairwise in
    log2(steps) rounds; returns (product / scale, log scale) with the largest entry rescaled to 1.

    The scales are taken from detached values: they are constants that cancel between the two
    outputs, so gradients through `log(product) + log scale` are exact.
    """
    log_scale = matrices.new_zeros(matrices.shape[:-2])
    while matrices.shape[-3] > 1:
        if matrices.shape[-3] % 2 == 1:
            # Carry the odd last matrix to the next round as it is.
            left, right = matrices[..., :-1:2, :, :], matrices[..., 1::2, :, :]
            carried, carried_scale = matrices[..., -1:, :, :], log_scale[..., -1:]
            log_pairs = log_scale[..., :-1:2] + log_scale[..., 1::2]
        else:
            left, right = matrices[..., 0::2, :, :], matrices[..., 1::2, :, :]
            carried = None
            log_pairs = log_scale[..., 0::2] + log_scale[..., 1::2]
        product = left @ right
        peak = product.detach().amax(dim=(-2, -1))
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))
        matrices = product / peak[..., None, None]
        log_scale = log_pairs + peak.log()
        if carried is not None:
            matrices = torch.cat([matrices, carried], dim=-3)
            log_scale = torch.cat([log_scale, carried_scale], dim=-1)
    return matrices.squeeze(-3), log_scale.squeeze(-1)
