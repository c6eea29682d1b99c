"""Autoregressive sequence models over tokens (characters): LSTM, GRU or causal transformer.

`SequenceModel` models p(x_1..x_T) = prod_t p(x_t | begin, x_<t) with a begin token in front of
every sequence and no end token, so `log_prob` of a sequence is the probability of that exact
prefix: for a fixed length T, exp(log_prob) sums to one over all V**T sequences. Sequences of
different lengths come as a list of strings, a list of integer arrays, or `Sequences`.

Example:
    >>> from probgen.deep.sequence import SequenceModel
    >>> model = SequenceModel("ab", hidden_dim=8, n_layers=1).fit(["abab", "baba"] * 8, n_epochs=1)
    >>> model.log_prob(["ab", "abba"]).shape
    torch.Size([2])
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import Sequences, as_sequences, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.deep.tokenizer import CharTokenizer
from probgen.fitting.settings import RenamedSettings, renamed_arguments

_MAX_SUPPORT = 2**16
_ARCHITECTURES = ("lstm", "gru", "transformer")


class SequenceModel(RenamedSettings, Model):
    """Character-level (or token-level) autoregressive model with exact per-sequence `log_prob`.

    Args:
        vocab: the symbols: a string (one symbol per character), a list of strings, a
            `CharTokenizer`, or an int V for plain integer tokens 0..V-1 (no text methods).
        arch: "lstm", "gru" or "transformer" (causal self-attention, pre-norm).
        embedding_dim: token embedding width (recurrent architectures).
        hidden_dim: recurrent state width, or the transformer's model width.
        n_layers: recurrent or transformer layers.
        n_heads: attention heads (transformer).
        max_length: longest context of the transformer (its learned positions); longer
            sequences are refused by `log_prob`, and by `sample` (prompt plus draws).
        dropout: dropout between layers during training.
        seq_length: window length when `fit` gets one long string (default min(128,
            max_length)).
        n_epochs, batch_size, learning_rate, grad_clip, seed: training settings (overridable
            in `fit`).

    Example:
        >>> from probgen.deep.sequence import SequenceModel
        >>> model = SequenceModel("abc", arch="gru", hidden_dim=16, n_layers=1)
        >>> model = model.fit(["abcabc", "cab"] * 4, n_epochs=2, seed=0)
        >>> len(model.sample_text(2, length=5, prompt="ab", seed=0)[0])
        7
    """

    log_prob_kind = LogProbKind.EXACT
    is_sequence_model = True
    fitted_attributes = ("history_", "n_iter_")

    def __init__(
        self,
        vocab: str | list[str] | CharTokenizer | int,
        arch: str = "lstm",
        embedding_dim: int = 64,
        hidden_dim: int = 256,
        n_layers: int = 2,
        n_heads: int = 4,
        max_length: int = 256,
        dropout: float = 0.0,
        seq_length: int | None = None,
        n_epochs: int = 10,
        batch_size: int = 64,
        learning_rate: float = 2e-3,
        grad_clip: float | None = 1.0,
        seed: int | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        n_epochs, learning_rate = renamed_arguments(
            type(self).__name__, deprecated, n_epochs=n_epochs, learning_rate=learning_rate
        ).values()
        if isinstance(vocab, bool):
            raise DataError(f"vocab must be symbols, a CharTokenizer or an int, got {vocab!r}")
        if isinstance(vocab, int):
            self.tokenizer: CharTokenizer | None = None
            self.vocab_size = check_positive_int(vocab, "vocab", minimum=2)
        else:
            self.tokenizer = vocab if isinstance(vocab, CharTokenizer) else CharTokenizer(vocab)
            self.vocab_size = self.tokenizer.vocab_size
        self.arch = check_choice(arch, "arch", _ARCHITECTURES)
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
        self.hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        self.n_layers = check_positive_int(n_layers, "n_layers")
        self.n_heads = check_positive_int(n_heads, "n_heads")
        self.max_length = check_positive_int(max_length, "max_length", minimum=2)
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise DataError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.seq_length = check_positive_int(
            seq_length if seq_length is not None else min(128, self.max_length), "seq_length"
        )
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.seed = seed
        self.begin_token = self.vocab_size
        self.event_shape = torch.Size()

        # Seeded initial weights without touching the caller's global random state.
        with seeded_initialisation(seed):
            if self.arch == "transformer":
                if self.hidden_dim % self.n_heads:
                    raise DataError(
                        f"hidden_dim ({hidden_dim}) must be a multiple of n_heads ({n_heads})"
                    )
                self.embedding = nn.Embedding(self.vocab_size + 1, self.hidden_dim)
                self.position = nn.Embedding(self.max_length, self.hidden_dim)
                layer = nn.TransformerEncoderLayer(
                    self.hidden_dim,
                    self.n_heads,
                    dim_feedforward=4 * self.hidden_dim,
                    dropout=self.dropout,
                    batch_first=True,
                    norm_first=True,
                )
                self.body = nn.TransformerEncoder(layer, self.n_layers, enable_nested_tensor=False)
                self.final_norm = nn.LayerNorm(self.hidden_dim)
            else:
                self.embedding = nn.Embedding(self.vocab_size + 1, self.embedding_dim)
                recurrent = nn.LSTM if self.arch == "lstm" else nn.GRU
                self.body = recurrent(
                    self.embedding_dim,
                    self.hidden_dim,
                    self.n_layers,
                    batch_first=True,
                    dropout=self.dropout if self.n_layers > 1 else 0.0,
                )
            self.head = nn.Linear(self.hidden_dim, self.vocab_size)
        self.eval()

    # Own config: the tokenizer is saved in its JSON form (its vocabulary list).
    def get_config(self) -> dict[str, Any]:
        return {
            "vocab": list(self.tokenizer.symbols) if self.tokenizer else self.vocab_size,
            "arch": self.arch,
            "embedding_dim": self.embedding_dim,
            "hidden_dim": self.hidden_dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "max_length": self.max_length,
            "dropout": self.dropout,
            "seq_length": self.seq_length,
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "grad_clip": self.grad_clip,
            "seed": self.seed,
        }

    def init_for_evaluation(self) -> SequenceModel:
        """Mark the (randomly initialised) model usable without fitting; returns self."""
        self._mark_fitted()
        return self

    # ---- network ---------------------------------------------------------------------------
    def next_token_logits(
        self, inputs: torch.Tensor, state: Any = None
    ) -> tuple[torch.Tensor, Any]:
        """Logits of the next token after each input position.

        Args:
            inputs: long tensor (n, T) of codes, the begin token (`vocab_size`) first.
            state: recurrent state from a previous call (recurrent architectures), else None.

        Returns:
            (logits (n, T, vocab_size), new state); logits[:, t] depends on inputs[:, :t+1].
        """
        embedded = self.embedding(inputs)
        if self.arch == "transformer":
            length = inputs.shape[1]
            positions = torch.arange(length, device=inputs.device)
            causal = nn.Transformer.generate_square_subsequent_mask(
                length, device=inputs.device, dtype=embedded.dtype
            )
            hidden = self.body(embedded + self.position(positions), mask=causal, is_causal=True)
            return self.head(self.final_norm(hidden)), None
        hidden, state = self.body(embedded, state)
        return self.head(hidden), state

    def _with_begin(self, tokens: torch.Tensor) -> torch.Tensor:
        begin = torch.full(
            (tokens.shape[0], 1), self.begin_token, dtype=torch.long, device=tokens.device
        )
        return torch.cat([begin, tokens[:, :-1]], 1)

    def _token_log_probs(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log p(x_t | x_<t) for each real step, zero on padding: (n, T)."""
        logits, _ = self.next_token_logits(self._with_begin(tokens))
        log_probs = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        steps = torch.arange(tokens.shape[1], device=tokens.device)
        return log_probs * (steps[None, :] < lengths[:, None]).to(log_probs.dtype)

    # ---- input -----------------------------------------------------------------------------
    def _encode(self, data: Any, name: str) -> Sequences:
        """Check sequence input and return `Sequences` of long codes on the model's device."""
        if isinstance(data, str):
            data = [data]
        if isinstance(data, (list, tuple)) and data and all(isinstance(d, str) for d in data):
            tokenizer = self._require_tokenizer(name)
            parts = [tokenizer.encode(text, f"{name}[{i}]") for i, text in enumerate(data)]
            for index, part in enumerate(parts):
                if part.numel() == 0:
                    raise DataError(f"{name}[{index}] is an empty string")
            data = parts
        sequences = as_sequences(data, name, event_shape=(), integer=True)
        values = sequences.values.long() * sequences.mask.to(sequences.values.device)
        outside = (values < 0) | (values >= self.vocab_size)
        if outside.any():
            where = outside.nonzero()[0].tolist()
            raise DataError(
                f"{name}[{where[0]}] has token {int(values[tuple(where)])} at position {where[1]}, "
                f"outside the vocabulary 0..{self.vocab_size - 1}"
            )
        return Sequences(values.to(self.device), sequences.lengths.to(self.device))

    def _require_tokenizer(self, name: str) -> CharTokenizer:
        if self.tokenizer is None:
            raise DataError(
                f"{name} is text, but this model was built with vocab={self.vocab_size} "
                "(integer tokens); give integer codes or build it with a string vocabulary"
            )
        return self.tokenizer

    def _check_length(self, length: int, name: str) -> None:
        if self.arch == "transformer" and length > self.max_length:
            raise DataError(
                f"{name} has sequences of length {length}; this transformer's max_length is "
                f"{self.max_length}"
            )

    # ---- density contract ------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: Any) -> torch.Tensor:
        """Exact log p(x) of each sequence (from the begin token, no end token).

        Args:
            x: a string, a list of strings, a list of integer arrays (different lengths
                allowed), an integer array (n, T), or `Sequences`.

        Returns:
            Tensor (n_sequences,).

        Raises:
            NotFittedError: before `fit`.
            DataError: symbols or tokens outside the vocabulary, NaN, empty sequences.
        """
        self.check_fitted("log_prob")
        sequences = self._encode(x, "x")
        self._check_length(sequences.max_length, "x")
        return self._token_log_probs(sequences.values, sequences.lengths).sum(-1)

    def sample(
        self,
        n: int,
        *,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        prompt: Any = None,
        seed: int | torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw `n` continuations of `length` tokens (after `prompt`, if given).

        Args:
            n: number of sequences.
            length: tokens to generate.
            temperature: divides the logits (below 1 sharpens, above 1 flattens).
            top_k: keep only the k most likely tokens at each step.
            top_p: keep the smallest set of tokens whose probability reaches p (nucleus).
            prompt: text or integer codes to condition on (not included in the result).
            seed: seed or generator.

        Returns:
            Long tensor (n, length) of codes. With temperature 1 and no truncation the draws
            follow exp(log_prob) exactly.

        Raises:
            DataError: bad settings, or (transformer) a prompt plus `length` longer than
                `max_length`: the model has no positions beyond it, and `log_prob` could not
                score such a sequence.
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        length = check_positive_int(length, "length")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise DataError(f"temperature must be a positive number, got {temperature!r}")
        if top_k is not None:
            top_k = check_positive_int(top_k, "top_k")
        if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise DataError(f"top_p must lie in (0, 1], got {top_p!r}")
        generator = self.make_generator(seed)
        device = self.device
        begin = torch.full((n, 1), self.begin_token, dtype=torch.long, device=device)
        context = begin
        if prompt is not None:
            prompt_codes = self._prompt_codes(prompt)
            context = torch.cat([begin, prompt_codes.expand(n, -1)], 1)
        if self.arch == "transformer" and context.shape[1] - 1 + length > self.max_length:
            prompt_tokens = context.shape[1] - 1
            with_prompt = f" after a prompt of {prompt_tokens} tokens" if prompt_tokens else ""
            room = self.max_length - prompt_tokens
            advice = f"ask for at most {room} tokens" if room > 0 else "shorten the prompt"
            raise DataError(
                f"length={length}{with_prompt} exceeds this transformer's max_length="
                f"{self.max_length} (prompt plus draws; log_prob refuses such sequences too): "
                f"{advice}, or build the model with a larger max_length"
            )
        draws = torch.empty(n, length, dtype=torch.long, device=device)
        with torch.no_grad():
            if self.arch == "transformer":
                history = context
                for step in range(length):
                    logits, _ = self.next_token_logits(history)
                    token = _draw(logits[:, -1], generator, temperature, top_k, top_p)
                    draws[:, step] = token
                    history = torch.cat([history, token[:, None]], 1)
            else:
                logits, state = self.next_token_logits(context)
                for step in range(length):
                    token = _draw(logits[:, -1], generator, temperature, top_k, top_p)
                    draws[:, step] = token
                    logits, state = self.next_token_logits(token[:, None], state)
        return draws

    def _prompt_codes(self, prompt: Any) -> torch.Tensor:
        if isinstance(prompt, str):
            codes = self._require_tokenizer("prompt").encode(prompt, "prompt")
        else:
            codes = self._encode([prompt], "prompt").values[0]
        if codes.numel() == 0:
            raise DataError("prompt is empty; give None for no prompt")
        return codes.to(self.device)[None, :]

    def sample_text(
        self, n: int, *, length: int, prompt: str | None = None, **options: Any
    ) -> list[str]:
        """Draw `n` texts: the prompt followed by `length` sampled characters.

        Args:
            n: number of texts.
            length: characters to generate after the prompt.
            prompt: text to start from.
            **options: temperature, top_k, top_p, seed (as in `sample`).
        """
        tokenizer = self._require_tokenizer("sample_text")
        codes = self.sample(n, length=length, prompt=prompt, **options)
        return [(prompt or "") + tokenizer.decode(row) for row in codes]

    def enumerate_support(self, length: int = 5) -> torch.Tensor:
        """Every sequence of `length` tokens (tiny vocabularies), long tensor (V**length, length).

        Raises:
            DataError: more than 2**16 sequences.
        """
        length = check_positive_int(length, "length")
        size = self.vocab_size**length
        if size > _MAX_SUPPORT:
            raise DataError(
                f"enumerate_support: {self.vocab_size}**{length} sequences is too many to list "
                f"(limit {_MAX_SUPPORT})"
            )
        values = list(itertools.product(range(self.vocab_size), repeat=length))
        return torch.tensor(values, dtype=torch.long, device=self.device)

    # ---- text figures ----------------------------------------------------------------------
    def bits_per_character(
        self, text: str | list[str], *, segment_length: int | None = None, batch_size: int = 64
    ) -> float:
        """Mean -log2 p per character of `text`.

        Args:
            text: a string (or a list of strings, scored separately and pooled).
            segment_length: None scores each string as one sequence (recurrent models carry
                their state through it, exactly; a transformer needs it no longer than
                `max_length` and otherwise defaults to segments of `max_length`). An int cuts
                the text into segments of that many characters, each scored from the begin
                token (batched, faster; a slightly pessimistic figure).
            batch_size: segments per forward pass.

        Returns:
            Bits per character (multiply by ln 2 for nats per character).
        """
        self.check_fitted("bits_per_character")
        tokenizer = self._require_tokenizer("text")
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise DataError("text must be a non-empty string or a list of non-empty strings")
        if segment_length is not None:
            segment_length = check_positive_int(segment_length, "segment_length")
            self._check_length(segment_length, "segment_length")
        total_nats = 0.0
        total_characters = 0
        with torch.no_grad():
            for index, piece in enumerate(texts):
                codes = tokenizer.encode(piece, f"text[{index}]" if len(texts) > 1 else "text")
                codes = codes.to(self.device)
                total_characters += codes.numel()
                segment = segment_length
                if segment is None and self.arch == "transformer":
                    segment = min(self.max_length, codes.numel())
                if segment is None:
                    total_nats -= self._streamed_log_prob(codes)
                else:
                    total_nats -= self._segmented_log_prob(codes, segment, batch_size)
        return total_nats / total_characters / math.log(2)

    def _streamed_log_prob(self, codes: torch.Tensor, chunk: int = 2048) -> float:
        """Exact log p(codes) of a recurrent model, carrying the state through chunks."""
        total = 0.0
        state = None
        previous = torch.full((1, 1), self.begin_token, dtype=torch.long, device=self.device)
        for start in range(0, codes.numel(), chunk):
            piece = codes[start : start + chunk][None, :]
            inputs = torch.cat([previous, piece[:, :-1]], 1)
            logits, state = self.next_token_logits(inputs, state)
            # The state has now read the piece's last input; feed its last token next time.
            picked = torch.log_softmax(logits, -1).gather(-1, piece.unsqueeze(-1))
            total += picked.detach().double().sum().item()
            previous = piece[:, -1:]
        return total

    def _segmented_log_prob(self, codes: torch.Tensor, segment: int, batch_size: int) -> float:
        pieces = list(codes.split(segment))
        total = 0.0
        for start in range(0, len(pieces), batch_size):
            group = pieces[start : start + batch_size]
            lengths = torch.tensor([p.numel() for p in group], device=self.device)
            padded = torch.nn.utils.rnn.pad_sequence(group, batch_first=True)
            total += self._token_log_probs(padded, lengths).detach().double().sum().item()
        return total

    # ---- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        *,
        validation_data: Any = None,
        seq_length: int | None = None,
        **options: Any,
    ) -> SequenceModel:
        """Maximum likelihood with Adam (loss: nats per token).

        Args:
            data: one long string (cut into windows of `seq_length` characters), a list of
                strings, a list of integer arrays, an integer array (n, T) or `Sequences`.
            validation_data: held-out data in the same forms (its mean log-likelihood per
                sequence is recorded each epoch and drives `early_stopping_patience`).
            seq_length: window length for a long string (default: the model's).
            **options: settings for `probgen.fitting.fit_model`, overriding the model's
                (n_epochs, batch_size, learning_rate, grad_clip, seed, lr_schedule,
                early_stopping_patience, checkpoint_dir, resume, progress, max_steps, ...).

        Returns:
            self, with `history_` and `n_iter_`.
        """
        from probgen.fitting.loop import fit_with_model_settings
        from probgen.fitting.settings import MODEL_SETTINGS

        train = self._training_sequences(data, "data", seq_length)
        validation = (
            None
            if validation_data is None
            else self._training_sequences(validation_data, "validation_data", seq_length)
        )

        def loss(model: SequenceModel, batch: Sequences) -> torch.Tensor:
            log_probs = model._token_log_probs(batch.values, batch.lengths)
            return -log_probs.sum() / batch.lengths.sum()

        def validation_log_prob(model: SequenceModel, batch: Sequences) -> torch.Tensor:
            return model._token_log_probs(batch.values, batch.lengths).sum(-1)

        fit_with_model_settings(
            self,
            train,
            loss=loss,
            validation_data=validation,
            validation_log_prob=validation_log_prob,
            options=options,
            setting_names=(*MODEL_SETTINGS, "grad_clip"),
        )
        return self

    def _training_sequences(self, data: Any, name: str, seq_length: int | None) -> Sequences:
        if isinstance(data, str):
            window = check_positive_int(seq_length or self.seq_length, "seq_length")
            codes = self._require_tokenizer(name).encode(data, name)
            if codes.numel() < window:
                window = codes.numel()
            if window == 0:
                raise DataError(f"{name} is an empty string")
            n_windows = codes.numel() // window
            values = codes[: n_windows * window].reshape(n_windows, window).to(self.device)
            sequences = Sequences(values, torch.full((n_windows,), window, device=self.device))
        else:
            sequences = self._encode(data, name)
        self._check_length(sequences.max_length, name)
        return sequences


def _draw(
    logits: torch.Tensor,
    generator: torch.Generator,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
) -> torch.Tensor:
    """One token per row from `logits` (n, V) after temperature, top-k and nucleus filtering."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, -math.inf)
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probabilities = torch.softmax(ordered, -1)
        # Drop a token when the tokens ranked above it already reach top_p (the first stays).
        before = torch.cumsum(probabilities, -1) - probabilities
        ordered = ordered.masked_fill(before >= top_p, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(-1, order, ordered)
    probabilities = torch.softmax(logits, -1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)
