"""Functions the 2-process tests run on every rank (`probgen.distributed.spawn_local` pickles
them by name, so they live in a module of their own)."""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from probgen import distributed
from probgen.mixture import GaussianMixture


def collectives() -> dict[str, Any]:
    """The reductions, gathers and shard bookkeeping, as seen by one rank."""
    me = distributed.rank()
    values = torch.tensor([me + 0.25, 1e-300], dtype=torch.float64)
    counts = torch.tensor([me + 1], dtype=torch.int64)
    distributed.all_reduce_sum([values, counts])
    source = torch.full((2,), float(me))
    distributed.broadcast(source, src=1)
    gathered = distributed.gather_to_rank0(torch.arange(me + 2, dtype=torch.float64))
    distributed.barrier(timeout=30)
    with distributed.single_process():
        local = (distributed.world_size(), distributed.all_reduce_sum(torch.ones(1)).item())
    return {
        "rank": me,
        "world": distributed.world_size(),
        "distributed": distributed.is_distributed(),
        "values": values,
        "counts": counts,
        "broadcast": source,
        "gathered": gathered,
        "layout": distributed.shard_layout(3 + me),
        "object": distributed.broadcast_object({"rank": me}, src=1),
        "local": local,
    }


def dead_rank(timeout: float) -> tuple[str, float] | None:
    """Rank 1 dies before the reduction; rank 0 reports the error and how long it waited."""
    if distributed.rank() == 1:
        os._exit(0)
    started = time.monotonic()
    try:
        distributed.all_reduce_sum(torch.ones(3))
    except distributed.DistributedError as error:
        return str(error), time.monotonic() - started
    return "no error", time.monotonic() - started


def stuck_rank(timeout: float) -> tuple[str, float] | None:
    """Rank 1 joins no reduction until after the timeout; rank 0 reports how long it waited."""
    if distributed.rank() == 1:
        time.sleep(timeout + 0.5)
        return None
    started = time.monotonic()
    try:
        distributed.all_reduce_sum(torch.ones(3))
    except distributed.DistributedError as error:
        return str(error), time.monotonic() - started
    return "no error", time.monotonic() - started


def failing_rank() -> None:
    """Rank 1 raises."""
    if distributed.rank() == 1:
        raise ValueError("rank 1 gives up")


def fit_mixtures(jobs: list[tuple[torch.Tensor, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Fit one GaussianMixture per config on this rank's shard of each job's data."""
    fits = []
    for data, configs in jobs:
        part = distributed.shard(data)
        for config in configs:
            model = GaussianMixture(**config).double().fit(part)
            state = {k: v.clone() for k, v in model.state_dict().items()}
            fits.append({"state": state, "history": model.history_})
    return fits


def fit_networks(jobs: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Fit one BayesianNetwork per (data frame, settings) on this rank's rows."""
    from probgen.networks import BayesianNetwork

    fits = []
    for frame, settings in jobs:
        model = BayesianNetwork(**settings).fit(distributed.shard(frame))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        fits.append({"state": state, "history": model.history_, "states": model.states})
    return fits


def fit_restarts_split(jobs: list[tuple[str, Any, dict[str, Any]]]) -> dict[str, Any]:
    """Fit each (family, data, settings) on the whole data with its restarts split over the
    ranks (`restarts_across_ranks`); also what minibatch HMM EM says when asked to split."""
    from probgen.core.distributed_restarts import restarts_across_ranks
    from probgen.errors import DataError
    from probgen.hmm import HMM

    fits = []
    with restarts_across_ranks():
        for family, data, settings in jobs:
            kind = GaussianMixture if family == "mixture" else HMM
            model = kind(**settings).double().fit(data)
            state = {k: v.clone() for k, v in model.state_dict().items()}
            fits.append(
                {
                    "state": state,
                    "history": model.history_,
                    "converged": model.converged_,
                    "world": distributed.world_size(),
                }
            )
        try:
            HMM(2, "gaussian", n_init=2, batch_size=2, max_iter=2, seed=0).fit(jobs[-1][1])
            minibatch = "no error"
        except DataError as error:
            minibatch = str(error)
        chosen = {n_init: _chosen_restart(scores, n_init) for n_init, scores in RESTART_SCORES}
    return {"fits": fits, "minibatch": minibatch, "chosen": chosen}


# (n_init, score of each restart): a tie between restart 1 (rank 1) and 2 (rank 0), a NaN, and
# a run with fewer restarts than ranks.
RESTART_SCORES = [(4, [1.0, 3.0, 3.0, float("nan")]), (1, [2.0])]


def _chosen_restart(scores: list[float], n_init: int) -> tuple[int, list[float]]:
    """The restart `fit_restarts_across_ranks` keeps on this rank (its parameter says which),
    and the result it returns."""
    from probgen.core.distributed_restarts import fit_restarts_across_ranks
    from probgen.fitting.em import EMResult

    module = torch.nn.Module()
    module.register_buffer("restart", torch.tensor(-1))
    current = {"restart": -1}

    def initialize(restart: int) -> None:
        current["restart"] = restart
        module.restart.fill_(restart)

    def run() -> EMResult:
        return EMResult(history=[scores[current["restart"]]])

    result = fit_restarts_across_ranks(module, n_init, initialize, run)
    return int(module.restart), result.history


def banana_log_density(x: torch.Tensor) -> torch.Tensor:
    """A curved 3-d target (elementwise ops only: a row's value does not depend on the batch)."""
    bend = x[:, 1] - 0.5 * x[:, 0] ** 2
    return -0.5 * (x[:, 0] ** 2 / 4 + bend**2 / 0.5 + (x[:, 2] - x[:, 0]) ** 2)


def discrete_log_density(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised log probabilities of three coupled discrete coordinates (3 x 2 x 4 values)."""
    return -0.7 * (x[:, 0] - 1) ** 2 + 0.5 * x[:, 1] * x[:, 2] - 0.3 * x[:, 2]


def mixed_model(y: torch.Tensor) -> None:
    """A Pyro model with a continuous and a discrete site."""
    import pyro
    import pyro.distributions as dist

    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 1.0))
    label = pyro.sample("label", dist.Categorical(y.new_tensor([0.2, 0.3, 0.5])))
    pyro.sample("y", dist.Normal(mu + label.to(y.dtype), 1.0), obs=y)


SAMPLER_TARGETS = {
    "banana": banana_log_density,
    "discrete": discrete_log_density,
    "mixed": mixed_model,
}


def sample_chains_split(jobs: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    """`sample_chains` on each (target name, method, settings) in a distributed run: this
    rank's result (Samples as plain arrays, None) or the error it raised, and its warnings."""
    import warnings

    from probgen.samplers import sample_chains

    results: list[Any] = []
    for target_name, method, settings in jobs:
        if method == "value_and_grad":  # the gradient hook a split ChEES run would use
            from probgen.samplers.split import ChainSplit

            def value_and_grad(
                rows: torch.Tensor, log_density: Any = SAMPLER_TARGETS[target_name]
            ) -> tuple[torch.Tensor, torch.Tensor]:
                with torch.enable_grad():
                    leaf = rows.detach().requires_grad_(True)
                    values = log_density(leaf)
                    (gradient,) = torch.autograd.grad(values.sum(), leaf)
                return values.detach(), gradient

            points = settings["points"]
            results.append(ChainSplit.current(points.shape[0]).split_rows(value_and_grad)(points))
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                samples = sample_chains(
                    SAMPLER_TARGETS[target_name],
                    "chees" if method == "chees_split" else method,
                    progress=False,
                    **settings,
                )
            except Exception as error:  # noqa: BLE001 - the test checks which one
                results.append({"error": f"{type(error).__name__}: {error}"})
                continue
        messages = [str(w.message) for w in caught]
        if samples is None:
            results.append({"samples": None, "warnings": messages})
            continue
        results.append(
            {
                "samples": {
                    "draws": {k: v.copy() for k, v in samples.draws.items()},
                    "stats": {k: v.copy() for k, v in samples.stats.items()},
                    "attrs": dict(samples.attrs),
                },
                "warnings": messages,
            }
        )
    return results
