"""A character tokenizer: text to integer codes and back, with a fixed symbol list.

Example:
    >>> from probgen.deep.tokenizer import CharTokenizer
    >>> tokenizer = CharTokenizer.from_text("hello world")
    >>> tokenizer.decode(tokenizer.encode("hold"))
    'hold'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from probgen.core.errors import DataError


class CharTokenizer:
    """Maps each symbol (usually one character) to a code 0..vocab_size-1.

    Args:
        symbols: the vocabulary: a string (each character a symbol) or a list of distinct
            strings. Multi-character symbols can only be encoded from lists of symbols.

    Example:
        >>> tokenizer = CharTokenizer("ab")
        >>> tokenizer.encode("abba").tolist()
        [0, 1, 1, 0]
    """

    def __init__(self, symbols: str | Sequence[str]) -> None:
        if isinstance(symbols, CharTokenizer):
            symbols = symbols.symbols
        symbol_list = list(symbols)
        if not symbol_list:
            raise DataError("vocab is empty; give at least one symbol")
        for index, symbol in enumerate(symbol_list):
            if not isinstance(symbol, str) or symbol == "":
                raise DataError(f"vocab[{index}] must be a non-empty string, got {symbol!r}")
        if len(set(symbol_list)) != len(symbol_list):
            repeated = sorted({s for s in symbol_list if symbol_list.count(s) > 1})
            raise DataError(f"vocab has repeated symbols: {repeated}")
        self.symbols: list[str] = symbol_list
        self.codes: dict[str, int] = {symbol: code for code, symbol in enumerate(symbol_list)}

    @classmethod
    def from_text(cls, text: str | Iterable[str]) -> CharTokenizer:
        """A tokenizer whose vocabulary is the sorted set of characters in `text`."""
        if isinstance(text, str):
            return cls(sorted(set(text)))
        characters: set[str] = set()
        for part in text:
            characters.update(part)
        return cls(sorted(characters))

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def __len__(self) -> int:
        return len(self.symbols)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, CharTokenizer) and other.symbols == self.symbols

    def encode(self, text: str | Sequence[str], name: str = "text") -> torch.Tensor:
        """Codes of the symbols of `text` (a string, or a list of symbols), long tensor (n,).

        Raises:
            DataError: a symbol is not in the vocabulary (the message names it and its place).
        """
        if not isinstance(text, (str, list, tuple)):
            raise DataError(
                f"{name} must be a string or a list of symbols, got {type(text).__name__}"
            )
        codes = []
        for position, symbol in enumerate(text):
            code = self.codes.get(symbol)
            if code is None:
                raise DataError(
                    f"{name} has symbol {symbol!r} at position {position}, which is not in the "
                    f"vocabulary of {self.vocab_size} symbols"
                )
            codes.append(code)
        return torch.tensor(codes, dtype=torch.long)

    def decode(self, codes: Any) -> str:
        """The text of a sequence of codes (a tensor, array or list of ints)."""
        values = [int(code) for code in (codes.tolist() if hasattr(codes, "tolist") else codes)]
        outside = [code for code in values if not 0 <= code < self.vocab_size]
        if outside:
            raise DataError(
                f"codes hold {outside[0]}, outside 0..{self.vocab_size - 1} (the vocabulary)"
            )
        return "".join(self.symbols[code] for code in values)
