"""WaveNet generation: cached dilated states (one queue per layer) and the naive recomputation.

Fast generation (Paine et al., 2016, "Fast Wavenet Generation Algorithm"): a dilated causal
convolution with kernel k and dilation d needs, for a new output step, its input at the current
step and at d, 2d, ..., (k-1)d steps back. Each layer keeps those past inputs in a queue of
(k-1)d entries, so one step costs one column of the network, O(layers), instead of a pass over
the whole receptive field, O(layers x receptive field). The naive path recomputes the network
over the last `receptive_field` inputs at each step; both draw each step from the same uniform
numbers (inverse CDF), so for the same seed they give the same sequences.

Example:
    >>> import torch
    >>> from probgen.deep.wavenet import WaveNet
    >>> model = WaveNet(n_levels=3, residual_channels=4, skip_channels=4, n_layers=2)
    >>> model = model.init_for_evaluation()
    >>> fast = model.sample(2, length=8, seed=0)
    >>> torch.equal(fast, model.sample(2, length=8, seed=0, cached=False))
    True
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
import torch.nn.functional as F

# The model is a `probgen.deep.wavenet.WaveNet`; it is not imported here (not even for type
# checking), because wavenet.py imports this module and the layout forbids cycles.
WaveNet = Any

__all__ = ["generate", "draw_step"]


def draw_step(model: WaveNet, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One step per row from logits (n, n_outputs): levels (n,) or binary frames (n, K).

    Inverse-CDF draws from `torch.rand`, so that two paths with the same generator and (up to
    rounding) the same logits give the same values.
    """
    uniform = torch.rand(
        logits.shape[0] if model.output == "categorical" else logits.shape,
        generator=generator,
        device=logits.device,
        dtype=torch.float64,
    )
    if model.output == "bernoulli":
        return (uniform < torch.sigmoid(logits.double())).to(logits.dtype)
    cdf = torch.softmax(logits.double(), -1).cumsum(-1)
    level = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None])
    return level.squeeze(-1).clamp(max=logits.shape[-1] - 1)


def generate(
    model: WaveNet,
    n: int,
    length: int,
    condition: torch.Tensor | None,
    generator: torch.Generator,
    *,
    cached: bool = True,
) -> torch.Tensor:
    """Draw `n` sequences of `length` steps (under no_grad, the model in eval mode)."""
    if cached:
        return _generate_cached(model, n, length, condition, generator)
    return _generate_naive(model, n, length, condition, generator)


def _begin_input(model: WaveNet, n: int) -> torch.Tensor:
    begin = torch.zeros(n, model.n_features + 1, dtype=model.dtype, device=model.device)
    begin[:, -1] = 1
    return begin


def _step_input(model: WaveNet, value: torch.Tensor) -> torch.Tensor:
    """Network input column (n, D + 1) of one drawn step (begin flag 0)."""
    features = model.features(value[:, None])[:, 0]
    return F.pad(features, (0, 1))


def _output(model: WaveNet, n: int, length: int) -> torch.Tensor:
    if model.output == "categorical":
        return torch.empty(n, length, dtype=torch.long, device=model.device)
    return torch.empty(n, length, model.n_inputs, dtype=model.dtype, device=model.device)


def _generate_cached(
    model: WaveNet,
    n: int,
    length: int,
    condition: torch.Tensor | None,
    generator: torch.Generator,
) -> torch.Tensor:
    # Per layer: the convolution weight as (k*R, 2G) with tap j of channel r at row j*R + r
    # (matching the concatenated taps below), and a queue of the layer's past (k-1)d inputs,
    # zeros before the start as in the causal padding of the full pass. The skip outputs of all
    # layers are one linear map of all gated activations, applied once per step.
    kernel = model.kernel_size
    split = model.residual_channels
    plans = []
    skip_weights, skip_bias = [], torch.zeros((), dtype=model.dtype, device=model.device)
    for layer, bias in zip(model.layers, model.gate_biases(condition)):
        dilated_bias = layer.dilated.bias if bias is None else layer.dilated.bias + bias
        weight = layer.dilated.weight.permute(2, 1, 0).reshape(-1, 2 * layer.gate_channels)
        zero = torch.zeros(n, split, dtype=model.dtype, device=model.device)
        queue = deque([zero] * layer.padding, maxlen=layer.padding)
        out_weight, out_bias = layer.output.weight[:, :, 0], layer.output.bias
        plans.append((layer, weight, dilated_bias, out_weight[:split].T, out_bias[:split], queue))
        skip_weights.append(out_weight[split:].T)
        skip_bias = skip_bias + out_bias[split:]
    skip_weight = torch.cat(skip_weights, 0)
    input_weight, input_bias = model.input.weight[:, :, 0], model.input.bias
    hidden_weight, hidden_bias = model.head_hidden.weight[:, :, 0], model.head_hidden.bias
    output_weight, output_bias = model.head_output.weight[:, :, 0], model.head_output.bias
    draws = _output(model, n, length)
    column = _begin_input(model, n)
    for step in range(length):
        hidden = F.linear(column, input_weight, input_bias)
        gated_all = []
        for layer, weight, bias, residual_weight, residual_bias, queue in plans:
            taps = [queue[j * layer.dilation] for j in range(kernel - 1)]
            pre = torch.addmm(bias, torch.cat([*taps, hidden], 1), weight)
            filter_part, gate_part = pre.chunk(2, 1)
            gated = torch.tanh(filter_part) * torch.sigmoid(gate_part)
            gated_all.append(gated)
            queue.append(hidden)  # maxlen drops the oldest entry
            hidden = torch.addmm(residual_bias, gated, residual_weight) + hidden
        skip = torch.addmm(skip_bias, torch.cat(gated_all, 1), skip_weight)
        head = F.linear(torch.relu(skip), hidden_weight, hidden_bias)
        logits = F.linear(torch.relu(head), output_weight, output_bias)
        value = draw_step(model, logits, generator)
        draws[:, step] = value
        column = _step_input(model, value)
    return draws


def _generate_naive(
    model: WaveNet,
    n: int,
    length: int,
    condition: torch.Tensor | None,
    generator: torch.Generator,
) -> torch.Tensor:
    # The network inputs of every step, filled in as the steps are drawn; the output at t needs
    # inputs t - receptive_field + 1 .. t only, so the recomputation is cut to that window.
    inputs = torch.zeros(n, model.n_features + 1, length, dtype=model.dtype, device=model.device)
    inputs[:, :, 0] = _begin_input(model, n)
    window = model.receptive_field
    draws = _output(model, n, length)
    for step in range(length):
        start = max(0, step - window + 1)
        logits = model.logits_of_inputs(inputs[:, :, start : step + 1], condition)[:, -1]
        value = draw_step(model, logits, generator)
        draws[:, step] = value
        if step + 1 < length:
            inputs[:, :, step + 1] = _step_input(model, value)
    return draws
