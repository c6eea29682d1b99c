"""The public contract suite: `check_density(model, data)` runs DESIGN.md's contract on a model.

It checks what every probgen model promises: `log_prob_kind` is honest, `fit` returns the
model and records `history_`, `log_prob` gives one finite figure per example and no autograd
graph, `sample` has the right shape and is reproducible from a seed, `.to()` returns the
model, a save/load round trip keeps `log_prob` and samples, and, where it can be checked,
that `exp(log_prob)` sums or integrates to one (exact sums over a finite support, a grid in
one or two dimensions, an importance-sampling estimate within its standard error of 1 up to 20
dimensions; see `probgen.core.normalization`) and that samples follow `exp(log_prob)`.

Example:
    >>> import probgen
    >>> from probgen.core.testing import check_density
    >>> from probgen.recipes import registry
    >>> recipe = registry.get("hmm_casino")
    >>> model, data = recipe.smoke_build(), recipe.smoke_data()
    >>> report = check_density(model, data, fit_options=recipe.smoke_fit)
    >>> report["save_round_trip"]
    True
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probgen.core.contract import LogProbKind
from probgen.core.data import Sequences
from probgen.core.errors import DataError, NoDensityError, NotFittedError
from probgen.core.normalization import importance_normalizer

_KINDS_WITH_VALUES = {
    LogProbKind.EXACT,
    LogProbKind.LOWER_BOUND,
    LogProbKind.ESTIMATE,
    LogProbKind.UNNORMALIZED,
}


class ContractError(AssertionError):
    """A model broke the density contract; the message says which part."""


def check_density(
    model: Any,
    data: Any,
    *,
    fit: bool = True,
    fit_options: dict[str, Any] | None = None,
    n_samples: int = 200,
    sample_options: dict[str, Any] | None = None,
    seed: int = 0,
    check_sampling: bool = True,
    check_save: bool = True,
    check_normalization: bool | str = "auto",
    check_unfitted: bool = True,
    n_eval: int = 16,
    atol: float = 1e-3,
) -> dict[str, Any]:
    """Run the density contract on `model` with `data`; raise `ContractError` on a breach.

    Args:
        model: a probgen model (fitted or not).
        data: training data in the form the model's `fit` takes.
        fit: fit the model on `data` first when it is not fitted yet.
        fit_options: keyword options for `fit` (a short run, typically a recipe's `SMOKE`).
        n_samples: number of draws for the sampling checks.
        sample_options: extra keyword options for `sample` (`length=` for sequence models).
        seed: seed of the draws.
        check_sampling: whether the model can sample (an unnormalised posterior may not).
        check_save: whether to run the save/load round trip.
        check_normalization: "auto" (when checkable), True (required) or False.
        check_unfitted: whether to check that an unfitted model raises `NotFittedError`.
        n_eval: how many examples of `data` to score.
        atol: tolerance on normalisation and round-trip comparisons.

    Returns:
        A report dict: each check's name and its result or measured figure.

    Raises:
        ContractError: the model broke the contract.
    """
    fit_options = dict(fit_options or {})
    sample_options = dict(sample_options or {})
    report: dict[str, Any] = {}

    kind = _check_kind(model)
    report["log_prob_kind"] = kind.value
    _require(
        isinstance(getattr(model, "event_shape", None), torch.Size),
        "event_shape must be a torch.Size",
    )
    is_sequence = bool(getattr(model, "is_sequence_model", False))
    if is_sequence and check_sampling:
        sample_options.setdefault("length", 5)

    if fit and not getattr(model, "fitted_", False):
        if check_unfitted:
            try:
                model.log_prob(_take(data, 2))
            except NotFittedError:
                report["unfitted_raises"] = True
            except NoDensityError:
                report["unfitted_raises"] = kind is LogProbKind.NONE
            else:
                raise ContractError("log_prob before fit must raise NotFittedError")
        returned = model.fit(data, **fit_options)
        _require(returned is model, "fit must return the model itself")
        _require(hasattr(model, "history_"), "fit must set history_")
    _require(getattr(model, "fitted_", False), "the model is not fitted after fit()")

    evaluation = _take(data, n_eval)
    n_examples = _count(evaluation)
    if kind is LogProbKind.NONE:
        try:
            model.log_prob(evaluation)
        except NoDensityError as error:
            _require(len(str(error)) > 20, "NoDensityError must say what to use instead")
            report["no_density_raises"] = True
        else:
            raise ContractError("log_prob_kind is 'none' but log_prob returned a value")
        log_probs = None
    else:
        returned = model.log_prob(evaluation)
        # A graph attached to the result would keep every activation of the evaluated batch
        # alive (gigabytes when a test set is scored) for a value nobody differentiates.
        _require(
            not getattr(returned, "requires_grad", False),
            "log_prob must not return an autograd graph (evaluate under torch.no_grad)",
        )
        log_probs = _as_tensor(returned)
        _require(
            log_probs.shape == (n_examples,),
            f"log_prob of {n_examples} examples must have shape ({n_examples},), "
            f"got {tuple(log_probs.shape)}",
        )
        _require(bool(torch.isfinite(log_probs).all()), "log_prob of the data must be finite")
        if kind is LogProbKind.EXACT and not _is_continuous(model, evaluation):
            _require(bool((log_probs <= 1e-5).all()), "a log-mass cannot exceed 0")
        report["mean_log_prob"] = float(log_probs.mean())

    _require(model.to("cpu") is model, ".to(device) must return the model itself")

    if check_sampling:
        first = model.sample(n_samples, seed=seed, **sample_options)
        again = model.sample(n_samples, seed=seed, **sample_options)
        other = model.sample(n_samples, seed=seed + 1, **sample_options)
        draws = _values(first)
        expected = (n_samples, *((sample_options["length"],) if is_sequence else ()))
        expected = (*expected, *model.event_shape)
        _require(
            tuple(draws.shape) == expected,
            f"sample({n_samples}) must have shape {expected}, got {tuple(draws.shape)}",
        )
        _require(torch.equal(draws, _values(again)), "the same seed must give the same draws")
        _require(not torch.equal(draws, _values(other)), "different seeds gave identical draws")
        report["sample_shape"] = tuple(draws.shape)
        if kind in _KINDS_WITH_VALUES:
            sample_log_probs = _as_tensor(model.log_prob(first))
            _require(
                bool(torch.isfinite(sample_log_probs).all()),
                "log_prob of the model's own samples must be finite",
            )

    if check_save:
        report["save_round_trip"] = _check_round_trip(
            model, evaluation, log_probs, kind, check_sampling, sample_options, seed, atol
        )

    if check_normalization:
        report.update(
            _check_normalization(
                model, kind, sample_options, seed, check_sampling, atol, check_normalization
            )
        )
    return report


def _check_kind(model: Any) -> LogProbKind:
    kind = getattr(model, "log_prob_kind", None)
    try:
        return LogProbKind(kind)
    except ValueError as error:
        raise ContractError(f"log_prob_kind must be a LogProbKind, got {kind!r}") from error


def _check_round_trip(
    model: Any,
    evaluation: Any,
    log_probs: torch.Tensor | None,
    kind: LogProbKind,
    check_sampling: bool,
    sample_options: dict[str, Any],
    seed: int,
    atol: float,
) -> bool:
    from probgen.core.io import load

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.probgen"
        model.save(path)
        restored = load(path)
    _require(type(restored) is type(model), "load must rebuild the same class")
    _require(getattr(restored, "fitted_", False), "a loaded fitted model must stay fitted")
    _require(LogProbKind(restored.log_prob_kind) is kind, "log_prob_kind changed through save/load")
    if log_probs is not None and kind is not LogProbKind.ESTIMATE:
        restored_log_probs = _as_tensor(restored.log_prob(evaluation))
        _require(
            torch.allclose(restored_log_probs, log_probs, atol=atol, rtol=1e-5),
            "log_prob changed through save/load",
        )
    if check_sampling:
        original = _values(model.sample(8, seed=seed, **sample_options))
        reloaded = _values(restored.sample(8, seed=seed, **sample_options))
        _require(torch.equal(original, reloaded), "samples changed through save/load")
    return True


def _check_normalization(
    model: Any,
    kind: LogProbKind,
    sample_options: dict[str, Any],
    seed: int,
    check_sampling: bool,
    atol: float,
    required: bool | str,
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if kind is not LogProbKind.EXACT:
        _require(required == "auto", f"normalisation cannot be checked for kind {kind.value}")
        if kind is LogProbKind.NONE:  # no log_prob to integrate (a GAN)
            return report
        if check_sampling and _importance_checkable(model, sample_options, seed):
            # Not a requirement: a bound or an estimate need not integrate to one.
            try:
                report["importance_normalizer"] = importance_normalizer(
                    model, n_draws=4000, seed=seed, sample_options=sample_options
                )
            except DataError as error:
                report["importance_normalizer"] = str(error)
        return report
    if hasattr(model, "enumerate_support"):
        support_options = {k: v for k, v in sample_options.items() if k == "length"}
        support = model.enumerate_support(**support_options)
        log_probs = _as_tensor(model.log_prob(support)).double()
        total = torch.logsumexp(log_probs, 0).item()
        _require(abs(total) < max(atol, 1e-4), f"exp(log_prob) sums to {math.exp(total):.6f}")
        report["log_total_probability"] = total
        if check_sampling:
            report["sample_total_variation"] = _discrete_agreement(
                model, support, log_probs, sample_options, seed
            )
        return report
    event_shape = tuple(model.event_shape)
    if (
        check_sampling
        and len(event_shape) == 1
        and event_shape[0] <= 2
        and not getattr(model, "is_sequence_model", False)
    ):
        draws = _values(model.sample(2000, seed=seed, **sample_options))
        if draws.is_floating_point():
            total = _grid_integral(model, draws)
            _require(abs(total - 1.0) < 0.03, f"exp(log_prob) integrates to {total:.4f}")
            report["grid_integral"] = total
            return report
    if check_sampling and _importance_checkable(model, sample_options, seed):
        result = importance_normalizer(model, seed=seed, sample_options=sample_options)
        report["importance_normalizer"] = result
        if result["effective_sample_size"] >= _MIN_IMPORTANCE_ESS:
            estimate, standard_error = result["normalizer"], result["standard_error"]
            _require(
                abs(estimate - 1.0) <= 4 * standard_error + 0.02,
                f"exp(log_prob) integrates to {estimate:.4f} +- {standard_error:.4f} "
                "(importance sampling), not 1",
            )
            return report
    _require(required == "auto", "normalisation is not checkable for this model")
    return report


# Below this many effective draws the standard error of the estimate is itself unreliable.
_MIN_IMPORTANCE_ESS = 30.0
# The proposal is a Gaussian-kernel mixture: fine up to a few dozen dimensions.
_MAX_IMPORTANCE_DIMENSION = 20


def _importance_checkable(model: Any, sample_options: dict[str, Any], seed: int) -> bool:
    """Whether the model draws real vectors (not whole numbers) of a modest dimension."""
    if getattr(model, "is_sequence_model", False) or hasattr(model, "enumerate_support"):
        return False
    size = math.prod(tuple(model.event_shape))
    if not 1 <= size <= _MAX_IMPORTANCE_DIMENSION:
        return False
    draws = _values(model.sample(64, seed=seed, **sample_options))
    return bool(draws.is_floating_point() and not torch.equal(draws, draws.round()))


def _discrete_agreement(
    model: Any,
    support: torch.Tensor,
    log_probs: torch.Tensor,
    sample_options: dict[str, Any],
    seed: int,
) -> float:
    n_draws = 4000
    draws = _values(model.sample(n_draws, seed=seed, **sample_options)).to(support.dtype)
    flat_support = support.reshape(support.shape[0], -1).cpu()
    flat_draws = draws.reshape(n_draws, -1).cpu()
    index = {tuple(row.tolist()): i for i, row in enumerate(flat_support)}
    counts = np.zeros(len(index))
    for row in flat_draws.tolist():
        position = index.get(tuple(row))
        _require(position is not None, f"sample {row} is outside the enumerated support")
        counts[position] += 1
    probabilities = log_probs.exp().cpu().numpy()
    distance = 0.5 * float(np.abs(counts / n_draws - probabilities).sum())
    # Expected total variation of an empirical distribution is about sqrt(K / (2 pi n)).
    bound = 3 * math.sqrt(len(index) / (2 * math.pi * n_draws)) + 0.02
    _require(
        distance < bound,
        f"sample frequencies differ from exp(log_prob): total variation {distance:.3f}",
    )
    return distance


def _grid_integral(model: Any, draws: torch.Tensor) -> float:
    dims = draws.shape[-1]
    low = draws.min(0).values - 1.5 * draws.std(0)
    high = draws.max(0).values + 1.5 * draws.std(0)
    steps = 2001 if dims == 1 else 301
    axes = [torch.linspace(float(low[d]), float(high[d]), steps) for d in range(dims)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dims)
    with torch.no_grad():
        log_density = torch.cat(
            [_as_tensor(model.log_prob(chunk.to(draws.dtype))) for chunk in grid.split(20000)]
        )
    cell = math.prod(float(a[1] - a[0]) for a in axes)
    return float(log_density.double().exp().sum() * cell)


def _take(data: Any, count: int) -> Any:
    if isinstance(data, Sequences):
        return data[: min(count, data.n_sequences)]
    if hasattr(data, "iloc"):
        return data.iloc[:count]
    if isinstance(data, dict):
        return data
    if isinstance(data, tuple) and data and hasattr(data[0], "__len__"):
        return tuple(part[:count] for part in data)
    return data[:count]


def _count(data: Any) -> int:
    if isinstance(data, Sequences):
        return data.n_sequences
    if isinstance(data, tuple):
        return len(data[0])
    return len(data)


def _values(draws: Any) -> torch.Tensor:
    if isinstance(draws, Sequences):
        return draws.values
    if isinstance(draws, tuple):
        return _values(draws[0])
    return _as_tensor(draws)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    return torch.as_tensor(np.asarray(value))


def _is_continuous(model: Any, data: Any) -> bool:
    if hasattr(model, "enumerate_support"):
        return False
    sample = _values(data) if not isinstance(data, (list, dict)) else None
    if sample is None:
        return True
    return bool(sample.is_floating_point() and not torch.equal(sample, sample.round()))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)
