"""The shared EM driver: restarts, iterations, convergence, divergence, the fit record.

A family plugs in by giving the driver callables, in the way scikit-learn's
`BaseMixture.fit_predict` and dynamax's `fit_em` are organised:

- `iterate() -> float`: one EM iteration from the current parameters (an e-step that returns
  additive statistics and the log-likelihood, then the m-step); returns the iteration's
  log-likelihood (or the figure the family records in `history_`);
- `initialize(restart)`: a fresh start for restart `restart` (k-means, random, perturbed).

`run_em` runs the iterations with the convergence test, the monotonicity warning and the
divergence guard (a non-finite value or parameter raises `FitError` and restores the last good
parameters); `fit_restarts` keeps the best of `n_init` runs; `record_fit` writes `history_`,
`n_iter_`, `converged_`, warns on non-convergence and marks the model fitted.

Example:
    >>> import torch
    >>> from probgen.fitting.em import run_em
    >>> state = {"mean": torch.tensor(0.0)}
    >>> data = torch.tensor([1.0, 2.0, 3.0])
    >>> def iterate():  # an EM that converges in one step: the mean of the data
    ...     normal = torch.distributions.Normal(state["mean"], 1.0)
    ...     log_likelihood = float(normal.log_prob(data).sum())
    ...     state["mean"] = data.mean()
    ...     return log_likelihood
    >>> result = run_em(iterate, max_iter=10, tol=1e-8)
    >>> result.converged, len(result.history)
    (True, 3)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from probgen.core.errors import ConvergenceWarning, FitError, LikelihoodDecreaseWarning


@dataclass
class EMResult:
    """What one EM run gives: the recorded figure per iteration and whether it converged."""

    history: list[float] = field(default_factory=list)
    converged: bool = False


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of `module`'s state dict (the last good parameters)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def parameters_finite(module: torch.nn.Module) -> bool:
    """Whether every floating tensor of `module`'s state dict is finite (one reduction)."""
    values = [v.reshape(-1) for v in module.state_dict().values() if v.is_floating_point()]
    return not values or bool(torch.isfinite(torch.cat(values)).all())


def run_em(
    iterate: Callable[[], float],
    *,
    max_iter: int,
    tol: float,
    scale: float = 1.0,
    criterion: str = "increase",
    objective: Callable[[float], float] | None = None,
    decrease_tolerance: Callable[[float], float] | None = None,
    guard: torch.nn.Module | None = None,
    finite_parameters: Callable[[], bool] | None = None,
    on_iteration: Callable[[float], None] | None = None,
    what: str = "EM",
    hint: str = "",
) -> EMResult:
    """Run EM iterations until convergence or `max_iter`.

    Args:
        iterate: one iteration (e-step at the current parameters, then m-step); returns the
            log-likelihood at the parameters it started from.
        max_iter: iterations at most.
        tol: convergence threshold on the change of the objective divided by `scale`.
        scale: what the change is divided by (steps, points or rows; 1 for raw change).
        criterion: ``"increase"`` stops when ``(new - old) / scale < tol`` (the objective of
            an EM never decreases, so this also stops on a decrease); ``"change"`` stops when
            ``|new - old| / scale < tol``.
        objective: maps the recorded log-likelihood to the penalised objective that EM
            increases (adds a log-prior); the identity when None.
        decrease_tolerance: the drop of the objective that is rounding, given the previous
            objective; a larger drop warns `LikelihoodDecreaseWarning`. None: never warn.
        guard: the module whose parameters are restored when an iteration diverges.
        finite_parameters: whether the parameters are finite after an iteration; defaults
            to checking `guard`'s state dict.
        on_iteration: called with each recorded figure (progress bars).
        what: the name used in error messages (``"EM"``, ``"HMM EM"``).
        hint: a sentence appended to the divergence error (what setting helps).

    Returns:
        `EMResult` with one recorded figure per iteration.

    Raises:
        FitError: the log-likelihood or a parameter became non-finite; `guard` keeps the
            parameters from before that iteration.
    """
    if criterion not in ("increase", "change"):
        raise ValueError(f"criterion must be 'increase' or 'change', got {criterion!r}")
    result = EMResult()
    previous: float | None = None
    check = finite_parameters or (lambda: guard is None or parameters_finite(guard))
    for _ in range(max_iter):
        last_good = snapshot(guard) if guard is not None else None
        value = iterate()
        if not math.isfinite(value) or not check():
            if guard is not None and last_good is not None:
                guard.load_state_dict(last_good)
            problem = (
                f"the log-likelihood became {value}"
                if not math.isfinite(value)
                else "the parameters became non-finite"
            )
            raise FitError(
                f"{what}: {problem} at iteration {len(result.history) + 1}; the model keeps "
                f"its last good parameters{'; ' + hint if hint else ''}"
            )
        result.history.append(value)
        if on_iteration is not None:
            on_iteration(value)
        current = objective(value) if objective is not None else value
        if previous is not None:
            if decrease_tolerance is not None:
                drop = previous - current
                if drop > decrease_tolerance(previous):
                    warnings.warn(
                        f"{what} iteration {len(result.history)} decreased the penalised "
                        f"log-likelihood by {drop:.3g}",
                        LikelihoodDecreaseWarning,
                        stacklevel=3,
                    )
            change = (current - previous) / scale
            if (change if criterion == "increase" else abs(change)) < tol:
                result.converged = True
                return result
        previous = current
    return result


def fit_restarts(
    module: torch.nn.Module,
    n_init: int,
    initialize: Callable[[int], None],
    run: Callable[[], EMResult],
    *,
    warm_start: bool = False,
    score: Callable[[EMResult], float] | None = None,
) -> EMResult:
    """Run `n_init` restarts and leave `module` with the best one's parameters.

    Args:
        module: the model; its state dict is what a restart produces.
        n_init: number of restarts.
        initialize: `initialize(restart)` sets a fresh start.
        run: runs EM from the current parameters.
        warm_start: the first restart continues from the current parameters.
        score: the figure restarts are ranked by (default: the last recorded value).

    Returns:
        The best restart's `EMResult`.
    """
    rank = score or (lambda result: result.history[-1] if result.history else -math.inf)
    best: tuple[float, dict[str, torch.Tensor], EMResult] | None = None
    for restart in range(n_init):
        if not (warm_start and restart == 0):
            initialize(restart)
        result = run()
        value = rank(result)
        if best is None or value > best[0]:
            best = (value, snapshot(module), result)
    assert best is not None
    module.load_state_dict(best[1])
    return best[2]


def record_fit(
    model: Any, result: EMResult, *, warning: str | None = None, figure: str = "log_likelihood"
) -> None:
    """Store `history_`, `n_iter_` and `converged_` on `model` and mark it fitted.

    `history_` gets the shape every probgen model shares: one dict per iteration,
    ``{"iteration": i, figure: value}``.

    Args:
        model: the fitted model.
        result: the kept run.
        warning: the `ConvergenceWarning` message when the run did not converge (None: no
            warning).
        figure: the name of the recorded figure.
    """
    model.history_ = [
        {"iteration": index + 1, figure: float(value)} for index, value in enumerate(result.history)
    ]
    model.n_iter_ = len(result.history)
    model.converged_ = bool(result.converged)
    if not result.converged and warning:
        warnings.warn(warning, ConvergenceWarning, stacklevel=3)
    model._mark_fitted()
