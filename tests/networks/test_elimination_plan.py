"""Replayed and fused elimination plans give the brute-force answer, call after call."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from probgen.networks.factors.algebra import Factor
from probgen.networks.factors.elimination import _PLANS, eliminate


def _chain(n: int, generator: torch.Generator) -> list[Factor]:
    """A chain x0 -> x1 -> ... of binary/ternary variables with random CPT-like tables."""
    cards = [2 + (i % 2) for i in range(n)]
    factors = [Factor((0,), torch.rand(cards[0], generator=generator, dtype=torch.float64))]
    for i in range(1, n):
        table = torch.rand(cards[i - 1], cards[i], generator=generator, dtype=torch.float64)
        factors.append(Factor((i - 1, i), table))
    return factors


def _brute(factors: list[Factor], evidence: torch.Tensor, keep: int, n: int) -> torch.Tensor:
    """Joint by enumeration, times per-row evidence indicators, marginal of `keep`."""
    cards = {}
    for f in factors:
        for axis, v in enumerate(f.variables):
            cards[v] = f.values.shape[axis]
    out = torch.zeros(evidence.shape[0], cards[keep], dtype=torch.float64)
    for states in itertools.product(*(range(cards[v]) for v in range(n))):
        weight = torch.ones((), dtype=torch.float64)
        for f in factors:
            weight = weight * f.values[tuple(states[v] for v in f.variables)]
        ok = ((evidence < 0) | (evidence == torch.tensor(states))).all(dim=1)
        out[:, states[keep]] += weight * ok
    return out


def test_batched_elimination_matches_enumeration_on_repeat_calls():
    generator = torch.Generator().manual_seed(0)
    n = 8
    for _ in range(3):  # same scopes and shapes: the second and third calls replay the plan
        factors = _chain(n, generator)
        evidence = torch.randint(-1, 2, (5, n), generator=generator)
        evidence[:, 3] = -1
        indicators = []
        for v in range(n):
            card = factors[v].values.shape[-1]
            hit = (evidence[:, v : v + 1] == torch.arange(card)) | (evidence[:, v : v + 1] < 0)
            indicators.append(Factor((v,), hit.to(torch.float64), True))
        table, log_scale = eliminate(factors + indicators, (3,))
        ours = table.values * log_scale.exp()[:, None]
        torch.testing.assert_close(ours, _brute(factors, evidence, 3, n), rtol=1e-12, atol=0)
    assert _PLANS  # the plan was recorded


@pytest.mark.parametrize("entry", [1e-30, 1e-90])
def test_fused_chain_survives_tiny_probabilities(entry):
    """A product far below float64's range keeps an exact log scale instead of underflowing:
    with 1e-90 entries a fused chain of steps would reach 1e-360, so the replay must fall back
    to rescaling after every step."""
    n = 12
    factors = [Factor((0,), torch.tensor([1e-200, 1e-200], dtype=torch.float64))]
    for i in range(1, n):
        factors.append(Factor((i - 1, i), torch.full((2, 2), entry, dtype=torch.float64)))
    evidence = Factor((n - 1,), torch.ones(2, 2, dtype=torch.float64), True)
    table, log_scale = eliminate(factors + [evidence], (0,))
    expected = torch.tensor(math.log(1e-200) + (n - 1) * math.log(2 * entry), dtype=torch.float64)
    torch.testing.assert_close(table.values, torch.ones(2, 2, dtype=torch.float64))
    torch.testing.assert_close(log_scale, expected.expand(2), rtol=1e-12, atol=0)


@pytest.mark.parametrize("entry", [1e-3, 1e40, 1e200])
def test_fused_chain_log_scale_is_exact_for_small_and_huge_potentials(entry):
    """Markov-network potentials are not bounded by 1: a fused replay that does not rescale
    between steps must fall back when a product overflows (1e200 entries reach inf in two
    steps) and give the exact log scale either way (1e-3: the fast path's result)."""
    n = 12
    factors = [Factor((0,), torch.tensor([0.5, 0.5], dtype=torch.float64))]
    for i in range(1, n):
        factors.append(Factor((i - 1, i), torch.full((2, 2), entry, dtype=torch.float64)))
    evidence = Factor((n - 1,), torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64), True)
    table, log_scale = eliminate(factors + [evidence], (0,))
    steps = (n - 1) * math.log(entry) + (n - 2) * math.log(2)
    expected = torch.tensor([steps + math.log(0.5), steps + math.log(1.0)], dtype=torch.float64)
    assert torch.isfinite(table.values).all()
    torch.testing.assert_close(table.values, torch.ones(2, 2, dtype=torch.float64))
    torch.testing.assert_close(log_scale, expected, rtol=1e-12, atol=0)
