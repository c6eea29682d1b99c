"""Fixtures shared by the neural-model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def seeded_global_torch():
    """Fix torch's global generator for one test (network initialisation draws from it), and
    give the caller's random state back afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield
