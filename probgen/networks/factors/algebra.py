"""Factor algebra: the `Factor` table, products with marginalisation, evidence indicators.

Example:
    >>> import torch
    >>> from probgen.networks.factors.algebra import Factor, contract
    >>> a = Factor((0,), torch.tensor([0.3, 0.7], dtype=torch.float64))
    >>> b = Factor((0, 1), torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64))
    >>> [round(v, 6) for v in contract([a, b], (1,)).values.tolist()]
    [0.41, 0.59]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Factor:
    """A table over integer variable ids.

    Attributes:
        variables: the variable id of each table axis (after the batch axis when `batched`).
        values: tensor of shape (*cardinalities) or, when `batched`, (batch, *cardinalities).
        batched: whether `values` has a leading batch axis.
    """

    variables: tuple[int, ...]
    values: Tensor
    batched: bool = False

    def __post_init__(self) -> None:
        expected = len(self.variables) + int(self.batched)
        if self.values.dim() != expected:
            raise ValueError(
                f"Factor over {self.variables} (batched={self.batched}) needs {expected} "
                f"dimensions, got shape {tuple(self.values.shape)}"
            )


# ---- contraction ----------------------------------------------------------------------------
# opt_einsum contraction paths by (equation, operand shapes, strategy): torch.einsum searches
# the path again on every call, which costs more than the contraction for the small tables
# of batched queries (the same contractions recur call after call)
_PATHS: dict[tuple, list[int]] = {}
_PATHS_LIMIT = 4096


def _letter(axis: int) -> str:
    # torch.einsum's sublist-to-letter mapping, so the equation (and path) is the one it builds
    return chr(ord("A") + axis) if axis < 26 else chr(ord("a") + axis - 26)


def _einsum(operands: list, output: list[int]) -> Tensor:
    """`torch.einsum(*operands, output)` with the contraction path cached (same result)."""
    tensors = operands[0::2]
    equation = ",".join("".join(map(_letter, axes)) for axes in operands[1::2])
    equation += "->" + "".join(map(_letter, output))
    return einsum_equation(equation, tensors)


def einsum_equation(equation: str, tensors: Sequence[Tensor]) -> Tensor:
    """`torch.einsum(equation, *tensors)` with the opt_einsum contraction path cached.

    Example:
        >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
        >>> einsum_equation("AB,BC->AC", [a, b]).shape
        torch.Size([2, 4])
    """
    import torch.backends.opt_einsum as backend

    tensors = list(tensors)
    vf = getattr(torch, "_VF", None)
    if (
        vf is None
        or (len(tensors) > 2 and not backend.is_available())
        or torch.overrides.has_torch_function(tensors)
    ):
        return torch.einsum(equation, *tensors)
    if len(tensors) <= 2 or not backend.enabled:
        # what torch.einsum runs for these, without re-parsing the equation
        return vf.einsum(equation, tensors)
    key = (equation, tuple(tuple(t.shape) for t in tensors), backend.strategy)
    path = _PATHS.get(key)
    if path is None:
        steps, _ = backend.get_opt_einsum().contract_path(
            equation, *tensors, optimize=backend.strategy
        )
        path = [axis for step in steps for axis in step]
        if len(_PATHS) >= _PATHS_LIMIT:
            _PATHS.clear()
        _PATHS[key] = path
    return vf.einsum(equation, tensors, path=path)


def contraction_equation(
    scopes: Sequence[tuple[tuple[int, ...], bool]], keep: Sequence[int]
) -> tuple[str, bool]:
    """The einsum equation `contract` runs for factors of these (variables, batched) scopes.

    Returns:
        (equation, batched): the equation in torch's sublist letters, and whether its result
        has a batch axis.

    Example:
        >>> contraction_equation([((0,), False), ((0, 1), True)], (1,))
        ('A,CAB->CB', True)
    """
    index: dict[int, int] = {}
    for variables, _ in scopes:
        for variable in variables:
            index.setdefault(variable, len(index))
    for variable in keep:
        if variable not in index:
            raise ValueError(f"variable {variable} to keep is in no factor")
    batch_axis = len(index)
    if batch_axis >= 52:
        raise ValueError("contract supports at most 51 distinct variables per call")
    terms = []
    batched = False
    for variables, is_batched in scopes:
        axes = [index[v] for v in variables]
        if is_batched:
            axes = [batch_axis, *axes]
            batched = True
        terms.append("".join(map(_letter, axes)))
    output = [index[v] for v in keep]
    if batched:
        output = [batch_axis, *output]
    return ",".join(terms) + "->" + "".join(map(_letter, output)), batched


def contract(
    factors: Sequence[Factor], keep: Sequence[int], *, batch_size: int | None = None
) -> Factor:
    """Multiply `factors` and sum out every variable not in `keep`, as one einsum.

    Args:
        factors: the factors to multiply (batched ones share the batch size).
        keep: variable ids of the result's axes, in order.
        batch_size: batch size of the result when no factor is batched but a batched result is
            wanted (the result is broadcast); None keeps it unbatched.

    Returns:
        The product factor over `keep` (batched when any input is).
    """
    keep = tuple(keep)
    if not factors:
        raise ValueError("contract needs at least one factor")
    equation, batched = contraction_equation([(f.variables, f.batched) for f in factors], keep)
    values = einsum_equation(equation, [f.values for f in factors])
    if not batched and batch_size is not None:
        values = values.unsqueeze(0).expand(batch_size, *values.shape)
        batched = True
    return Factor(keep, values, batched)


def evidence_factors(
    observed: Tensor, variables: Sequence[int], cardinalities: Mapping[int, int] | Sequence[int]
) -> dict[int, Factor]:
    """Indicator factors for a batch of (partial) evidence.

    Args:
        observed: long tensor (batch, len(variables)); -1 marks "no evidence" in that row.
        variables: the variable id of each column.
        cardinalities: number of states of each variable id.

    Returns:
        Mapping variable id -> batched Factor of 0/1 (all ones where that row has no evidence).
    """
    result: dict[int, Factor] = {}
    if not len(variables):
        return result
    cards = [int(cardinalities[variable]) for variable in variables]
    # every column's indicator in one comparison (column-major, so each slice is one block);
    # a per-column loop cost several small tensor ops per observed variable
    states = observed.T[:, :, None]
    hits = torch.arange(max(cards), device=observed.device) == states
    indicators = (hits | (states < 0)).to(torch.float64)
    for column, variable in enumerate(variables):
        indicator = indicators[column, :, : cards[column]]
        result[variable] = Factor((variable,), indicator, True)
    return result


def _normalise(factor: Factor) -> tuple[Factor, Tensor]:
    """Normalise a batched factor per batch row; return the log of each row's total."""
    values = factor.values
    total = values.reshape(values.shape[0], -1).sum(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    shaped = safe.reshape(-1, *([1] * (values.dim() - 1)))
    return Factor(factor.variables, values / shaped, True), torch.log(total)
