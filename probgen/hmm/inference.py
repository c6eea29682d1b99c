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

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = [
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

# Per-step work (n_sequences * n_states**2) up to which time-step loops run single-threaded.
THREADED_STEP_WORK = 2**22

# Above this many elements in the (n_sequences, length, n_states, n_states) stack of step
# matrices, the parallel scan uses too much memory and the sequential pass is used instead.
_SCAN_MAX_ELEMENTS = 2**25
# hmm_log_likelihood reduces over time pairwise (log2(length) rounds of batched n x n products)
# when each step is small work (batch * n_states**2 entries, n_states at most 32): that costs
# n_states times the arithmetic of the sequential pass but a few dozen tensor operations instead
# of several per step, which is what a gradient evaluation pays for on CPU (a 100-step series
# with 2 states: about 12x faster forward and backward). For larger steps the sequential pass's
# lesser arithmetic wins.
DIFFERENTIABLE_SCAN_MAX_STEP_ENTRIES = 4096
DIFFERENTIABLE_SCAN_MAX_STATES = 32

_LN_2 = math.log(2.0)
_LOG2_E = 1.0 / _LN_2


@contextlib.contextmanager
def step_loop_threads(tensor: torch.Tensor, n_sequences: int, n_states: int) -> Iterator[None]:
    """Context for a time-step loop: one intra-op thread when the steps are small CPU work.

    Example:
        >>> with step_loop_threads(torch.zeros(1), 10, 3):
        ...     torch.get_num_threads()
        1
    """
    threads = torch.get_num_threads()
    small = n_sequences * n_states * n_states <= THREADED_STEP_WORK
    if threads == 1 or tensor.device.type != "cpu" or not small:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def length_mask(
    lengths: torch.Tensor | None, n_sequences: int, max_length: int, device: torch.device
) -> torch.Tensor:
    """Bool mask (n_sequences, max_length), True on each sequence's real steps.

    Example:
        >>> length_mask(torch.tensor([1, 3]), 2, 3, torch.device("cpu")).tolist()
        [[True, False, False], [True, True, True]]
    """
    if lengths is None:
        return torch.ones(n_sequences, max_length, dtype=torch.bool, device=device)
    steps = torch.arange(max_length, device=device)
    return steps[None, :] < lengths.to(device)[:, None]


class Workspace:
    """Buffers kept from one call to the next, e.g. across the iterations of an EM fit.

    An e-step needs a few (max_length, n_states, n_sequences) arrays. Allocated afresh every
    iteration, each comes from the operating system as new pages (large allocations are
    mapped, and unmapped when freed), and faulting them in costs as much as the e-step's
    arithmetic; reusing them makes later iterations touch memory that is already mapped.

    Example:
        >>> workspace = Workspace()
        >>> first = workspace.buffer("alphas", (2, 3), torch.zeros(1))
        >>> first is workspace.buffer("alphas", (2, 3), torch.zeros(1))
        True
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def buffer(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of `shape` with `like`'s dtype and device, reused by name."""
        buffer = self._buffers.get(name)
        if (
            buffer is None
            or tuple(buffer.shape) != tuple(shape)
            or buffer.dtype != like.dtype
            or buffer.device != like.device
        ):
            buffer = like.new_empty(shape)
            self._buffers[name] = buffer
        return buffer

    def state_major(
        self,
        name: str,
        shape: tuple[int, int, int],
        like: torch.Tensor,
        *,
        state_outer: bool = False,
    ) -> torch.Tensor:
        """`buffer` of shape (max_length, n_states, n_sequences), stored state-outer if asked.

        See `state_major_empty`.
        """
        if not state_outer:
            return self.buffer(name, shape, like)
        length, n_states, n_sequences = shape
        return self.buffer(f"{name}/state-outer", (n_states, length, n_sequences), like).transpose(
            0, 1
        )


def state_major_empty(shape: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised (max_length, n_states, n_sequences) tensor stored state-outer.

    It is a transposed view of an (n_states, max_length, n_sequences) tensor, so that
    `states_by_steps` is a view: the time-step loops see one (n_states, n_sequences) matrix per
    step either way, while sums over all steps become single matrix products.

    Example:
        >>> buffer = state_major_empty((4, 2, 3), torch.zeros(1))
        >>> buffer.shape, states_by_steps(buffer).shape, buffer.stride()
        (torch.Size([4, 2, 3]), torch.Size([2, 12]), (3, 12, 1))
    """
    length, n_states, n_sequences = shape
    return like.new_empty(n_states, length, n_sequences).transpose(0, 1)


def states_by_steps(values: torch.Tensor) -> torch.Tensor:
    """(max_length, n_states, n_sequences) values as an (n_states, max_length * n_sequences) matrix.

    A view when `values` is stored state-outer (`state_major_empty`), or a slice of such a
    tensor along time; a copy otherwise.

    Example:
        >>> values = torch.arange(8.0).reshape(2, 2, 2)  # (steps, states, sequences)
        >>> states_by_steps(values).tolist()
        [[0.0, 1.0, 4.0, 5.0], [2.0, 3.0, 6.0, 7.0]]
    """
    length, n_states, n_sequences = values.shape
    return values.transpose(0, 1).reshape(n_states, length * n_sequences)


def states_by_steps_view(values: torch.Tensor) -> torch.Tensor | None:
    """`states_by_steps(values)` when it is a view (so it can be written into), else None.

    Example:
        >>> states_by_steps_view(state_major_empty((3, 2, 4), torch.zeros(1))).shape
        torch.Size([2, 12])
        >>> states_by_steps_view(torch.zeros(3, 2, 4)) is None
        True
    """
    length, n_states, n_sequences = values.shape
    try:
        return values.transpose(0, 1).view(n_states, length * n_sequences)
    except RuntimeError:
        return None


def is_state_outer(values: torch.Tensor) -> bool:
    """Whether (max_length, n_states, n_sequences) `values` are stored state-outer.

    Example:
        >>> is_state_outer(state_major_empty((3, 2, 4), torch.zeros(1)))
        True
        >>> is_state_outer(torch.zeros(3, 2, 4))
        False
    """
    length, n_states, n_sequences = values.shape
    return (
        length > 1
        and n_states > 1
        and values.stride(1) > values.stride(0)
        and states_by_steps_view(values) is not None
    )


def summed_step_products(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """sum_t left[t] @ right[t] for (T, S, B) `left` and (T, B, K) `right` -> (S, K).

    One matrix product (S, T * B) x (T * B, K) when both sides are views of that shape (state-
    outer storage), else a batched product summed over steps.

    Example:
        >>> left, right = torch.rand(5, 2, 3), torch.rand(5, 3, 4)
        >>> expected = torch.einsum("tsb,tbk->sk", left, right)
        >>> bool(torch.allclose(summed_step_products(left, right), expected))
        True
    """
    length, n_sequences, width = right.shape
    flat_left = states_by_steps_view(left)
    if flat_left is not None and is_state_outer(left):
        try:
            flat_right = right.view(length * n_sequences, width)
        except RuntimeError:
            flat_right = None
        if flat_right is not None:
            return flat_left @ flat_right
    return torch.bmm(left, right).sum(0)


def _buffer(
    workspace: Workspace | None, name: str, shape: tuple[int, int, int], like: torch.Tensor
) -> torch.Tensor:
    """A state-major (T, S, B) buffer stored like `like`, from the workspace when there is one."""
    state_outer = is_state_outer(like)
    if workspace is not None:
        return workspace.state_major(name, shape, like, state_outer=state_outer)
    return state_major_empty(shape, like) if state_outer else like.new_empty(shape)


def scale_emissions(
    emission_log_probs: torch.Tensor, mask: torch.Tensor, *, time_major: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Emission probabilities rescaled per step, time-major, and the log of each step's scale.

    Each step's log-densities are shifted so that the largest over states is zero (so the
    largest probability is one and nothing overflows); padded steps get probability one in every
    state and offset zero, which leaves the forward and backward recursions unchanged there.

    Args:
        emission_log_probs: (n_sequences, max_length, n_states), or (max_length, n_sequences,
            n_states) when `time_major`.
        mask: (n_sequences, max_length) bool, True on real steps (time-major when `time_major`).

    Returns:
        `(emission_probs, log_offsets)`: (max_length, n_sequences, n_states) and
        (max_length, n_sequences), with `log p(x_t | z_t = s) = log emission_probs + offset`.

    Example:
        >>> mask = torch.ones(1, 2, dtype=torch.bool)
        >>> probs, offsets = scale_emissions(torch.zeros(1, 2, 3), mask)
        >>> probs.shape, offsets.shape
        (torch.Size([2, 1, 3]), torch.Size([2, 1]))
    """
    log_probs = emission_log_probs if time_major else emission_log_probs.transpose(0, 1)
    mask_tm = mask if time_major else mask.transpose(0, 1)
    offsets = log_probs.amax(dim=-1)
    # A step impossible under every state keeps offset -inf (log-likelihood -inf) but must not
    # produce NaN from (-inf) - (-inf).
    offsets = torch.where(torch.isfinite(offsets) & mask_tm, offsets, torch.zeros_like(offsets))
    shifted = log_probs - offsets.unsqueeze(-1)
    if not bool(mask_tm.all()):
        shifted = shifted.masked_fill(~mask_tm.unsqueeze(-1), 0.0)
    impossible = ~torch.isfinite(log_probs.amax(dim=-1)) & mask_tm
    if bool(impossible.any()):
        offsets = offsets.masked_fill(impossible, -math.inf)
    return shifted.exp_().contiguous(), offsets


def scale_state_major(
    log_probs: torch.Tensor, mask_tm: torch.Tensor | None = None, *, base_two: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Emission log-densities to per-step scaled probabilities, in place, state-major.

    The layout (max_length, n_states, n_sequences) is the one the time-step loops use, so
    emissions produced in it go through the e-step without a transposed copy. Each step is
    shifted so that its largest log-density is zero, then exponentiated in place: a few passes
    over the tensor and no temporaries of its size. The exponential is taken in base two
    (`exp2`, about three times faster than `exp` on CPU); natural log-densities are multiplied
    by log2(e) first, and callers that can produce base-two log-densities directly (the
    Gaussian emissions, by scaling their weights) skip that pass with `base_two`.

    Args:
        log_probs: (max_length, n_states, n_sequences) log p(x_t | z_t = s) (log2 when
            `base_two`); overwritten.
        mask_tm: (max_length, n_sequences) bool, True on real steps; None when all are real.
        base_two: whether `log_probs` holds base-two logarithms.

    Returns:
        `(emission_probs, log_offsets)`: `log_probs`' storage holding the scaled probabilities,
        and (max_length, n_sequences) offsets in natural-log units whatever `base_two`; padded
        steps get probability one in every state and offset zero, and a step impossible under
        every state gets offset -inf.

    Example:
        >>> probs, offsets = scale_state_major(torch.tensor([[[2.0], [2.0 - math.log(4)]]]))
        >>> [round(p, 12) for p in probs.squeeze().tolist()], offsets.tolist()
        ([1.0, 0.25], [[2.0]])
    """
    offsets = log_probs.amax(dim=1)
    # One sum tells whether every offset is finite (an infinite or NaN entry makes it non-finite)
    # without an elementwise mask; a false alarm (a sum overflowing) only takes the careful path.
    all_finite = bool(torch.isfinite(offsets.sum()))
    if not all_finite:
        # Keep (-inf) - (-inf) = NaN out: shift impossible steps by zero (their probabilities
        # are exp(-inf) = 0) and record -inf, so the log-likelihood is -inf.
        finite = torch.isfinite(offsets)
        offsets = torch.where(finite, offsets, torch.zeros_like(offsets))
    log_probs.sub_(offsets.unsqueeze(1))
    if base_two:
        offsets = offsets * _LN_2
    else:
        log_probs.mul_(_LOG2_E)
    log_probs.exp2_()
    if not all_finite:
        offsets = offsets.masked_fill(~finite, -math.inf)
    if mask_tm is not None:
        neutral_padding(log_probs, offsets, mask_tm)
    return log_probs, offsets


def neutral_padding(
    emission_probs: torch.Tensor, log_offsets: torch.Tensor, mask_tm: torch.Tensor
) -> None:
    """Give padded steps probability one in every state and offset zero (in place).

    Such steps leave the forward and backward recursions unchanged, so sequences of different
    lengths share one loop.

    Example:
        >>> probs, offsets = torch.zeros(2, 2, 1), torch.zeros(2, 1)
        >>> neutral_padding(probs, offsets, torch.tensor([[True], [False]]))
        >>> probs[:, :, 0].tolist()
        [[0.0, 0.0], [1.0, 1.0]]
    """
    padded = ~mask_tm
    emission_probs.masked_fill_(padded.unsqueeze(1), 1.0)
    log_offsets.masked_fill_(padded, 0.0)


def _state_major_copy(log_probs_tm: torch.Tensor) -> torch.Tensor:
    """A fresh (T, S, B) copy of time-major (T, B, S) values, safe to overwrite."""
    return log_probs_tm.transpose(1, 2).clone(memory_format=torch.contiguous_format)


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


@dataclass
class ExpectedStatistics:
    """What one e-step over a batch of sequences returns.

    Attributes:
        log_likelihood: (n_sequences,) log p(x) of each sequence.
        posteriors: (n_sequences, max_length, n_states) p(z_t | x), zero on padded steps
            (time-major, (max_length, n_sequences, n_states), when computed time-major;
            state-major, (max_length, n_states, n_sequences), from
            `expected_statistics_state_major`).
        start_counts: (n_states,) expected number of sequences starting in each state.
        transition_counts: (n_states, n_states) expected number of i -> j transitions.
    """

    log_likelihood: torch.Tensor
    posteriors: torch.Tensor
    start_counts: torch.Tensor
    transition_counts: torch.Tensor


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


def _total_log_likelihood(
    scales: torch.Tensor, offsets: torch.Tensor, mask_tm: torch.Tensor | None
) -> torch.Tensor:
    log_scales = scales.log()
    if mask_tm is not None:
        log_scales = torch.where(mask_tm, log_scales, torch.zeros_like(log_scales))
    return (log_scales + offsets).sum(0)


def _nonzero(norm: torch.Tensor) -> torch.Tensor:
    # A zero normaliser means an impossible observation: its log (-inf) already records that,
    # and dividing by one instead of zero keeps NaN out of the later steps.
    return torch.where(norm > 0, norm, torch.ones_like(norm))


def normalize_rows(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Normalise non-negative weights along `dim` into probabilities (rows of zeros stay zero).

    Example:
        >>> normalize_rows(torch.tensor([[1.0, 3.0], [0.0, 0.0]])).tolist()
        [[0.25, 0.75], [0.0, 0.0]]
    """
    total = values.sum(dim, keepdim=True)
    return values / _nonzero(total)
