"""Character-level language model on tiny shakespeare (LSTM on CPU; transformer for a GPU).

Data: `../shared/data/tinyshakespeare` (1,115,394 characters, 65 symbols); the first 90% is the
training split and the last 10% the validation split. `data()` cuts a split into consecutive
chunks of `seq_length` characters (a list of strings). `build()` gives a one-layer LSTM of
width 512 (fast per step on a CPU); `build(size="large")` the GPU configuration of nanoGPT's
shakespeare_char (causal transformer, 6 layers, 6 heads, width 384, context 256, dropout 0.2).
Reference: validation cross-entropy 1.88 nats/char for nanoGPT's small CPU model and 1.47 for
its GPU configuration.

Example:
    >>> from probgen.recipes import charlm_shakespeare
    >>> charlm_shakespeare.build().vocab_size
    65
"""

from __future__ import annotations

from typing import Any

from probgen.recipes._shared_data import tiny_shakespeare

from probgen.core.data import check_positive_int
from probgen.core.errors import DataError
from probgen.deep.autoregressive import SequenceModel

FAMILY = "autoregressive"
VOCAB = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
REFERENCE = {
    "valid_nats_per_char": {"small_cpu": 1.88, "large_gpu": 1.47},
    "what": "validation cross-entropy per character on tiny shakespeare (last 10%)",
    "source": "Karpathy, nanoGPT README, shakespeare_char: 1.88 for the small CPU "
    "configuration, 1.4697 for the GPU configuration",
}
SMOKE = {
    "build": {"hidden_dim": 32, "n_layers": 1, "n_heads": 2, "max_length": 32},
    "data": {"n": 48, "seq_length": 32},
    "fit": {"n_epochs": 1},
}
# 65**5 sequences cannot be enumerated; normalisation is checked on tiny vocabularies in tests.
CONTRACT = {"check_normalization": False}


SIZES: dict[str, dict[str, Any]] = {
    "small": dict(
        arch="lstm",
        embedding_dim=64,
        hidden_dim=512,
        n_layers=1,
        seq_length=128,
        dropout=0.0,
        n_epochs=1,
        batch_size=32,
        learning_rate=3e-3,
    ),
    "large": dict(
        arch="transformer",
        hidden_dim=384,
        n_layers=6,
        n_heads=6,
        max_length=256,
        seq_length=256,
        dropout=0.2,
        n_epochs=1,
        batch_size=64,
        learning_rate=1e-3,
    ),
}


def build(size: str = "small", **overrides: Any) -> SequenceModel:
    """A character model over the 65 symbols of tiny shakespeare; `size` "small" or "large"."""
    if size not in SIZES:
        raise DataError(f"size must be one of {', '.join(map(repr, SIZES))}, got {size!r}")
    settings: dict[str, Any] = dict(vocab=VOCAB, seed=0, **SIZES[size])
    settings.update(overrides)
    return SequenceModel(**settings)


def text(split: str = "train") -> str:
    """The training (first 90%) or validation (last 10%) text."""
    split = "valid" if split == "validation" else split
    if split not in ("train", "valid"):
        raise DataError(f"split must be 'train' or 'valid' (tiny shakespeare), got {split!r}")
    full = tiny_shakespeare()
    cut = int(0.9 * len(full))
    return full[:cut] if split == "train" else full[cut:]


def data(
    split: str = "train", seed: int = 0, n: int | None = None, seq_length: int = 128
) -> list[str]:
    """Consecutive chunks of `seq_length` characters of a split (the first `n` if given)."""
    seq_length = check_positive_int(seq_length, "seq_length")
    source = text(split)
    chunks = [
        source[start : start + seq_length]
        for start in range(0, len(source) - seq_length + 1, seq_length)
    ]
    return chunks if n is None else chunks[: int(n)]
