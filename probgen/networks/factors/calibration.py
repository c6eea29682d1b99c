"""Dense (Hugin) calibration of a compiled junction tree for batches of evidence sets.

Example:
    >>> import torch
    >>> from probgen.networks.factors.algebra import Factor
    >>> from probgen.networks.factors.calibration import calibrate_dense, compile_dense
    >>> from probgen.networks.factors.junction_tree import build_junction_tree, clique_potentials
    >>> table = torch.tensor([[0.4, 0.1], [0.2, 0.3]], dtype=torch.float64)
    >>> tree = build_junction_tree([(0, 1)], {0: 2, 1: 2})
    >>> plan = compile_dense(tree, clique_potentials(tree, [Factor((0, 1), table)]))
    >>> _, log_z, marginals = calibrate_dense(plan, batch_size=1)
    >>> [round(v, 6) for v in marginals[0][0].tolist()]
    [0.5, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from probgen.networks.factors.algebra import Factor, contract
from probgen.networks.factors.junction_tree import JunctionTree

# ---- dense (Hugin) calibration --------------------------------------------------------------
_MAX_PROJECTION_ENTRIES = 1 << 21
# A projection matrix costs 2 * width flops per clique entry and row, a chain of axis sums about
# one memory pass per entry: on CPU the matrix product wins only for narrow targets (single
# variables, small separators), so wider targets are summed axis by axis instead.
_MAX_PROJECTED_WIDTH = 16


@dataclass
class DenseTree:
    """A junction tree compiled for dense, batched Hugin message passing.

    Every clique keeps a dense potential over its variables (in `tree.cliques` order). Sums of
    a clique table onto a separator (or onto one variable) are matrix products with 0/1
    projection matrices built here, so each clique costs one matrix product per pass plus a
    few elementwise kernels, whatever the batch size; wide targets and cliques too large for
    a projection matrix use tensor reductions instead (`down_projected[c][t]` says which
    targets of clique c the projection covers).
    """

    tree: JunctionTree
    potentials: list[Tensor]
    parent_view: list[tuple[int, ...]]
    evidence_axis: dict[int, tuple[int, int]]
    up_projection: list[Tensor | None]
    down_projection: list[Tensor | None]
    down_targets: list[list[tuple[str, int]]]
    down_projected: list[list[bool]]
    # Fixed per-clique plans, worked out once here rather than on every calibration (the
    # Python bookkeeping cost more than the products for batches of a few hundred rows):
    # the separator to the parent in the parent's axis order and in this clique's order, the
    # variable list of each downward target (clique order) and the widths of projected lists.
    up_separator: list[list[int]] = field(default_factory=list)
    up_kept: list[list[int]] = field(default_factory=list)
    up_widths: list[list[int]] = field(default_factory=list)
    down_lists: list[list[list[int]]] = field(default_factory=list)
    down_widths: list[list[int]] = field(default_factory=list)
    # per clique: its separator variables in its own order and the broadcast shape of a
    # downward message over its axes
    child_order: list[list[int]] = field(default_factory=list)
    child_shape: list[list[int]] = field(default_factory=list)


def _projection(
    clique: Sequence[int], cards: Mapping[int, int], targets: Sequence[Sequence[int]], device
) -> Tensor:
    """0/1 matrix (clique entries, sum of target sizes): entry -> configuration of each target
    variable list (row-major in that list's order)."""
    size = math.prod(cards[v] for v in clique)
    flat = torch.arange(size, device=device)
    states = {}
    for v in reversed(clique):
        states[v] = flat % cards[v]
        flat = flat // cards[v]
    blocks = []
    for target in targets:
        config = torch.zeros(size, dtype=torch.long, device=device)
        for v in target:
            config = config * cards[v] + states[v]
        width = math.prod(cards[v] for v in target)
        blocks.append(torch.nn.functional.one_hot(config, width).to(torch.float64))
    return torch.cat(blocks, dim=1)


def compile_dense(tree: JunctionTree, potentials: Sequence[Factor | None]) -> DenseTree:
    """Dense clique potentials, message plans and projection matrices for `calibrate_dense`."""
    cards = tree.cardinalities
    device = next((p.values.device for p in potentials if p is not None), torch.device("cpu"))
    dense: list[Tensor] = []
    views: list[tuple[int, ...]] = []
    up: list[Tensor | None] = []
    down: list[Tensor | None] = []
    down_targets: list[list[tuple[str, int]]] = []
    down_projected: list[list[bool]] = []
    marginal_variables: dict[int, list[int]] = {}
    for v, c in tree.variable_clique.items():
        marginal_variables.setdefault(c, []).append(v)
    for index, clique in enumerate(tree.cliques):
        potential = potentials[index]
        shape = [cards[v] for v in clique]
        if potential is None:
            values = torch.ones(shape, dtype=torch.float64, device=device)
        else:
            padding = [
                Factor((v,), torch.ones(cards[v], dtype=potential.values.dtype, device=device))
                for v in clique
                if v not in potential.variables
            ]
            values = contract([potential, *padding], clique).values
        dense.append(values)
        size = values.numel()
        parent = tree.parent[index]
        if parent < 0:
            views.append(())
            separator_in_parent: list[int] = []
        else:
            shared = set(tree.separators[index])
            parent_clique = tree.cliques[parent]
            views.append(tuple(cards[v] if v in shared else 1 for v in parent_clique))
            separator_in_parent = [v for v in parent_clique if v in shared]
        width = math.prod(cards[v] for v in separator_in_parent)
        up.append(
            _projection(clique, cards, [separator_in_parent], device)
            if width <= _MAX_PROJECTED_WIDTH and size * width <= _MAX_PROJECTION_ENTRIES
            else None
        )
        targets: list[tuple[str, int]] = [("child", c) for c in tree.children[index]]
        targets += [("variable", v) for v in marginal_variables.get(index, [])]
        lists = [
            [v for v in clique if v in set(tree.separators[c])] if kind == "child" else [c]
            for kind, c in targets
        ]
        widths = [math.prod(cards[v] for v in members) for members in lists]
        projected = [w <= _MAX_PROJECTED_WIDTH for w in widths]
        total = sum(w for w, chosen in zip(widths, projected) if chosen)
        if total == 0 or size * total > _MAX_PROJECTION_ENTRIES:
            projected = [False] * len(lists)
        chosen_lists = [members for members, chosen in zip(lists, projected) if chosen]
        down.append(_projection(clique, cards, chosen_lists, device) if chosen_lists else None)
        down_targets.append(targets)
        down_projected.append(projected)
    evidence_axis = {v: (c, tree.cliques[c].index(v)) for v, c in tree.variable_clique.items()}
    plan = DenseTree(tree, dense, views, evidence_axis, up, down, down_targets, down_projected)
    for index, clique in enumerate(tree.cliques):
        parent = tree.parent[index]
        shared = set(tree.separators[index]) if parent >= 0 else set()
        separator = [v for v in tree.cliques[parent] if v in shared] if parent >= 0 else []
        plan.up_separator.append(separator)
        plan.up_kept.append([v for v in clique if v in shared])
        plan.up_widths.append([math.prod(cards[v] for v in separator)])
        plan.child_order.append([v for v in clique if v in shared])
        plan.child_shape.append([cards[v] if v in shared else 1 for v in clique])
        lists = [
            [v for v in clique if v in set(tree.separators[item])] if kind == "child" else [item]
            for kind, item in plan.down_targets[index]
        ]
        plan.down_lists.append(lists)
        plan.down_widths.append(
            [
                math.prod(cards[v] for v in members)
                for members, chosen in zip(lists, plan.down_projected[index])
                if chosen
            ]
        )
    return plan


def _sum_dims(values: Tensor, dims: Sequence[int], keepdim: bool = False) -> Tensor:
    """Sum over several axes one at a time, last first (several times faster than a single
    multi-axis reduction over non-contiguous axes on CPU)."""
    for dim in sorted(dims, reverse=True):
        values = values.sum(dim=dim, keepdim=keepdim)
    return values


def _normalise_rows(values: Tensor) -> tuple[Tensor, Tensor]:
    total = values.reshape(values.shape[0], -1).sum(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return values / safe.reshape(-1, *([1] * (values.dim() - 1))), total


# The dense calibration keeps the batch as the LAST axis: (*clique cardinalities, batch). Every
# elementwise product then runs over a contiguous innermost axis of length `batch`, whereas a
# leading batch axis leaves innermost loops as short as a binary variable's two states (and
# broadcasts with stride 0), which made the products several times slower on CPU. A table
# whose batch axis has length 1 does not depend on the evidence (e.g. a subtree without
# observed variables) and is broadcast rather than copied.


def _evidence_view(values: Tensor, axis: int, rank: int) -> Tensor:
    """(batch, card) -> (1, ..., card, ..., 1, batch) with `card` at clique axis `axis`."""
    shape = [1] * rank + [values.shape[0]]
    shape[axis] = values.shape[1]
    return values.T.reshape(shape)


def _normalise_columns(values: Tensor, in_place: bool = False) -> tuple[Tensor, Tensor]:
    """Divide each batch column of (*axes, batch) by its sum (zero sums left as they are);
    `in_place` for a fresh temporary (a new large tensor costs page faults on CPU)."""
    total = values.reshape(-1, values.shape[-1]).sum(dim=0)
    divisor = torch.where(total > 0, total, 1.0)
    return (values.div_(divisor) if in_place else values / divisor), total


def _sum_onto(plan: DenseTree, belief: Tensor, clique: int, members: Sequence[int]) -> Tensor:
    """Sum a clique table (*clique, batch) onto `members` (kept in clique order), flattened to
    (configurations, batch); used for wide targets and cliques too large for a projection."""
    keep = set(members)
    drop = [a for a, v in enumerate(plan.tree.cliques[clique]) if v not in keep]
    return _sum_dims(belief, drop).reshape(-1, belief.shape[-1])


def _project(
    plan: DenseTree,
    projection: Tensor | None,
    belief: Tensor,
    clique: int,
    lists: list[list[int]],
    projected: list[bool] | None = None,
    widths: list[int] | None = None,
) -> list[Tensor]:
    """Sums of a clique table (*clique, batch) onto each variable list in `lists` (clique
    order), each (configurations, batch): one matrix product for the lists the projection
    covers (`projected`, default all when there is a projection), axis sums for the rest
    (`widths`: the configuration counts of the projected lists, when known)."""
    if projected is None:
        projected = [projection is not None] * len(lists)
    if projection is None:
        return [_sum_onto(plan, belief, clique, members) for members in lists]
    sums = projection.T @ belief.reshape(-1, belief.shape[-1])
    if len(lists) == 1:
        return [sums]
    if widths is None:
        cards = plan.tree.cardinalities
        widths = [
            math.prod(cards[v] for v in members)
            for members, chosen in zip(lists, projected)
            if chosen
        ]
    pieces = iter(torch.split(sums, widths, dim=0))
    return [
        next(pieces) if chosen else _sum_onto(plan, belief, clique, members)
        for members, chosen in zip(lists, projected)
    ]


def _reorder(
    values: Tensor, cards: Mapping[int, int], order: list[int], target: list[int]
) -> Tensor:
    """(configurations over `order`, batch) -> (*cards over `target`, batch)."""
    batch = values.shape[-1]
    values = values.reshape(*(cards[v] for v in order), batch)
    if order != target:
        values = values.permute(*(order.index(v) for v in target), len(order))
    return values


def _broadcast_shape(*shapes: Sequence[int]) -> tuple[int, ...]:
    """The broadcast of shapes known to be compatible (`torch.broadcast_shapes` checks and
    traces symbolic sizes, which costs more than the small products it is asked about)."""
    rank = max(len(shape) for shape in shapes)
    result = [1] * rank
    for shape in shapes:
        offset = rank - len(shape)
        for axis, size in enumerate(shape):
            if size != 1:
                result[offset + axis] = size
    return tuple(result)


def _times(table: Tensor, factors: list[Tensor], out: Tensor | None = None) -> Tensor:
    """`table` times all `factors` (broadcasting), as a new tensor (or written into `out`, a
    flat buffer with room for the result).

    Factors are multiplied together first while their product stays small (evidence vectors,
    separator messages), then into one full-size table, then the rest in place: every
    full-size pass and every allocation (page faults on CPU) is paid only once.
    """
    factors = sorted(factors, key=lambda t: t.numel())
    shape = _broadcast_shape(table.shape, *(f.shape for f in factors))
    small, rest = factors[0], factors[1:]
    while rest and math.prod(_broadcast_shape(small.shape, rest[0].shape)) * 4 <= (
        math.prod(shape)
    ):
        small = small * rest.pop(0)
    if out is None:
        result = table.expand(shape) * small
    else:
        result = torch.mul(table.expand(shape), small, out=out[: math.prod(shape)].view(shape))
    for factor in rest:
        result.mul_(factor)
    return result


def _workspace(
    plan: DenseTree, workspace: dict | None, batch_size: int, device
) -> list[Tensor | None]:
    """Per clique a flat float64 buffer of (clique entries * batch_size), carved from one
    tensor kept in `workspace` and reused by later calls with the same batch size (None per
    clique without a workspace). Reuse matters on CPU: writing freshly allocated tables costs
    page faults that took longer than the products written into them."""
    if workspace is None:
        return [None] * len(plan.potentials)
    sizes = [p.numel() * batch_size for p in plan.potentials]
    key = (batch_size, str(device), sum(sizes))
    buffer = workspace.get(key)
    if buffer is None:
        workspace.clear()  # keep one buffer only: the memory is reused, never accumulated
        buffer = workspace[key] = torch.empty(sum(sizes), dtype=torch.float64, device=device)
    return list(torch.split(buffer, sizes))


def calibrate_dense(
    plan: DenseTree,
    evidence: Mapping[int, Tensor] | None = None,
    *,
    batch_size: int = 1,
    collect_only: bool = False,
    workspace: dict | None = None,
) -> tuple[list[Tensor | None], Tensor, dict[int, Tensor]]:
    """Batched Hugin calibration: clique beliefs, log evidence and every variable's marginal.

    Args:
        plan: from `compile_dense`.
        evidence: variable id -> (batch, card) indicator or likelihood tensor.
        batch_size: number of rows (taken from `evidence` when given).
        collect_only: stop after the upward pass (enough for the log evidence).
        workspace: a dict owned by the caller in which the clique tables are kept and reused
            by the next call with the same batch size; the beliefs returned are then views of
            it, overwritten by that next call (marginals and log evidence are not).

    Returns:
        (beliefs, log_evidence, marginals): per clique an unnormalised belief (batch, *clique
        cardinalities) (None with `collect_only`; normalise with `belief_marginal`), log
        P(evidence) per row (-inf if zero), and variable id -> normalised marginal
        (batch, card) (empty with `collect_only`).
    """
    tree = plan.tree
    cards = tree.cardinalities
    evidence = dict(evidence or {})
    if evidence:
        batch_size = next(iter(evidence.values())).shape[0]
    count = len(tree.cliques)
    # Evidence and messages are broadcast views (1, .., card, .., 1, batch): multiplying the
    # small ones together first leaves one full-size product per clique.
    extra: list[list[Tensor]] = [[] for _ in range(count)]
    for variable, values in evidence.items():
        clique, axis = plan.evidence_axis[variable]
        rank = len(tree.cliques[clique])
        extra[clique].append(_evidence_view(values.to(torch.float64), axis, rank))
    plan_views = [p.unsqueeze(-1) for p in plan.potentials]
    buffers = _workspace(plan, workspace, batch_size, plan_views[0].device)
    local: list[Tensor] = list(plan_views)
    upward: list[Tensor | None] = [None] * count
    device = local[0].device
    totals: list[Tensor] = []
    for index in tree.collect_order:
        factors = extra[index] + [upward[child] for child in tree.children[index]]
        if factors:
            local[index] = _times(local[index], factors, buffers[index])
        separator = plan.up_separator[index]
        (message,) = _project(
            plan,
            plan.up_projection[index],
            local[index],
            index,
            [separator],
            widths=plan.up_widths[index],
        )
        if plan.up_projection[index] is None and separator:
            # the reduction keeps this clique's axis order; the parent wants its own
            message = _reorder(message, cards, plan.up_kept[index], separator)
            message = message.reshape(-1, message.shape[-1])
        # the message is a fresh tensor unless it is a view of the clique table itself
        fresh = message.untyped_storage().data_ptr() != local[index].untyped_storage().data_ptr()
        message, total = _normalise_columns(message, in_place=fresh)
        totals.append(total.expand(batch_size))
        if tree.parent[index] >= 0:
            upward[index] = message.reshape(*plan.parent_view[index], message.shape[-1])
    # one logarithm and one sum for all cliques rather than two small kernels per clique
    log_evidence = (
        torch.log(torch.stack(totals)).sum(dim=0)
        if totals
        else torch.zeros(batch_size, dtype=torch.float64, device=device)
    )
    if collect_only:
        return [None] * count, log_evidence, {}
    variable_pieces: list[Tensor] = []
    variable_order: list[int] = []
    for index in reversed(tree.collect_order):
        targets = plan.down_targets[index]
        if not targets:
            continue
        lists = plan.down_lists[index]
        pieces = _project(
            plan,
            plan.down_projection[index],
            local[index],
            index,
            lists,
            plan.down_projected[index],
            plan.down_widths[index],
        )
        for (kind, item), members, piece in zip(targets, lists, pieces):
            if kind == "variable":
                variable_pieces.append(piece.expand(-1, batch_size))
                variable_order.append(item)
                continue
            # Hugin update: the child's new message is the parent's belief on the separator
            # divided by what the child sent up (0/0 counts as 0: the child's mass there is 0).
            # (piece is a sum of terms that each carry the factor `sent`, so sent = 0 gives
            # exactly 0/0 = NaN there and never x/0 = inf)
            sent = upward[item].reshape(-1, upward[item].shape[-1])
            ratio = torch.nan_to_num_(piece / sent, nan=0.0)
            ratio, _ = _normalise_columns(ratio, in_place=True)
            ratio = _reorder(ratio, cards, members, plan.child_order[item])
            ratio = ratio.reshape(*plan.child_shape[item], ratio.shape[-1])
            if local[item].shape[-1] == ratio.shape[-1] and local[item] is not plan_views[item]:
                local[item].mul_(ratio)  # in place: a fresh table costs page faults on CPU
            else:
                local[item] = local[item] * ratio
    beliefs = [b.movedim(-1, 0).expand(batch_size, *b.shape[:-1]) for b in local]
    return list(beliefs), log_evidence, _variable_marginals(variable_pieces, variable_order)


def _variable_marginals(pieces: list[Tensor], variables: list[int]) -> dict[int, Tensor]:
    """Normalise every variable's summed belief (card, batch) and turn it to (batch, card), in
    a few kernels for all variables together (one set per variable cost more than the sums).

    Each variable's total is its own sum (rows are added in order, as a column sum does);
    the marginals returned are transposed views (batch, card) of one (sum of cards, batch)
    table, not contiguous (callers that keep them copy them anyway)."""
    if not pieces:
        return {}
    stacked = torch.cat(pieces)
    sizes = [piece.shape[0] for piece in pieces]
    owner = torch.repeat_interleave(
        torch.arange(len(pieces), device=stacked.device),
        torch.tensor(sizes, device=stacked.device),
    )
    totals = torch.zeros(len(pieces), stacked.shape[1], dtype=stacked.dtype, device=stacked.device)
    totals.index_add_(0, owner, stacked)
    totals = torch.where(totals > 0, totals, 1.0)
    stacked.div_(totals.index_select(0, owner))
    return {v: piece.T for v, piece in zip(variables, torch.split(stacked, sizes, dim=0))}


def belief_marginal(
    plan: DenseTree, beliefs: Sequence[Tensor | None], clique: int, keep: Sequence[int]
) -> Tensor:
    """Normalised marginal of a calibrated clique belief over `keep` (in that order),
    shape (batch, *cardinalities); rows of zero evidence stay zero."""
    clique_variables = plan.tree.cliques[clique]
    belief = beliefs[clique]
    drop = tuple(1 + a for a, v in enumerate(clique_variables) if v not in keep)
    reduced = _sum_dims(belief, drop)
    remaining = [v for v in clique_variables if v in keep]
    reduced = reduced.permute(0, *(1 + remaining.index(v) for v in keep))
    reduced, _ = _normalise_rows(reduced)
    return reduced
