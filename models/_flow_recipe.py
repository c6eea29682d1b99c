"""What the 2-D flow recipes share (not a recipe itself): their training setup and splits.

`flow_moons` and `flow_gaussians` train flows of the same width with the same schedule, and
draw train / valid / test points from disjoint seeds in the same sizes.

Example:
    >>> from probgen.recipes._flow_recipe import split_size_and_seed
    >>> split_size_and_seed("valid", seed=0, n=None)
    (2000, 1000003)
"""

from __future__ import annotations

from typing import Any

from probgen.core.errors import DataError
from probgen.deep.flows import Flow

SPLIT_SIZES = {"train": 10_000, "valid": 2_000, "test": 5_000}
# Offsets far apart, so that the splits of any seed below a million never share a draw.
_SPLIT_OFFSETS = {"train": 0, "valid": 1_000_003, "test": 2_000_003}
_SHARED_SETTINGS: dict[str, Any] = dict(
    dim=2, hidden_dims=(64, 64), n_epochs=60, batch_size=256, seed=0
)


def build_flow(settings: dict[str, Any], overrides: dict[str, Any]) -> Flow:
    """A 2-D `Flow`: the shared setup, updated by the recipe's `settings`, then `overrides`."""
    return Flow(**{**_SHARED_SETTINGS, **settings, **overrides})


def split_size_and_seed(split: str, seed: int, n: int | None) -> tuple[int, int]:
    """How many points a split has (`n` if given) and the seed to draw them with.

    Raises:
        DataError: `split` is not "train", "valid" or "test".
    """
    if split not in SPLIT_SIZES:
        raise DataError(f"split must be one of {', '.join(SPLIT_SIZES)}; got {split!r}")
    size = SPLIT_SIZES[split] if n is None else int(n)
    return size, int(seed) + _SPLIT_OFFSETS[split]
