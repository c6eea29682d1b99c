"""WaveNet (van den Oord et al., 2016): dilated causal 1-D convolutions with exact `log_prob`.

A sequence x_0..x_{T-1} is modelled step by step, p(x) = prod_t p(x_t | x_<t, h), by a stack of
dilated causal convolutions (kernel k, dilations 1, 2, 4, ... repeated in cycles) with gated
tanh * sigmoid activations, residual connections and skip connections summed into a small
output head. The network reads the sequence shifted one step to the right behind a begin
step, so the output at t sees x_<t only. Two kinds of steps:

- `output="categorical"`: each x_t is a level 0..n_levels-1 (for audio: mu-law quantised
  samples, see `mu_law_encode` / `mu_law_decode`), a softmax over the levels;
- `output="bernoulli"`: each x_t is a binary frame of `n_channels` (a piano roll), the keys
  independent Bernoulli variables given the past.

An optional global conditioning vector h (one per sequence, `condition_dim` features) shifts
the gates of every layer. Generation keeps a queue of past activations per layer, so each new
step costs one column of the network instead of a pass over the receptive field
(`probgen.deep.wavenet_generation`).

Example:
    >>> import torch
    >>> from probgen.deep.wavenet import WaveNet
    >>> model = WaveNet(n_levels=4, residual_channels=8, skip_channels=8, n_layers=3)
    >>> model = model.init_for_evaluation()
    >>> model.log_prob(torch.tensor([[0, 1, 2, 3, 0]])).shape
    torch.Size([1])
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import Sequences, as_sequences, as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.fitting.settings import MODEL_SETTINGS, RenamedSettings

__all__ = ["WaveNet", "ResidualLayer", "mu_law_encode", "mu_law_decode"]

_MAX_SUPPORT = 2**16
_OUTPUTS = ("categorical", "bernoulli")


def mu_law_encode(waveform: Any, n_levels: int = 256) -> torch.Tensor:
    """Quantise a waveform in [-1, 1] to `n_levels` mu-law levels (mu = n_levels - 1).

    Args:
        waveform: real values in [-1, 1] (any shape).
        n_levels: number of levels (2..65536).

    Returns:
        Long tensor of the same shape with codes 0..n_levels-1.

    Example:
        >>> mu_law_encode(torch.tensor([-1.0, 0.0, 1.0])).tolist()
        [0, 128, 255]
    """
    n_levels = check_positive_int(n_levels, "n_levels", minimum=2)
    values = as_tensor(waveform, "waveform", min_value=-1.0, max_value=1.0)
    values = values.double() if not values.is_floating_point() else values
    mu = n_levels - 1
    compressed = torch.sign(values) * torch.log1p(mu * values.abs()) / math.log1p(mu)
    return ((compressed + 1) / 2 * mu + 0.5).floor().long().clamp(0, mu)


def mu_law_decode(codes: Any, n_levels: int = 256) -> torch.Tensor:
    """Waveform values in [-1, 1] of mu-law codes (the inverse of `mu_law_encode` up to rounding).

    Example:
        >>> mu_law_decode(torch.tensor([0, 255])).tolist()
        [-1.0, 1.0]
    """
    n_levels = check_positive_int(n_levels, "n_levels", minimum=2)
    values = as_tensor(codes, "codes", integer=True, min_value=0, max_value=n_levels - 1)
    return _mu_law_expand(values.double(), n_levels).float()


def _mu_law_expand(codes: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Waveform values of (unchecked) codes, in the codes' floating dtype."""
    mu = n_levels - 1
    compressed = codes / mu * 2 - 1
    return torch.sign(compressed) * torch.expm1(compressed.abs() * math.log1p(mu)) / mu


class ResidualLayer(nn.Module):
    """One WaveNet layer: dilated causal convolution, gate, residual and skip 1x1 outputs.

    Args:
        residual_channels: width R of the residual stream.
        gate_channels: width G of the gated activation (the convolution gives 2G).
        skip_channels: width S of the skip output.
        kernel_size: taps k of the dilated convolution.
        dilation: spacing d between taps.
        condition_dim: features of the global conditioning vector, or None.
    """

    def __init__(
        self,
        residual_channels: int,
        gate_channels: int,
        skip_channels: int,
        kernel_size: int,
        dilation: int,
        condition_dim: int | None,
    ) -> None:
        super().__init__()
        self.residual_channels = residual_channels
        self.gate_channels = gate_channels
        self.dilation = dilation
        self.padding = (kernel_size - 1) * dilation
        self.dilated = nn.Conv1d(
            residual_channels, 2 * gate_channels, kernel_size, dilation=dilation
        )
        self.condition = (
            nn.Linear(condition_dim, 2 * gate_channels, bias=False) if condition_dim else None
        )
        self.output = nn.Conv1d(gate_channels, residual_channels + skip_channels, 1)

    def gate_bias(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        """The conditioning shift of the gate pre-activations, (n, 2G), or None."""
        if self.condition is None or condition is None:
            return None
        return self.condition(condition)

    def gate(self, pre_activation: torch.Tensor, dropout: float) -> torch.Tensor:
        half = self.gate_channels
        gated = torch.tanh(pre_activation[:, :half]) * torch.sigmoid(pre_activation[:, half:])
        return F.dropout(gated, dropout, self.training) if dropout else gated

    def forward(
        self, hidden: torch.Tensor, bias: torch.Tensor | None, dropout: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, R, T) residual stream -> (next residual stream, skip output (n, S, T))."""
        # Left padding only: output t sees inputs t - (k-1)d .. t.
        pre = self.dilated(F.pad(hidden, (self.padding, 0)))
        if bias is not None:
            pre = pre + bias[:, :, None]
        out = self.output(self.gate(pre, dropout))
        split = self.residual_channels
        return hidden + out[:, :split], out[:, split:]


class WaveNet(RenamedSettings, Model):
    """WaveNet over categorical levels or binary frames; exact per-sequence `log_prob`.

    Args:
        output: "categorical" (levels 0..n_levels-1 per step, e.g. mu-law audio) or
            "bernoulli" (binary frames of `n_channels`, e.g. piano rolls).
        n_levels: levels of a categorical step (256 for 8-bit mu-law audio).
        n_channels: keys of a Bernoulli frame (required for "bernoulli").
        residual_channels: width of the residual stream.
        gate_channels: width of the gated activations (default residual_channels).
        skip_channels: width of the skip connections and of the output head.
        kernel_size: taps of each dilated convolution (2 in the paper).
        n_layers: layers per dilation cycle (dilations 1, 2, ..., 2**(n_layers-1)).
        n_cycles: repetitions of the dilation cycle.
        condition_dim: features of an optional global conditioning vector (one per sequence).
        mu_law_input: ("categorical" only) feed each past level's mu-law decoded amplitude
            to the network besides its one-hot code, for mu-law audio: the amplitude makes
            the waveform's near-linear structure (tones, resonances) easy to learn.
        dropout: dropout on the gated activations during training.
        n_epochs, batch_size, learning_rate, grad_clip, weight_decay, seed: training settings
            (overridable in `fit`).

    Example:
        >>> import torch
        >>> from probgen.deep.wavenet import WaveNet
        >>> rolls = torch.randint(0, 2, (8, 12, 3)).float()
        >>> model = WaveNet("bernoulli", n_channels=3, residual_channels=8, skip_channels=8,
        ...                 n_layers=2, n_epochs=1, seed=0).fit(rolls)
        >>> model.sample(2, length=6, seed=0).shape
        torch.Size([2, 6, 3])
    """

    log_prob_kind = LogProbKind.EXACT
    is_sequence_model = True
    fitted_attributes = ("history_", "n_iter_")

    def __init__(
        self,
        output: str = "categorical",
        n_levels: int = 256,
        n_channels: int | None = None,
        residual_channels: int = 32,
        gate_channels: int | None = None,
        skip_channels: int = 64,
        kernel_size: int = 2,
        n_layers: int = 10,
        n_cycles: int = 1,
        condition_dim: int | None = None,
        mu_law_input: bool = False,
        dropout: float = 0.0,
        n_epochs: int = 10,
        batch_size: int = 16,
        learning_rate: float = 1e-3,
        grad_clip: float | None = 1.0,
        weight_decay: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.output = check_choice(output, "output", _OUTPUTS)
        self.n_levels = check_positive_int(n_levels, "n_levels", minimum=2)
        if self.output == "bernoulli":
            if n_channels is None:
                raise DataError('n_channels is required for output="bernoulli" (keys per frame)')
            self.n_channels: int | None = check_positive_int(n_channels, "n_channels")
            self.event_shape = torch.Size([self.n_channels])
        else:
            if n_channels is not None:
                raise DataError('n_channels is only for output="bernoulli"; give n_levels')
            self.n_channels = None
            self.event_shape = torch.Size()
        self.residual_channels = check_positive_int(residual_channels, "residual_channels")
        self.gate_channels = (
            None if gate_channels is None else check_positive_int(gate_channels, "gate_channels")
        )
        self.skip_channels = check_positive_int(skip_channels, "skip_channels")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size", minimum=2)
        self.n_layers = check_positive_int(n_layers, "n_layers")
        self.n_cycles = check_positive_int(n_cycles, "n_cycles")
        self.condition_dim = (
            None if condition_dim is None else check_positive_int(condition_dim, "condition_dim")
        )
        if mu_law_input and self.output != "categorical":
            raise DataError('mu_law_input applies to output="categorical" (mu-law levels)')
        self.mu_law_input = bool(mu_law_input)
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise DataError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.weight_decay = float(weight_decay)
        self.seed = seed
        self.dilations = [2**i for i in range(self.n_layers)] * self.n_cycles
        width = self.n_features + 1  # one more input channel flags the begin step

        # Seeded initial weights without touching the caller's global random state.
        with seeded_initialisation(seed):
            self.input = nn.Conv1d(width, self.residual_channels, 1)
            self.layers = nn.ModuleList(
                ResidualLayer(
                    self.residual_channels,
                    self.gate_channels or self.residual_channels,
                    self.skip_channels,
                    self.kernel_size,
                    dilation,
                    self.condition_dim,
                )
                for dilation in self.dilations
            )
            self.head_hidden = nn.Conv1d(self.skip_channels, self.skip_channels, 1)
            self.head_output = nn.Conv1d(self.skip_channels, self.n_outputs, 1)
        self.eval()

    @property
    def n_inputs(self) -> int:
        """Features of one step: n_levels (one-hot) or n_channels (the frame)."""
        return self.n_channels if self.n_channels is not None else self.n_levels

    @property
    def n_features(self) -> int:
        """Network input features of one step (`n_inputs`, plus the amplitude if mu_law_input)."""
        return self.n_inputs + int(self.mu_law_input)

    @property
    def n_outputs(self) -> int:
        return self.n_inputs

    @property
    def receptive_field(self) -> int:
        """Input steps (the begin step included) that one output sees: (k-1) sum(d) + 1."""
        return (self.kernel_size - 1) * sum(self.dilations) + 1

    def init_for_evaluation(self) -> WaveNet:
        """Mark the (randomly initialised) model usable without fitting; returns self."""
        self._mark_fitted()
        return self

    # ---- network ---------------------------------------------------------------------------
    def features(self, values: torch.Tensor) -> torch.Tensor:
        """Network features of steps (n, T, n_features): one-hot levels (and with mu_law_input
        their amplitudes), or the frames."""
        if self.output == "categorical":
            one_hot = F.one_hot(values.long(), self.n_levels).to(self.dtype)
            if not self.mu_law_input:
                return one_hot
            amplitude = _mu_law_expand(values.to(self.dtype), self.n_levels)
            return torch.cat([one_hot, amplitude[..., None]], -1)
        return values.to(self.dtype)

    def network_inputs(self, features: torch.Tensor) -> torch.Tensor:
        """The begin step followed by features[:, :-1], with a begin flag: (n, D + 1, T)."""
        n, length, width = features.shape
        begin = torch.zeros(n, 1, width + 1, dtype=features.dtype, device=features.device)
        begin[:, :, width] = 1
        shifted = F.pad(features[:, :-1], (0, 1))
        return torch.cat([begin, shifted], 1).transpose(1, 2)

    def gate_biases(self, condition: torch.Tensor | None) -> list[torch.Tensor | None]:
        return [layer.gate_bias(condition) for layer in self.layers]

    def logits_of_inputs(
        self, inputs: torch.Tensor, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Output logits (n, T, n_outputs) of network inputs (n, D + 1, T); t sees inputs <= t."""
        hidden = self.input(inputs)
        skip = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
        for layer, bias in zip(self.layers, self.gate_biases(condition)):
            hidden, layer_skip = layer(hidden, bias, self.dropout)
            skip = skip + layer_skip
        hidden = self.head_hidden(torch.relu(skip))
        return self.head_output(torch.relu(hidden)).transpose(1, 2)

    def logits(self, features: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (n, T, n_outputs) of each step given the steps before it.

        Args:
            features: (n, T, D) from `features` (any real values: the gradient test uses them).
            condition: (n, condition_dim) or None.

        Returns:
            logits[:, t] depends on features[:, :t] (and the condition) only.
        """
        return self.logits_of_inputs(self.network_inputs(features), condition)

    def step_log_probs_of_logits(self, logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """log p(x_t | x_<t) of each step (n, T) from logits (n, T, n_outputs)."""
        if self.output == "categorical":
            log_probs = torch.log_softmax(logits, -1)
            return log_probs.gather(-1, values.long().unsqueeze(-1)).squeeze(-1)
        targets = values.to(logits.dtype)
        return -F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)

    def _step_log_probs(
        self, values: torch.Tensor, lengths: torch.Tensor, condition: torch.Tensor | None
    ) -> torch.Tensor:
        """log p(x_t | x_<t) per real step, zero on padding: (n, T)."""
        logits = self.logits(self.features(values), condition)
        step = self.step_log_probs_of_logits(logits, values)
        steps = torch.arange(values.shape[1], device=values.device)
        return step * (steps[None, :] < lengths[:, None]).to(step.dtype)

    # ---- input -----------------------------------------------------------------------------
    def _check_sequences(self, data: Any, name: str) -> Sequences:
        """Check sequence input: `Sequences` on the model's device (padding zeroed)."""
        if self.output == "categorical":
            sequences = as_sequences(data, name, event_shape=(), integer=True)
            top = self.n_levels - 1
        else:
            sequences = as_sequences(data, name, event_shape=(self.n_channels,), integer=True)
            top = 1
        mask = sequences.mask.to(sequences.values.device)
        mask = mask.reshape(*mask.shape, *([1] * len(self.event_shape)))
        values = sequences.values * mask
        outside = (values < 0) | (values > top)
        if outside.any():
            where = outside.nonzero()[0].tolist()
            what = "binary values 0/1" if top == 1 else f"levels 0..{top}"
            raise DataError(
                f"{name}[{where[0]}] has value {values[tuple(where)].item():g} at step {where[1]}; "
                f"this model takes {what}"
            )
        values = values.long() if self.output == "categorical" else values.to(self.dtype)
        return Sequences(values.to(self.device), sequences.lengths.to(self.device))

    def _check_condition(self, condition: Any, n: int, name: str = "condition") -> Any:
        if self.condition_dim is None:
            if condition is not None:
                raise DataError(f"{name} was given, but this model has no condition_dim")
            return None
        if condition is None:
            raise DataError(
                f"{name} is required: this model is conditioned on {self.condition_dim} features"
            )
        tensor = as_tensor(condition, name, event_shape=(self.condition_dim,))
        if tensor.dim() == 1:
            tensor = tensor.expand(n, -1)
        if tensor.dim() != 2 or tensor.shape[0] != n:
            raise DataError(
                f"{name} must have shape ({n}, {self.condition_dim}) (one row per sequence) or "
                f"({self.condition_dim},), got {tuple(tensor.shape)}"
            )
        return tensor.to(self.device, self.dtype)

    # ---- density contract ------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: Any, condition: Any = None) -> torch.Tensor:
        """Exact log p(x | condition) of each sequence (from the begin step, no end step).

        Args:
            x: integer levels (n, T) for "categorical" or binary frames (n, T, n_channels) for
                "bernoulli"; also a list of sequences of different lengths, or `Sequences`.
            condition: (n, condition_dim) or (condition_dim,) when the model has condition_dim.

        Returns:
            Tensor (n_sequences,).

        Raises:
            NotFittedError: before `fit`.
            DataError: values outside the levels / not binary, a wrong frame width, NaN, a
                missing or misshapen condition.
        """
        return self.log_prob_steps(x, condition).sum(-1)

    @torch.no_grad()
    def log_prob_steps(self, x: Any, condition: Any = None) -> torch.Tensor:
        """log p(x_t | x_<t, condition) of each step, zero after a sequence's end: (n, T)."""
        self.check_fitted("log_prob")
        sequences = self._check_sequences(x, "x")
        condition = self._check_condition(condition, sequences.n_sequences)
        return self._step_log_probs(sequences.values, sequences.lengths, condition)

    def sample(
        self,
        n: int,
        *,
        length: int,
        condition: Any = None,
        cached: bool = True,
        seed: int | torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw `n` sequences of `length` steps, following exp(log_prob) exactly.

        Args:
            n: number of sequences.
            length: steps per sequence.
            condition: (n, condition_dim) or (condition_dim,) for a conditioned model.
            cached: keep a queue of past activations per layer (fast generation). False
                recomputes the network over the receptive field at every step (the naive
                way; the same draws for the same seed, much slower).
            seed: seed or generator.

        Returns:
            Long levels (n, length) for "categorical"; 0/1 frames (n, length, n_channels) in
            the model's float dtype for "bernoulli".
        """
        from probgen.deep.wavenet_generation import generate

        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        length = check_positive_int(length, "length")
        condition = self._check_condition(condition, n)
        generator = self.make_generator(seed)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return generate(self, n, length, condition, generator, cached=bool(cached))
        finally:
            self.train(was_training)

    def enumerate_support(self, length: int = 5) -> torch.Tensor:
        """Every sequence of `length` steps of a tiny event space.

        Raises:
            DataError: more than 2**16 sequences.
        """
        length = check_positive_int(length, "length")
        per_step = self.n_levels if self.output == "categorical" else 2**self.n_inputs
        size = per_step**length
        if size > _MAX_SUPPORT:
            raise DataError(
                f"enumerate_support: {per_step}**{length} sequences is too many to list "
                f"(limit {_MAX_SUPPORT})"
            )
        if self.output == "categorical":
            values = list(itertools.product(range(self.n_levels), repeat=length))
            return torch.tensor(values, dtype=torch.long, device=self.device)
        values = list(itertools.product((0, 1), repeat=length * self.n_inputs))
        return torch.tensor(values, dtype=self.dtype, device=self.device).reshape(
            size, length, self.n_inputs
        )

    # ---- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        *,
        condition: Any = None,
        validation_data: Any = None,
        validation_condition: Any = None,
        **options: Any,
    ) -> WaveNet:
        """Maximum likelihood with Adam (loss: nats per step, over all real steps of a batch).

        Args:
            data: sequences as in `log_prob` (different lengths allowed).
            condition: one conditioning row per training sequence (conditioned models).
            validation_data: held-out sequences (mean log-likelihood per sequence recorded
                each epoch; drives `early_stopping_patience`, which keeps the best weights).
            validation_condition: the condition rows of the held-out sequences.
            **options: settings for `probgen.fitting.fit_model`, overriding the model's
                (n_epochs, batch_size, learning_rate, grad_clip, weight_decay, seed,
                lr_schedule, early_stopping_patience, checkpoint_dir, max_steps, ...).

        Returns:
            self, with `history_` and `n_iter_`.
        """
        from probgen.fitting.loop import fit_with_model_settings

        train = self._training_data(data, condition, "data", "condition")
        validation = None
        if validation_data is not None:
            validation = self._training_data(
                validation_data, validation_condition, "validation_data", "validation_condition"
            )
        elif validation_condition is not None:
            raise DataError("validation_condition was given without validation_data")

        def loss(model: WaveNet, batch: Any) -> torch.Tensor:
            sequences, batch_condition = _split(batch)
            step = model._step_log_probs(sequences.values, sequences.lengths, batch_condition)
            return -step.sum() / sequences.lengths.sum()

        def validation_log_prob(model: WaveNet, batch: Any) -> torch.Tensor:
            sequences, batch_condition = _split(batch)
            return model._step_log_probs(sequences.values, sequences.lengths, batch_condition).sum(
                -1
            )

        fit_with_model_settings(
            self,
            train,
            loss=loss,
            validation_data=validation,
            validation_log_prob=validation_log_prob,
            options=options,
            setting_names=(*MODEL_SETTINGS, "grad_clip", "weight_decay"),
        )
        return self

    def _training_data(self, data: Any, condition: Any, name: str, condition_name: str) -> Any:
        sequences = self._check_sequences(data, name)
        checked = self._check_condition(condition, sequences.n_sequences, condition_name)
        return sequences if checked is None else (sequences, checked)


def _split(batch: Any) -> tuple[Sequences, torch.Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], batch[1]
    return batch, None
