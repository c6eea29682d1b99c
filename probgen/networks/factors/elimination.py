"""Variable elimination: sum-product and max-product elimination, backward sampling.

Example:
    >>> import torch
    >>> from probgen.networks.factors.algebra import Factor
    >>> from probgen.networks.factors.elimination import eliminate
    >>> prior = Factor((0,), torch.tensor([0.3, 0.7], dtype=torch.float64))
    >>> table, log_scale = eliminate([prior], keep=())
    >>> round(float(table.values.reshape(-1)[0] * log_scale.exp()), 6)
    1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.networks.factors.algebra import (
    Factor,
    contract,
    contraction_equation,
    einsum_equation,
)
from probgen.networks.factors.orders import min_fill_order, moral_adjacency


# ---- variable elimination -------------------------------------------------------------------
def _rescale(factor: Factor) -> tuple[Factor, Tensor]:
    """Divide a factor by its largest entry (per batch row); return the log of that scale."""
    values = factor.values
    if factor.batched:
        scale = values.reshape(values.shape[0], -1).amax(dim=1) if values.dim() > 1 else values
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        shaped = safe.reshape(-1, *([1] * (values.dim() - 1)))
        return Factor(factor.variables, values / shaped, True), torch.log(scale)
    scale = values.amax() if values.numel() else values.new_tensor(1.0)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return Factor(factor.variables, values / safe, False), torch.log(scale).reshape(1)


# min-fill orders by (factor scopes, cardinalities, eliminated set): batched queries with the
# same evidence columns rebuild the same order on every call, and min-fill is quadratic
_ORDERS: dict[tuple, list[int]] = {}
_ORDERS_LIMIT = 1024


def _cached_order(
    factors: Sequence[Factor], cards: dict[int, int], eliminate: set[int]
) -> list[int]:
    """`min_fill_order` of the factors' interaction graph, memoised (orders are deterministic)."""
    key = (
        tuple(f.variables for f in factors),
        tuple(sorted(cards.items())),
        frozenset(eliminate),
    )
    order = _ORDERS.get(key)
    if order is None:
        adjacency = moral_adjacency((f.variables for f in factors), cards)
        order = min_fill_order(adjacency, cards, eliminate=eliminate)
        if len(_ORDERS) >= _ORDERS_LIMIT:
            _ORDERS.clear()
        _ORDERS[key] = order
    return list(order)


def _sum_out(
    factors: Sequence[Factor], variables: Iterable[int], order: Sequence[int] | None
) -> tuple[list[Factor], Tensor, dict[int, int], int]:
    """Sum `variables` out of a pool of factors; return the pool, log scale, cards, batch."""
    cards: dict[int, int] = {}
    for factor in factors:
        for axis, variable in enumerate(factor.variables):
            cards[variable] = factor.values.shape[axis + int(factor.batched)]
    variables = set(variables)
    if order is None:
        order = _cached_order(factors, cards, variables & set(cards))
    pool = list(factors)
    batch = max((f.values.shape[0] for f in factors if f.batched), default=1)
    log_scale = torch.zeros(batch, dtype=torch.float64, device=factors[0].values.device)
    for variable in order:
        involved = [f for f in pool if variable in f.variables]
        if not involved:
            continue
        pool = [f for f in pool if variable not in f.variables]
        scope: list[int] = []
        for f in involved:
            scope.extend(u for u in f.variables if u != variable and u not in scope)
        product, scale = _rescale(contract(involved, scope))
        log_scale = log_scale + scale.to(log_scale.dtype)
        pool.append(product)
    return pool, log_scale, cards, batch


@dataclass(frozen=True)
class _Plan:
    """A recorded sum-product elimination: which pool slots each step multiplies, by what
    einsum equation, for factors of given scopes and shapes. Batched queries repeat the same
    elimination call after call; replaying it skips the order search and the per-step
    bookkeeping, which cost more than the small contractions themselves."""

    steps: tuple[tuple[tuple[int, ...], str, bool], ...]
    final: tuple[tuple[int, ...], str, bool]
    batch: int
    # the same elimination with chains of steps fused (None: nothing to fuse)
    fused_steps: tuple[tuple[tuple[int, ...], str, bool], ...] | None = None
    fused_final: tuple[tuple[int, ...], str, bool] | None = None


_PLANS: dict[tuple, _Plan] = {}
_PLANS_LIMIT = 256


def _plan(factors: Sequence[Factor], keep: tuple[int, ...], order: Sequence[int] | None) -> _Plan:
    """The elimination of `eliminate` as slot operations (the same order, scopes and equations)."""
    scopes = [(f.variables, f.batched) for f in factors]
    key = (
        tuple((f.variables, f.batched, tuple(f.values.shape)) for f in factors),
        keep,
        None if order is None else tuple(order),
    )
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    cards: dict[int, int] = {}
    for factor in factors:
        for axis, variable in enumerate(factor.variables):
            cards[variable] = factor.values.shape[axis + int(factor.batched)]
    summed = set(cards) - set(keep)
    if order is None:
        order = _cached_order(factors, cards, summed)
    pool = list(range(len(scopes)))
    steps = []
    for variable in order:
        if variable not in summed:
            continue
        involved = tuple(slot for slot in pool if variable in scopes[slot][0])
        if not involved:
            continue
        pool = [slot for slot in pool if variable not in scopes[slot][0]]
        scope: list[int] = []
        for slot in involved:
            scope.extend(u for u in scopes[slot][0] if u != variable and u not in scope)
        equation, batched = contraction_equation([scopes[slot] for slot in involved], scope)
        steps.append((involved, equation, batched))
        scopes.append((tuple(scope), batched))
        pool.append(len(scopes) - 1)
    for variable in keep:
        if not any(variable in scopes[slot][0] for slot in pool):
            raise ValueError(f"variable {variable} to keep is in no factor")
    batch = max((f.values.shape[0] for f in factors if f.batched), default=1)
    equation, batched = contraction_equation([scopes[slot] for slot in pool], keep)
    final = (tuple(pool), equation, batched)
    fused_steps = fused_final = None
    if any(f.batched for f in factors):
        # unbatched eliminations (a Markov network's partition function while it is fitted)
        # keep their step-by-step arithmetic, so seeded fits stay bit-identical
        merged, renumbered = _merge_chains(len(factors), scopes, steps)
        if len(merged) < len(steps):
            fused_steps = tuple(merged)
            fused_final = (tuple(renumbered[slot] for slot in pool), equation, batched)
    plan = _Plan(tuple(steps), final, batch, fused_steps, fused_final)  # type: ignore[arg-type]
    if len(_PLANS) >= _PLANS_LIMIT:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


# Consecutive steps where each consumes the previous one's product run as one einsum (opt_einsum
# still contracts pairwise inside, in C++): fewer Python-level steps and rescalings. Without the
# rescaling between fused steps an intermediate could underflow, so a replay whose fused
# products fall below _FUSED_FLOOR (or to zero) is redone step by step.
_CHAIN_STEPS = 4
_CHAIN_LETTERS = 16
_FUSED_FLOOR = 1e-200


def _merge_chains(
    n_inputs: int,
    scopes: list[tuple[tuple[int, ...], bool]],
    steps: list[tuple[tuple[int, ...], str, bool]],
) -> tuple[list[tuple[tuple[int, ...], str, bool]], dict[int, int]]:
    """Fuse chains of steps; return the new steps and old slot -> new slot for the survivors."""
    groups: list[list] = []  # [input slots, output slot, steps fused]
    for k, (inputs, _, _) in enumerate(steps):
        out = n_inputs + k
        last = groups[-1] if groups else None
        if last is not None and last[1] in inputs and last[2] < _CHAIN_STEPS:
            fused = last[0] + [slot for slot in inputs if slot != last[1]]
            letters = {v for slot in fused for v in scopes[slot][0]}
            if len(letters) + 1 <= _CHAIN_LETTERS:
                last[0], last[1], last[2] = fused, out, last[2] + 1
                continue
        groups.append([list(inputs), out, 1])
    renumbered = {slot: slot for slot in range(n_inputs)}
    merged = []
    for j, (inputs, out, _) in enumerate(groups):
        equation, batched = contraction_equation([scopes[slot] for slot in inputs], scopes[out][0])
        merged.append((tuple(renumbered[slot] for slot in inputs), equation, batched))
        renumbered[out] = n_inputs + j
    return merged, renumbered


def _replay(
    values: list[Tensor],
    steps: Sequence[tuple[tuple[int, ...], str, bool]],
    final: tuple[tuple[int, ...], str, bool],
    batch: int,
    floor: float | None,
) -> tuple[Tensor, Tensor] | None:
    """Run recorded steps on the factors' values; None when a product falls below `floor`.

    With a `floor` the products are not rescaled step by step: one check that every row of
    every product keeps its largest entry above the floor replaces a division and a log per
    step (a third of a batched query's contraction time). Every factor entry is at most 1
    for a Bayesian network but not for a Markov network, so a product may also overflow:
    a non-finite product fails the check too, and the caller replays step by step."""
    slots = list(values)
    log_scale = torch.zeros(batch, dtype=torch.float64, device=slots[0].device)
    if floor is not None:
        lowest, highest = [], []
        for inputs, equation, batched in steps:
            product = einsum_equation(equation, [slots[i] for i in inputs])
            rows = product.reshape(product.shape[0], -1) if batched else product.reshape(1, -1)
            largest = rows.amax(dim=1) if rows.shape[1] else rows.new_ones(1)
            lowest.append(largest.min())
            highest.append(largest.max())
            slots.append(product)
        if lowest and not (
            bool((torch.stack(lowest) >= floor).all())
            and bool(torch.isfinite(torch.stack(highest)).all())
        ):
            return None
    else:
        for inputs, equation, batched in steps:
            product, scale = _rescale_values(
                einsum_equation(equation, [slots[i] for i in inputs]), batched
            )
            log_scale = log_scale + scale.to(log_scale.dtype)
            slots.append(product)
    inputs, equation, batched = final
    if inputs:
        result = einsum_equation(equation, [slots[i] for i in inputs])
    else:
        result = slots[0].new_ones(())
    if not batched:
        result = result.unsqueeze(0).expand(batch, *result.shape)
    result, scale = _rescale_values(result, True)
    return result, log_scale + scale.to(log_scale.dtype)


def _rescale_values(values: Tensor, batched: bool) -> tuple[Tensor, Tensor]:
    """`_rescale` on a bare tensor: (values / largest entry per row, log of that entry)."""
    if batched:
        scale = values.reshape(values.shape[0], -1).amax(dim=1) if values.dim() > 1 else values
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        return values / safe.reshape(-1, *([1] * (values.dim() - 1))), torch.log(scale)
    scale = values.amax() if values.numel() else values.new_tensor(1.0)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return values / safe, torch.log(scale).reshape(1)


def eliminate(
    factors: Sequence[Factor],
    keep: Sequence[int] = (),
    *,
    order: Sequence[int] | None = None,
) -> tuple[Factor, Tensor]:
    """Sum-product variable elimination: sum out every variable not in `keep`.

    Args:
        factors: the factors (some may be batched; all batched ones share one batch size).
        keep: the variables of the result, in order.
        order: elimination order of the summed-out variables (default weighted min-fill).

    Returns:
        (table, log_scale): a batched factor over `keep` with shape (batch, *cards) (batch 1
        when no input is batched) and the log of the scale it was divided by, shape (batch,);
        the true result is `table.values * exp(log_scale)`.
    """
    keep = tuple(keep)
    if not factors:
        raise ValueError("eliminate needs at least one factor")
    plan = _plan(factors, keep, order)
    values = [f.values for f in factors]
    outcome = None
    if plan.fused_steps is not None and plan.fused_final is not None:
        outcome = _replay(values, plan.fused_steps, plan.fused_final, plan.batch, _FUSED_FLOOR)
    if outcome is None:
        outcome = _replay(values, plan.steps, plan.final, plan.batch, None)
    table, log_scale = outcome
    return Factor(keep, table, True), log_scale


def max_eliminate(
    factors: Sequence[Factor],
    maximise: Sequence[int],
    *,
    order: Sequence[int] | None = None,
    sum_order: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """MAP by elimination: sum out the variables not in `maximise`, then max out `maximise`.

    With `maximise` holding every variable this is the most probable explanation (MPE).

    Args:
        factors: the factors (some may be batched).
        maximise: the variables whose jointly most probable assignment is wanted.
        order: elimination order of `maximise` (default weighted min-fill).
        sum_order: elimination order of the summed-out variables (default weighted min-fill).

    Returns:
        (assignment, log_value): long tensor (batch, len(maximise)) of the best states, and the
        log of the (unnormalised) maximal value per batch row.
    """
    maximise = tuple(maximise)
    every = {v for f in factors for v in f.variables}
    pool, log_scale, cards, batch = _sum_out(factors, every - set(maximise), sum_order)
    if order is None:
        adjacency = moral_adjacency((f.variables for f in pool), maximise)
        order = min_fill_order(adjacency, cards, eliminate=maximise)
    # Max out the MAP variables one by one, keeping argmax tables for the traceback.
    traceback: list[tuple[int, Factor]] = []
    for variable in order:
        involved = [f for f in pool if variable in f.variables]
        pool = [f for f in pool if variable not in f.variables]
        scope: list[int] = []
        for f in involved:
            scope.extend(u for u in f.variables if u != variable and u not in scope)
        joint = contract(involved, (variable, *scope), batch_size=batch)
        best, best_state = joint.values.max(dim=1)
        traceback.append((variable, Factor(tuple(scope), best_state, True)))
        reduced, scale = _rescale(Factor(tuple(scope), best, True))
        log_scale = log_scale + scale
        pool.append(reduced)
    final = torch.ones(batch, dtype=log_scale.dtype, device=log_scale.device)
    for f in pool:
        final = final * f.values.reshape(-1).to(final.dtype).expand(batch)
    log_value = log_scale + torch.log(final)
    chosen: dict[int, Tensor] = {}
    rows = torch.arange(batch, device=log_scale.device)
    for variable, argmax in reversed(traceback):
        index = [rows] + [chosen[u] for u in argmax.variables]
        chosen[variable] = argmax.values[tuple(index)]
    assignment = torch.stack([chosen[v] for v in maximise], dim=1)
    return assignment, log_value


# ---- exact sampling -------------------------------------------------------------------------
def sample_by_elimination(
    factors: Sequence[Factor],
    cardinalities: Mapping[int, int],
    n: int,
    *,
    generator: torch.Generator | None = None,
    order: Sequence[int] | None = None,
) -> tuple[dict[int, Tensor], Tensor]:
    """Exact samples from the normalised product of `factors` (backward sampling after VE).

    Sum-product elimination keeps each step's product table; sampling then runs the order
    backwards, drawing each variable from its table given the variables drawn after it.

    Args:
        factors: unbatched non-negative factors.
        cardinalities: number of states of each variable.
        n: number of samples.
        generator: source of randomness.
        order: elimination order (default weighted min-fill).

    Returns:
        (samples, log_partition): variable id -> long tensor (n,), and log of the normaliser.
    """
    cards = dict(cardinalities)
    adjacency = moral_adjacency((f.variables for f in factors), cards)
    if order is None:
        order = min_fill_order(adjacency, cards)
    pool = list(factors)
    steps: list[tuple[int, Factor]] = []
    log_partition = torch.zeros((), dtype=torch.float64)
    for variable in order:
        involved = [f for f in pool if variable in f.variables]
        pool = [f for f in pool if variable not in f.variables]
        if not involved:
            device = factors[0].values.device if factors else "cpu"
            involved = [Factor((variable,), torch.ones(cards[variable], device=device))]
        scope = []
        for f in involved:
            scope.extend(u for u in f.variables if u != variable and u not in scope)
        joint = contract(involved, (*scope, variable))
        steps.append((variable, joint))
        reduced, scale = _rescale(Factor(tuple(scope), joint.values.sum(dim=-1)))
        log_partition = log_partition + scale.reshape(()).cpu()
        pool.append(reduced)
    for f in pool:
        log_partition = log_partition + torch.log(f.values.reshape(()).cpu())
    drawn: dict[int, Tensor] = {}
    for variable, joint in reversed(steps):
        index = tuple(drawn[u] for u in joint.variables[:-1])
        rows = joint.values[index] if index else joint.values.expand(n, -1)
        cumulative = rows.cumsum(dim=-1)
        uniform = (
            torch.rand(n, 1, generator=generator, device=rows.device, dtype=cumulative.dtype)
            * cumulative[:, -1:]
        )
        state = (uniform >= cumulative).sum(dim=-1).clamp_max(rows.shape[-1] - 1)
        drawn[variable] = state
    return drawn, log_partition
