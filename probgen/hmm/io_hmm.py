"""Input-output HMMs: transitions (and optionally the first state) driven by covariates.

`HMM(..., transition_inputs=k)` gives every step t >= 1 of sequence b its own transition
matrix, a softmax-linear function of that step's input u[b, t] (k numbers):

    p(z_t = j | z_{t-1} = i, u_t) = softmax_j( log A[i, j] + sum_k u[b, t, k] W[i, k, j] ),

with the usual transition matrix A (`transition_probs`) as the bias and the weights W
(`transition_input_weights`, shape (n_states, k, n_states)). With ``start_inputs=True`` the
first state is softmax( log pi + u[b, 0] V ) with V (`start_input_weights`, (k, n_states)).
Zero weights give the plain HMM. The softmax is unchanged by adding a constant to a row of
logits, so the weights are kept centred over the destination state (each W[i, k, :] and
V[k, :] sums to zero): that choice fixes them uniquely without changing the model.

Inference is the scaled forward-backward of `probgen.hmm.inference` with one (n_states,
n_states) matrix per sequence and step (`forward_backward`, `viterbi_varying`); padded steps get
the identity matrix and emission probability one, so ragged batches need no special case.
Fitting is generalised EM on the shared driver (`probgen.fitting.em.run_em`): the e-step gives
state posteriors and per-step pair posteriors, the emission m-step is the HMM's closed form,
and the m-step of the bias and weights is a few L-BFGS steps (strong Wolfe line search, so the
expected complete log-likelihood, and with it the likelihood, never decreases) on that
expected complete log-likelihood, a multinomial logistic regression weighted by the pair
posteriors.

Example:
    >>> import torch
    >>> from probgen.hmm import HMM
    >>> hmm = HMM(2, emission="categorical", n_symbols=2, transition_inputs=1)
    >>> hmm = hmm.set_parameters(emission_probs=[[0.9, 0.1], [0.1, 0.9]],
    ...                          transition_input_weights=[[[-2.0, 2.0]], [[-2.0, 2.0]]])
    >>> inputs = torch.tensor([[[0.0], [1.0], [-1.0]]])
    >>> hmm.log_prob([[0, 1, 0]], inputs=inputs).shape
    torch.Size([1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from probgen.core.data import Sequences, as_sequences, as_tensor, check_positive_int
from probgen.core.errors import DataError
from probgen.fitting.em import EMResult, fit_restarts, run_em, snapshot
from probgen.hmm.layout import _nonzero, length_mask, step_loop_threads
from probgen.hmm.parameters import _normalize_with_fallback
from probgen.hmm.sequences import _Batch

# L-BFGS iterations of one m-step of the input weights (generalised EM: improving the expected
# complete log-likelihood, not maximising it, is enough for the likelihood to increase).
M_STEP_ITERATIONS = 20
__all__ = [
    "InputStatistics",
    "M_STEP_ITERATIONS",
    "check_inputs",
    "forward_backward",
    "start_log_probs",
    "transition_log_probs",
    "viterbi_varying",
]


@dataclass
class InputStatistics:
    """What `forward_backward` returns.

    Attributes:
        log_likelihood: (n_sequences,) log p(x | u).
        posteriors: (n_sequences, max_length, n_states) p(z_t | x, u), zero on padding.
        pair_posteriors: (n_sequences, max_length, n_states, n_states), entry [b, t, i, j] =
            p(z_{t-1} = i, z_t = j | x, u) for real steps t >= 1, zero at t = 0 and on padding
            (None unless asked for).
    """

    log_likelihood: torch.Tensor
    posteriors: torch.Tensor | None
    pair_posteriors: torch.Tensor | None


# ---- the softmax-linear link -----------------------------------------------------------------
def transition_log_probs(
    transition_probs: torch.Tensor, weights: torch.Tensor, inputs: torch.Tensor
) -> torch.Tensor:
    """Per-step log transition matrices, (n_sequences, max_length, n_states, n_states).

    Entry [b, t] is log p(z_t | z_{t-1}, u[b, t]) (row: previous state); step 0's matrix is
    computed too but never used.

    Args:
        transition_probs: (n_states, n_states) bias matrix A (rows sum to one).
        weights: (n_states, n_inputs, n_states) W.
        inputs: (n_sequences, max_length, n_inputs).

    Example:
        >>> logs = transition_log_probs(torch.full((2, 2), 0.5), torch.zeros(2, 1, 2),
        ...                             torch.ones(3, 4, 1))
        >>> logs.shape, round(logs.exp()[0, 0, 0, 0].item(), 4)
        (torch.Size([3, 4, 2, 2]), 0.5)
    """
    bias = transition_probs.clamp_min(1e-30).log()
    return torch.log_softmax(bias + torch.einsum("btk,ikj->btij", inputs, weights), -1)


def start_log_probs(
    start_probs: torch.Tensor, start_weights: torch.Tensor | None, inputs: torch.Tensor
) -> torch.Tensor:
    """log p(z_0 | u[b, 0]), (n_sequences, n_states); the plain start when weights are None."""
    bias = start_probs.clamp_min(1e-30).log()
    if start_weights is None:
        return torch.log_softmax(bias, -1).expand(inputs.shape[0], -1)
    return torch.log_softmax(bias + inputs[:, 0] @ start_weights, -1)


# ---- batched recursions with per-step transition matrices ------------------------------------
def forward_backward(
    log_start: torch.Tensor,
    log_transitions: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    statistics: bool = True,
) -> InputStatistics:
    """Scaled forward(-backward) with a transition matrix per sequence and step.

    Args:
        log_start: (n_sequences, n_states) log p(z_0).
        log_transitions: (n_sequences, max_length, n_states, n_states); [b, t] is used for the
            move into step t (t >= 1).
        emission_log_probs: (n_sequences, max_length, n_states).
        lengths: (n_sequences,) or None (every sequence has max_length steps).
        statistics: also run the backward pass for posteriors and pair posteriors.

    Example:
        >>> logs = torch.full((1, 3, 2, 2), 0.5).log()
        >>> out = forward_backward(torch.full((1, 2), 0.5).log(), logs, torch.zeros(1, 3, 2))
        >>> out.log_likelihood.tolist(), out.posteriors.sum(-1).tolist()
        ([0.0], [[1.0, 1.0, 1.0]])
    """
    n_sequences, max_length, n_states = emission_log_probs.shape
    mask = length_mask(lengths, n_sequences, max_length, emission_log_probs.device)
    zero = torch.zeros((), dtype=emission_log_probs.dtype, device=emission_log_probs.device)
    log_probs = torch.where(mask.unsqueeze(-1), emission_log_probs, zero)
    offsets = log_probs.detach().amax(-1, keepdim=True)
    offsets = torch.where(torch.isfinite(offsets), offsets, zero)
    probs = (log_probs - offsets).exp()
    eye = torch.eye(n_states, dtype=probs.dtype, device=probs.device)
    # Padded steps move nowhere, so the filtered state and the backward vector pass unchanged.
    matrices = torch.where(mask[:, :, None, None], log_transitions.exp(), eye)
    tiny = torch.finfo(probs.dtype).tiny
    alphas = probs.new_empty(n_sequences, max_length, n_states) if statistics else None
    scales = probs.new_empty(n_sequences, max_length)
    with step_loop_threads(probs, n_sequences, n_states):
        alpha = log_start.exp() * probs[:, 0]
        for t in range(max_length):
            if t > 0:
                alpha = torch.bmm(alpha.unsqueeze(1), matrices[:, t]).squeeze(1) * probs[:, t]
            norm = alpha.sum(-1)
            scales[:, t] = norm
            alpha = alpha / norm.clamp_min(tiny).unsqueeze(-1)
            if alphas is not None:
                alphas[:, t] = alpha
        log_likelihood = scales.log().sum(-1) + offsets.squeeze(-1).sum(-1)
        if alphas is None:
            return InputStatistics(log_likelihood, None, None)
        # b_t / c_t: what the backward pass and the pair posteriors multiply by.
        weighted = probs / _nonzero(scales).unsqueeze(-1)
        betas = torch.ones_like(alphas)
        for t in range(max_length - 2, -1, -1):
            carried = (weighted[:, t + 1] * betas[:, t + 1]).unsqueeze(-1)
            betas[:, t] = torch.bmm(matrices[:, t + 1], carried).squeeze(-1)
    posteriors = alphas * betas
    posteriors = posteriors / _nonzero(posteriors.sum(-1, keepdim=True))
    posteriors = posteriors * mask.unsqueeze(-1)
    pairs = torch.zeros_like(matrices)
    if max_length > 1:
        right = (weighted[:, 1:] * betas[:, 1:]).unsqueeze(-2)
        pairs[:, 1:] = alphas[:, :-1].unsqueeze(-1) * matrices[:, 1:] * right
        real = mask[:, 1:, None, None]
        total = pairs[:, 1:].sum((-2, -1), keepdim=True)
        # Each step's pair table sums to one; renormalising only removes rounding (and makes an
        # impossible sequence's table zero rather than NaN).
        pairs[:, 1:] = torch.where(real, pairs[:, 1:] / _nonzero(total), zero)
    return InputStatistics(log_likelihood, posteriors, pairs)


def viterbi_varying(
    log_start: torch.Tensor,
    log_transitions: torch.Tensor,
    emission_log_probs: torch.Tensor,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Most probable state paths with per-step transition matrices, and log p(x, z* | u).

    Shapes as in `forward_backward`. Returns `(paths, log_probs)`: paths (n_sequences,
    max_length) long, -1 past each sequence's end, and (n_sequences,).

    Example:
        >>> logs = torch.tensor([[0.9, 0.1], [0.1, 0.9]]).log().expand(1, 2, 2, 2)
        >>> emissions = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]]).log()
        >>> viterbi_varying(torch.tensor([[0.5, 0.5]]).log(), logs, emissions)[0].tolist()
        [[0, 0]]
    """
    n_sequences, max_length, n_states = emission_log_probs.shape
    device = emission_log_probs.device
    mask = length_mask(lengths, n_sequences, max_length, device)
    zero = torch.zeros((), dtype=emission_log_probs.dtype, device=device)
    log_probs = torch.where(mask.unsqueeze(-1), emission_log_probs, zero)
    # log of the identity on padded steps: the path stays where it ended.
    log_eye = torch.eye(n_states, dtype=log_probs.dtype, device=device).log()
    log_matrices = torch.where(mask[:, :, None, None], log_transitions, log_eye)
    backpointers = torch.zeros(n_sequences, max_length, n_states, dtype=torch.long, device=device)
    delta = log_start + log_probs[:, 0]
    for t in range(1, max_length):
        scores, backpointers[:, t] = (delta.unsqueeze(-1) + log_matrices[:, t]).max(1)
        delta = scores + log_probs[:, t]
    best, state = delta.max(-1)
    paths = torch.empty(n_sequences, max_length, dtype=torch.long, device=device)
    paths[:, -1] = state
    for t in range(max_length - 1, 0, -1):
        state = backpointers[:, t].gather(1, state.unsqueeze(1)).squeeze(1)
        paths[:, t - 1] = state
    return paths.masked_fill(~mask, -1), best


# ---- checking what users pass ----------------------------------------------------------------
def split_pair(model: Any, sequences: Any, inputs: Any) -> tuple[Any, Any]:
    """`(sequences, inputs)`, also from the pair `sequences=(sequences, inputs)`.

    The pair form lets generic code (`probgen.core.testing.check_density`, recipes) pass an
    input-output HMM's data as one object.

    Raises:
        DataError: inputs missing for a model with `transition_inputs`, or given to one without.
    """
    n_inputs = model.transition_inputs
    if inputs is None and n_inputs and isinstance(sequences, tuple) and len(sequences) == 2:
        sequences, inputs = sequences
    if n_inputs and inputs is None:
        raise DataError(
            f"inputs is required: this HMM has transition_inputs={n_inputs}; give "
            f"inputs=... of shape (n_sequences, length, {n_inputs}) or the pair "
            "(sequences, inputs)"
        )
    if not n_inputs and inputs is not None:
        raise DataError(
            "inputs was given but this HMM has transition_inputs=0; build it with "
            "HMM(..., transition_inputs=k) to let transitions depend on k inputs per step"
        )
    return sequences, inputs


def check_inputs(
    inputs: Any, data: Sequences, n_inputs: int, *, dtype: torch.dtype, device: Any
) -> torch.Tensor:
    """`inputs` as a (n_sequences, max_length, n_inputs) tensor matching `data`, zero-padded.

    Accepted: a list of (length_i, n_inputs) arrays, one per sequence and as long as it, or
    one (n_sequences, max_length, n_inputs) array padded as the sequences are.

    Raises:
        DataError: naming ``inputs`` (or ``inputs[i]``) for a wrong count, length or width, or
            non-finite values.
    """
    padded = not isinstance(inputs, (list, tuple, Sequences))
    if padded:
        tensor = as_tensor(inputs, "inputs", dtype=dtype)
        if tensor.dim() != 3:
            raise DataError(
                f"inputs has shape {tuple(tensor.shape)}; expected (n_sequences, length, "
                f"{n_inputs})"
            )
    converted = as_sequences(inputs, "inputs", event_shape=(n_inputs,), dtype=dtype)
    if converted.n_sequences != data.n_sequences:
        raise DataError(
            f"inputs has {converted.n_sequences} sequences, sequences has {data.n_sequences}"
        )
    if padded:
        if converted.max_length != data.max_length:
            raise DataError(
                f"inputs has {converted.max_length} steps per sequence, the sequences "
                f"{data.max_length}; give one input row per step"
            )
    else:
        different = (converted.lengths != data.lengths.cpu()).nonzero()
        if different.numel():
            index = int(different[0])
            raise DataError(
                f"inputs[{index}] has {int(converted.lengths[index])} steps, sequences[{index}] "
                f"has {int(data.lengths[index])}; give one input row per step"
            )
    values = converted.values
    mask = data.mask.to(values.device).unsqueeze(-1)
    if not bool(torch.isfinite(values.masked_fill(~mask, 0.0)).all()):
        raise DataError("inputs contains NaN or infinite values")
    return values.masked_fill(~mask, 0.0).to(device)


def _sequences_and_inputs(model: Any, sequences: Any, inputs: Any) -> tuple[Sequences, Any]:
    sequences, inputs = split_pair(model, sequences, inputs)
    data = model._prepare(sequences)
    values = check_inputs(
        inputs, data, model.transition_inputs, dtype=model.dtype, device=model.device
    )
    return data, values


def _log_parameters(model: Any, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    weights = getattr(model, "start_input_weights", None) if model.start_inputs else None
    return (
        start_log_probs(model.start_probs, weights, inputs),
        transition_log_probs(model.transition_probs, model.transition_input_weights, inputs),
    )


# ---- what the HMM methods call -----------------------------------------------------------------
def run_inference(model: Any, sequences: Any, inputs: Any, what: str) -> Any:
    """`log_prob`, `posterior` or `viterbi` (`what`) of an input-output HMM."""
    with torch.no_grad():
        data, values = _sequences_and_inputs(model, sequences, inputs)
        log_start, log_transitions = _log_parameters(model, values)
        emission_log_probs = model._emission_log_probs(data)
        if what == "viterbi":
            return viterbi_varying(log_start, log_transitions, emission_log_probs, data.lengths)
        result = forward_backward(
            log_start,
            log_transitions,
            emission_log_probs,
            data.lengths,
            statistics=what == "posterior",
        )
        return result.posteriors if what == "posterior" else result.log_likelihood


def sample_with_inputs(
    model: Any, n: int, length: int, inputs: Any, generator: torch.Generator
) -> torch.Tensor:
    """States (n, length) of an input-output HMM driven by `inputs` (n, length, n_inputs)."""
    if inputs is None:
        raise DataError(
            f"inputs is required to sample: this HMM has transition_inputs="
            f"{model.transition_inputs}; give sample(n, length=T, inputs=...) of shape "
            f"(n, T, {model.transition_inputs})"
        )
    shape = (n, length, model.transition_inputs)
    values = as_tensor(inputs, "inputs", dtype=model.dtype)
    if tuple(values.shape) != shape:
        raise DataError(f"inputs has shape {tuple(values.shape)}; sample needs {shape}")
    values = values.to(model.device)
    log_start, log_transitions = _log_parameters(model, values)
    uniform = torch.rand(
        length, n, 1, dtype=model.dtype, generator=generator, device=generator.device
    ).to(model.device)
    last = model.n_states - 1
    rows = torch.arange(n, device=model.device)
    states = torch.empty(n, length, dtype=torch.long, device=model.device)
    state = torch.searchsorted(log_start.exp().cumsum(-1).contiguous(), uniform[0])
    states[:, 0] = state = state.squeeze(1).clamp_max(last)
    for t in range(1, length):
        cdf = log_transitions[rows, t, state].exp().cumsum(-1).contiguous()
        state = torch.searchsorted(cdf, uniform[t]).squeeze(1).clamp_max(last)
        states[:, t] = state
    return states


def n_input_parameters(model: Any) -> int:
    """Free parameters of the centred input weights."""
    n_states, n_inputs = model.n_states, model.transition_inputs
    return n_inputs * (n_states - 1) * (n_states + (1 if model.start_inputs else 0))


# ---- fitting ---------------------------------------------------------------------------------
def fit_with_inputs(
    model: Any,
    sequences: Any,
    inputs: Any,
    *,
    states: Any,
    seed: int | None,
    warm_start: bool,
) -> EMResult:
    """Generalised EM of an input-output HMM, restarts included; the kept run's record."""
    sequences, inputs = split_pair(model, sequences, inputs)
    if states is not None:
        raise DataError("states (partly labelled sequences) cannot be combined with inputs yet")
    if model.batch_size is not None:
        raise DataError(
            "batch_size (minibatch EM) is not available with transition_inputs; use batch_size=None"
        )
    data = model._prepare(sequences, fitting=True)
    emission = model._ensure_emission()
    if not emission.supports_em:
        raise DataError("custom torch-distribution emissions cannot be combined with inputs yet")
    values = check_inputs(
        inputs, data, model.transition_inputs, dtype=model.dtype, device=model.device
    )
    batch = _Batch.of(data)
    generator = torch.Generator(device=model.device)
    chosen_seed = model.seed if seed is None else seed
    if chosen_seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(chosen_seed))
    initialise_all = set(model.init_params) == {"start", "transitions", "emissions"}
    kept = None if initialise_all else snapshot(model)
    if kept is not None and "emissions" not in model.init_params and not model.fitted_:
        raise DataError(
            "init_params leaves out 'emissions', so fit starts from the current emission "
            "parameters: give them with set_parameters first"
        )

    def initialize(restart: int) -> None:
        model._initialize(batch, generator, restart, kept)
        for group, name in (
            ("transitions", "transition_input_weights"),
            ("start", "start_input_weights"),
        ):
            if hasattr(model, name):
                value = getattr(model, name)
                fresh = kept[name].clone() if group not in model.init_params and kept else None
                setattr(model, name, torch.zeros_like(value) if fresh is None else fresh)

    def final_log_likelihood(_: EMResult) -> float:
        total = float(run_inference(model, data, values, "log_prob").sum())
        return total if math.isfinite(total) else -math.inf

    return fit_restarts(
        model,
        model.n_init,
        initialize,
        lambda: _generalised_em(model, batch, data, values),
        warm_start=warm_start and model.fitted_,
        score=None if model.n_init == 1 else final_log_likelihood,
    )


def _generalised_em(model: Any, batch: _Batch, data: Sequences, inputs: torch.Tensor) -> EMResult:
    n_steps = int(data.lengths.sum())
    emission = model._ensure_emission()
    mask = data.mask
    log_prior = 0.0

    def iterate() -> float:
        nonlocal log_prior
        with torch.no_grad():
            log_start, log_transitions = _log_parameters(model, inputs)
            result = forward_backward(
                log_start, log_transitions, model._emission_log_probs(data), data.lengths
            )
        total = float(result.log_likelihood.sum())
        if not math.isfinite(total):
            return total  # run_em restores the last good parameters and raises
        log_prior = float(model.log_prior())
        assert result.posteriors is not None and result.pair_posteriors is not None
        update = model.update_params
        if "emissions" in update:
            weights = result.posteriors.transpose(0, 1)[batch.mask_tm]
            emission.m_step(emission.statistics(batch.observed_values, weights))
        if "start" in update and not model.start_inputs:
            model.start_probs = _normalize_with_fallback(
                result.posteriors[:, 0].sum(0) + model.pseudocount, model.start_probs
            )
        _m_step_link(model, inputs, mask, result.posteriors[:, 0], result.pair_posteriors)
        return total

    rounding = 8 * torch.finfo(model.dtype).eps * n_steps
    return run_em(
        iterate,
        max_iter=model.max_iter,
        tol=model.tol,
        scale=n_steps,
        criterion="increase",
        objective=lambda total: total + log_prior,
        decrease_tolerance=lambda previous: max(1e-6 * max(1.0, abs(previous)), rounding),
        guard=model,
        what="input-output HMM EM",
        hint="try pseudocount > 0 or a larger covariance_floor",
    )


def _m_step_link(
    model: Any,
    inputs: torch.Tensor,
    mask: torch.Tensor,
    first_posteriors: torch.Tensor,
    pair_posteriors: torch.Tensor,
) -> None:
    """L-BFGS on the expected complete log-likelihood of the softmax-linear links.

    The transition part is a multinomial logistic regression of the next state on the
    previous state and the input, each (step, previous, next) weighted by its pair posterior;
    the start part (``start_inputs``) the same for the first state. The Dirichlet pseudocount
    on the bias rows is the prior that `log_prior` adds.
    """
    update = model.update_params
    fit_transitions = "transitions" in update
    fit_start = "start" in update and model.start_inputs
    if not (fit_transitions or fit_start):
        return
    real = mask[:, 1:]
    step_inputs = inputs[:, 1:][real]  # (n_transitions, n_inputs)
    pair_weights = pair_posteriors[:, 1:][real]  # (n_transitions, n_states, n_states)
    count = float(pair_weights.sum()) + float(first_posteriors.sum())
    variables = {
        "bias": model.transition_probs.clamp_min(1e-30).log().clone(),
        "weights": model.transition_input_weights.clone(),
        "start_bias": model.start_probs.clamp_min(1e-30).log().clone(),
    }
    if model.start_inputs:
        variables["start_weights"] = model.start_input_weights.clone()
    trained = (["bias", "weights"] if fit_transitions else []) + (
        ["start_bias", "start_weights"] if fit_start else []
    )
    for name in trained:
        variables[name].requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [variables[name] for name in trained],
        lr=1.0,
        max_iter=M_STEP_ITERATIONS,
        line_search_fn="strong_wolfe",
    )
    pseudocount = model.pseudocount

    def objective() -> torch.Tensor:
        value = torch.zeros((), dtype=inputs.dtype, device=inputs.device)
        if fit_transitions:
            products = torch.einsum("nk,ikj->nij", step_inputs, variables["weights"])
            logits = variables["bias"] + products
            value = value + (pair_weights * torch.log_softmax(logits, -1)).sum()
            if pseudocount:
                value = value + pseudocount * torch.log_softmax(variables["bias"], -1).sum()
        if fit_start:
            logits = variables["start_bias"] + inputs[:, 0] @ variables["start_weights"]
            value = value + (first_posteriors * torch.log_softmax(logits, -1)).sum()
            if pseudocount:
                value = value + pseudocount * torch.log_softmax(variables["start_bias"], -1).sum()
        return -value / max(count, 1.0)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        if fit_transitions:
            model.transition_probs = torch.softmax(variables["bias"].detach(), -1)
            weights = variables["weights"].detach()
            model.transition_input_weights = weights - weights.mean(-1, keepdim=True)
        if fit_start:
            model.start_probs = torch.softmax(variables["start_bias"].detach(), -1)
            weights = variables["start_weights"].detach()
            model.start_input_weights = weights - weights.mean(-1, keepdim=True)


def check_transition_inputs(value: Any) -> int:
    """The constructor's `transition_inputs`: a non-negative int."""
    if value == 0 and not isinstance(value, bool):
        return 0
    return check_positive_int(value, "transition_inputs")
