"""The memoised einsum paths and elimination orders give the uncached results exactly."""

import torch

from probgen.networks.factors import algebra, elimination
from probgen.networks.factors.algebra import Factor, contract
from probgen.networks.factors.orders import min_fill_order, moral_adjacency


def _factors() -> list[Factor]:
    g = torch.Generator().manual_seed(0)
    return [
        Factor((0, 1), torch.rand(2, 3, generator=g, dtype=torch.float64)),
        Factor((1, 2), torch.rand(3, 4, generator=g, dtype=torch.float64)),
        Factor((2, 3), torch.rand(4, 2, generator=g, dtype=torch.float64)),
        Factor((3,), torch.rand(5, 2, generator=g, dtype=torch.float64), True),
    ]


def test_contract_matches_torch_einsum_on_cache_miss_and_hit() -> None:
    factors = _factors()
    expected = torch.einsum(
        factors[0].values,
        [0, 1],
        factors[1].values,
        [1, 2],
        factors[2].values,
        [2, 3],
        factors[3].values,
        [4, 3],
        [4, 1],
    )
    algebra._PATHS.clear()
    first = contract(factors, (1,)).values
    assert algebra._PATHS  # the path was stored
    second = contract(factors, (1,)).values
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_cached_elimination_order_is_min_fill() -> None:
    factors = _factors()
    cards = {0: 2, 1: 3, 2: 4, 3: 2}
    expected = min_fill_order(
        moral_adjacency((f.variables for f in factors), cards), cards, eliminate={0, 2, 3}
    )
    elimination._ORDERS.clear()
    assert elimination._cached_order(factors, cards, {0, 2, 3}) == expected
    assert elimination._cached_order(factors, cards, {0, 2, 3}) == expected
    # a different eliminated set is a different key, not the stored order
    assert elimination._cached_order(factors, cards, {0}) == [0]


def test_two_factor_contract_matches_torch_einsum() -> None:
    a, b = _factors()[1], _factors()[3]
    expected = torch.einsum(b.values, [4, 3], a.values, [1, 2], [4, 2])
    assert torch.equal(contract([b, a], (2,)).values, expected)
