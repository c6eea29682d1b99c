"""Layout, scaling and workspace helpers shared by the HMM recursions.

The e-step's arrays live in the state-major layout (max_length, n_states, n_sequences) of the
time-step loops, optionally stored state-outer (`state_major_empty`); this module holds those
layout helpers, the per-step emission scaling, the reusable `Workspace`, the thread setting of
the time-step loops and the result type `ExpectedStatistics`. See `probgen.hmm.inference`.

Example:
    >>> import torch
    >>> from probgen.hmm.layout import length_mask, normalize_rows
    >>> length_mask(torch.tensor([1, 3]), 2, 3, torch.device("cpu")).tolist()
    [[True, False, False], [True, True, True]]
    >>> normalize_rows(torch.tensor([[1.0, 3.0]])).tolist()
    [[0.25, 0.75]]
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from probgen.core.threads import THREADED_WORK, small_op_threads

# Per-step work (n_sequences * n_states**2) up to which time-step loops run single-threaded
# (the library-wide rule of `probgen.core.threads`).
THREADED_STEP_WORK = THREADED_WORK

_LN_2 = math.log(2.0)
_LOG2_E = 1.0 / _LN_2


def step_loop_threads(
    tensor: torch.Tensor, n_sequences: int, n_states: int
) -> contextlib.AbstractContextManager[None]:
    """Context for a time-step loop: the thread policy of `probgen.core.threads`.

    One intra-op thread while the steps are small CPU work (n_sequences * n_states**2 at most
    `THREADED_STEP_WORK`), unless the user set `probgen.set_num_threads` or
    `PROBGEN_NUM_THREADS`; the caller's setting is restored afterwards.

    Example:
        >>> with step_loop_threads(torch.zeros(1), 10, 3):
        ...     torch.get_num_threads()
        1
    """
    return small_op_threads(n_sequences * n_states * n_states, tensor)


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
    log_probs: torch.Tensor,
    mask_tm: torch.Tensor | None = None,
    *,
    base_two: bool = False,
    out: torch.Tensor | None = None,
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
        out: where to write the probabilities instead of `log_probs`, e.g. a float32 buffer
            for float64 log-densities: the shift is taken at `log_probs`' precision and only
            the shifted values are rounded to `out`'s dtype (then exponentiated there). The
            offsets keep `log_probs`' dtype.

    Returns:
        `(emission_probs, log_offsets)`: `log_probs`' storage (or `out`) holding the scaled
        probabilities, and (max_length, n_sequences) offsets in natural-log units whatever
        `base_two`; padded
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
    if out is not None:
        log_probs = out.copy_(log_probs)
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
