"""Shared test settings: skip `gpu` tests without CUDA; shared-data tests skip when absent."""

from __future__ import annotations

import pytest
import torch


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
