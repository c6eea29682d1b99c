"""Shared test settings (skip `gpu` tests without CUDA, one torch thread) and fixtures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import probgen


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # Small-op loops (EM steps, MCMC steps, PCD) run erratically with 2 threads on a shared
    # 2-core machine; one thread keeps the suite's time predictable. The library never does this.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
