"""Fixtures shared by the graphical-model tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import probgen


@pytest.fixture
def assert_save_load_round_trip(tmp_path) -> Callable[..., Any]:
    """A check that saving and loading keeps log_prob on `points` and seeded samples identical.

    Called as ``check(model, points, n_samples=, seed=)``; returns the loaded model.
    """

    def check(model: Any, points: torch.Tensor, *, n_samples: int, seed: int) -> Any:
        path = tmp_path / f"{type(model).__name__}.probgen"
        model.save(path)
        loaded = probgen.load(path)
        assert torch.equal(loaded.log_prob(points), model.log_prob(points))
        assert torch.equal(loaded.sample(n_samples, seed=seed), model.sample(n_samples, seed=seed))
        return loaded

    return check
