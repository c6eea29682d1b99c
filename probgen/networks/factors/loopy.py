"""Loopy belief propagation on a factor graph (batched over evidence sets, damped).

Example:
    >>> import torch
    >>> from probgen.networks.factors.algebra import Factor
    >>> from probgen.networks.factors.loopy import loopy_belief_propagation
    >>> table = torch.tensor([[0.4, 0.1], [0.2, 0.3]], dtype=torch.float64)
    >>> marginals, info = loopy_belief_propagation([Factor((0, 1), table)], {0: 2, 1: 2})
    >>> info["converged"], [round(v, 6) for v in marginals[0][0].tolist()]
    (True, [0.5, 0.5])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from probgen.networks.factors.algebra import Factor, _normalise, contract


def loopy_belief_propagation(
    factors: Sequence[Factor],
    cardinalities: Mapping[int, int],
    evidence: Mapping[int, Factor] | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-8,
    damping: float = 0.0,
) -> tuple[dict[int, Tensor], dict[str, float | int | bool]]:
    """Synchronous (flooding) sum-product on the factor graph, batched over evidence rows.

    Args:
        factors: unbatched factors.
        cardinalities: number of states of each variable.
        evidence: variable id -> batched indicator factor (batch, card).
        max_iter: most message-passing iterations.
        tol: stop when no message changes by more than this (max absolute difference).
        damping: weight of the old message in each update (0 = none).

    Returns:
        (marginals, info): variable id -> approximate posterior (batch, card); info has
        `n_iter`, `converged` and `max_change` (the last iteration's largest message change).
    """
    evidence = dict(evidence or {})
    batch = next(iter(evidence.values())).values.shape[0] if evidence else 1
    device = factors[0].values.device if factors else "cpu"
    dtype = torch.float64
    variables = sorted(cardinalities)
    to_factor: dict[tuple[int, int], Tensor] = {}
    to_variable: dict[tuple[int, int], Tensor] = {}
    neighbours: dict[int, list[int]] = {v: [] for v in variables}
    for index, factor in enumerate(factors):
        for v in factor.variables:
            neighbours[v].append(index)
            uniform = torch.full((batch, cardinalities[v]), 1.0 / cardinalities[v], dtype=dtype)
            to_factor[(v, index)] = uniform.to(device)
            to_variable[(index, v)] = uniform.to(device)
    local = {
        v: (
            evidence[v].values.to(dtype)
            if v in evidence
            else torch.ones(batch, cardinalities[v], dtype=dtype, device=device)
        )
        for v in variables
    }
    converged = False
    change = float("inf")
    n_iter = 0
    for step in range(1, max_iter + 1):
        n_iter = step
        change = 0.0
        new_to_variable = {}
        for index, factor in enumerate(factors):
            for v in factor.variables:
                operands = [factor] + [
                    Factor((u,), to_factor[(u, index)], True) for u in factor.variables if u != v
                ]
                message, _ = _normalise(contract(operands, (v,), batch_size=batch))
                old = to_variable[(index, v)]
                updated = (1 - damping) * message.values + damping * old
                change = max(change, float((updated - old).abs().max()))
                new_to_variable[(index, v)] = updated
        to_variable = new_to_variable
        for v in variables:
            for index in neighbours[v]:
                product = local[v].clone()
                for other in neighbours[v]:
                    if other != index:
                        product = product * to_variable[(other, v)]
                total = product.sum(dim=1, keepdim=True)
                product = product / torch.where(total > 0, total, torch.ones_like(total))
                change = max(change, float((product - to_factor[(v, index)]).abs().max()))
                to_factor[(v, index)] = product
        if change < tol:
            converged = True
            break
    marginals: dict[int, Tensor] = {}
    for v in variables:
        belief = local[v].clone()
        for index in neighbours[v]:
            belief = belief * to_variable[(index, v)]
        total = belief.sum(dim=1, keepdim=True)
        marginals[v] = belief / torch.where(total > 0, total, torch.ones_like(total))
    info = {"n_iter": n_iter, "converged": converged, "max_change": change}
    return marginals, info
