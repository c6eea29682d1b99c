"""Soft (virtual) evidence and evidence checks shared by the discrete networks' queries.

Soft evidence on a variable is a likelihood vector, one non-negative weight per state (as
pgmpy's `virtual_evidence`): the query conditions on an unseen observation whose probability
given each state is proportional to that weight. It enters inference as one more factor over
the variable, so a batch of evidence rows stays one contraction; a (n_rows, n_states) array
gives each row its own likelihood.

Example:
    >>> import probgen
    >>> from probgen.networks.evidence import encode_likelihoods
    >>> asia = probgen.BayesianNetwork.from_example("asia")
    >>> likelihoods, rows = encode_likelihoods(asia._codec, {"smoke": [0.8, 0.2]}, 1)
    >>> rows, [round(v, 2) for v in likelihoods[asia.variables.index("smoke")][0].tolist()]
    (1, [0.8, 0.2])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

import probgen.networks.factors as ops
from probgen.core.errors import DataError

__all__ = ["encode_likelihoods", "likelihood_factors", "reject_observed", "with_rows"]


def _pgmpy_pairs(codec: Any, cpds: Sequence[Any], name: str) -> list[tuple[str, Any]]:
    """(variable, likelihood) pairs from pgmpy `TabularCPD`s (state order as in the codec)."""
    pairs = []
    for index, cpd in enumerate(cpds):
        if not hasattr(cpd, "variables") or not hasattr(cpd, "values"):
            raise DataError(
                f"{name}[{index}] must be a pgmpy TabularCPD; pass a dict "
                "{variable: likelihood} otherwise"
            )
        variable = cpd.variables[0]
        values = np.asarray(cpd.values, dtype=np.float64).reshape(-1)
        given = getattr(cpd, "state_names", {}).get(variable)
        if given is not None:
            labels = codec.states_of(variable) if variable in codec.position else []
            lookup = {str(s): float(v) for s, v in zip(given, values)}
            if set(lookup) == set(labels):
                values = np.asarray([lookup[s] for s in labels])
        pairs.append((variable, values))
    return pairs


def encode_likelihoods(
    codec: Any,
    virtual_evidence: Any,
    rows: int,
    name: str = "virtual_evidence",
    device: torch.device | str | None = None,
) -> tuple[dict[int, Tensor], int]:
    """Soft evidence as likelihood tensors per variable column, and the query batch size.

    Args:
        codec: the network's `StateCodec`.
        virtual_evidence: None, a dict {variable: likelihood} with each likelihood of shape
            (n_states,) (every query row) or (n_rows, n_states) (one per row), or a list of
            pgmpy `TabularCPD`s as pgmpy's `virtual_evidence` takes.
        rows: number of hard-evidence rows (1 for dict or no evidence).
        name: the argument's name in error messages.
        device: where the tensors go.

    Returns:
        (likelihoods, rows): column -> float64 tensor (rows, n_states), and the batch size,
        which a per-row likelihood sets when the hard evidence is a single row.

    Raises:
        DataError: unknown variables, a variable given twice, wrong shapes, negative or
            non-finite weights, a row of zeros, or a row count that differs from the
            evidence's.
    """
    if virtual_evidence is None:
        return {}, rows
    if isinstance(virtual_evidence, Mapping):
        pairs = list(virtual_evidence.items())
    elif isinstance(virtual_evidence, (list, tuple)):
        pairs = _pgmpy_pairs(codec, virtual_evidence, name)
    else:
        raise DataError(
            f"{name} must be a dict {{variable: likelihood}} or a list of pgmpy TabularCPDs, "
            f"got {type(virtual_evidence).__name__}"
        )
    arrays: dict[int, np.ndarray] = {}
    for variable, likelihood in pairs:
        column = codec.index_of(variable, name)
        if column in arrays:
            raise DataError(f"{name} gives variable {variable!r} twice")
        card = len(codec.states_of(variable))
        if isinstance(likelihood, Tensor):
            likelihood = likelihood.detach().cpu().numpy()
        try:
            values = np.asarray(likelihood, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise DataError(f"{name}[{variable!r}] is not an array of numbers: {error}") from error
        if values.ndim not in (1, 2) or values.shape[-1] != card:
            raise DataError(
                f"{name}[{variable!r}] has shape {values.shape}; expected ({card},) or "
                f"(n_rows, {card}) (one weight per state of {variable!r})"
            )
        if not np.isfinite(values).all() or (values < 0).any():
            raise DataError(f"{name}[{variable!r}] has negative or non-finite weights")
        if (values.reshape(-1, card).sum(axis=1) <= 0).any():
            raise DataError(f"{name}[{variable!r}] gives every state weight zero")
        arrays[column] = values
    per_row = {values.shape[0] for values in arrays.values() if values.ndim == 2}
    if len(per_row) > 1:
        raise DataError(f"{name}: per-row likelihoods have different row counts {sorted(per_row)}")
    if per_row:
        count = per_row.pop()
        if rows not in (1, count):
            raise DataError(f"{name} has {count} rows of likelihoods for {rows} rows of evidence")
        rows = count
    likelihoods = {
        column: torch.as_tensor(values, dtype=torch.float64, device=device)
        .reshape(-1, values.shape[-1])
        .expand(rows, -1)
        for column, values in arrays.items()
    }
    return likelihoods, rows


def likelihood_factors(likelihoods: Mapping[int, Tensor]) -> list[ops.Factor]:
    """One batched factor per variable with soft evidence."""
    return [ops.Factor((column,), values, True) for column, values in likelihoods.items()]


def with_rows(codes: Tensor, rows: int) -> Tensor:
    """Evidence codes (1 or `rows`, n_variables) repeated to `rows` rows."""
    return codes if codes.shape[0] == rows else codes.expand(rows, -1)


def reject_observed(codes: Tensor, variables: Sequence[str], position: Mapping[str, int]) -> None:
    """Raise `DataError` when a queried variable is also observed (in any evidence row).

    A posterior of an observed variable is its evidence indicator; pgmpy refuses such a query
    too, and an indicator returned silently usually hides a mistake in the caller.
    """
    for variable in variables:
        column = codes[:, position[variable]]
        if bool((column >= 0).any()):
            raise DataError(
                f"variable {variable!r} is both queried and observed in the evidence; "
                "drop it from the query (or from the evidence)"
            )
