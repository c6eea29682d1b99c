"""EM restarts split over 2 processes (gloo) when every rank holds the whole data.

Inside `restarts_across_ranks()`, rank r runs restarts r, r + 2, ...; the best restart of all
ranks must end on every rank, equal to the single-process fit with the same seed.
"""

from __future__ import annotations

from typing import Any

import distributed_workers as workers
import pytest
import torch

from probgen import distributed
from probgen.core.distributed_restarts import restart_split, restarts_across_ranks
from probgen.hmm import HMM
from probgen.mixture import GaussianMixture

pytestmark = pytest.mark.filterwarnings("ignore::probgen.errors.ConvergenceWarning")

KINDS = {"mixture": GaussianMixture, "hmm": HMM}
N_INIT = 4


def _mixture_data() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-2.0, 0.0], [0.0, 1.5], [2.0, -0.5], [0.5, -2.0]]).double()
    labels = torch.randint(4, (400,), generator=gen)
    return centres[labels] + torch.randn(400, 2, generator=gen, dtype=torch.float64)


def _hmm_data() -> list[torch.Tensor]:
    """Ragged sequences of a 3-state chain with overlapping Gaussian emissions."""
    gen = torch.Generator().manual_seed(0)
    sequences = []
    for _ in range(12):
        length = 20 + int(torch.randint(15, (1,), generator=gen))
        state = torch.randint(3, (length,), generator=gen)
        switch = torch.rand(length, generator=gen) < 0.2
        state = torch.where(switch, state, state[0]).double()  # mostly stays in its first state
        noise = torch.randn(length, generator=gen, dtype=torch.float64)
        sequences.append((1.2 * state + noise).reshape(-1, 1))
    return sequences


SETTINGS = {
    "mixture": {"n_components": 4, "init": "random", "max_iter": 40, "tol": 1e-9},
    "hmm": {"n_states": 3, "emission": "gaussian", "max_iter": 15, "tol": 1e-9},
}


def _fit(family: str, data: Any, settings: dict[str, Any]) -> torch.nn.Module:
    return KINDS[family](**settings).double().fit(data)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return all(torch.equal(first[name], second[name]) for name in first)


def _best_restart(family: str, data: Any, settings: dict[str, Any]) -> int:
    """Index of the restart a single-process fit keeps: the fit with n_init = k runs the
    first k restarts (one shared generator), so the best is the shortest such fit that
    already equals the full one."""
    full = _fit(family, data, settings)
    for count in range(1, settings["n_init"] + 1):
        if _same(_fit(family, data, {**settings, "n_init": count}), full):
            return count - 1
    raise AssertionError("unreachable")


# Seeds whose best restart (of 4) is odd, so it lives on rank 1 and rank 0's own best differs
# from it: the test then fails unless the best is chosen across ranks. Checked in the test.
ODD_BEST_SEEDS = {"mixture": 2, "hmm": 1}


def _settings_with_best_on_rank_1(family: str, data: Any) -> dict[str, Any]:
    settings = {**SETTINGS[family], "n_init": N_INIT, "seed": ODD_BEST_SEEDS[family]}
    best = _best_restart(family, data, settings)
    assert best % 2 == 1, f"the best {family} restart is {best}: pick a seed with an odd one"
    return settings


def test_two_processes_split_restarts_and_keep_the_single_process_best():
    data = {"mixture": _mixture_data(), "hmm": _hmm_data()}
    jobs = [
        (family, data[family], _settings_with_best_on_rank_1(family, data[family]))
        for family in KINDS
    ]
    # n_init not divisible by the world size: rank 0 runs restarts 0 and 2, rank 1 restart 1.
    jobs.append(("mixture", data["mixture"], {**SETTINGS["mixture"], "n_init": 3, "seed": 5}))
    jobs.append(("hmm", data["hmm"], {**SETTINGS["hmm"], "n_init": 3, "seed": 4}))
    ranks = distributed.spawn_local(workers.fit_restarts_split, 2, args=(jobs,), deadline=120)
    for index, (family, values, settings) in enumerate(jobs):
        expected = _fit(family, values, settings)
        fit0, fit1 = ranks[0]["fits"][index], ranks[1]["fits"][index]
        assert fit0["world"] == fit1["world"] == 1  # the fits saw the whole data
        for name, value in expected.state_dict().items():
            # every rank holds the best restart's parameters, bit for bit ...
            assert torch.equal(fit0["state"][name], fit1["state"][name]), (family, name)
            # ... which are the single-process fit's (threads may round differently)
            torch.testing.assert_close(fit0["state"][name], value, rtol=0, atol=1e-10)
        assert fit0["history"] == fit1["history"]
        assert len(fit0["history"]) == len(expected.history_)
        figure = "mean_log_likelihood" if family == "mixture" else "log_likelihood"
        for ours, theirs in zip(fit0["history"], expected.history_):
            assert abs(ours[figure] - theirs[figure]) < 1e-10
        assert fit0["converged"] == fit1["converged"] == expected.converged_
    for result in ranks:
        assert "minibatch EM" in result["minibatch"] and "batch_size" in result["minibatch"]
        # ties go to the lowest restart (as one process keeps the first), NaN ranks last;
        # a rank without a restart of its own gets rank 0's
        assert result["chosen"] == {4: (1, [3.0]), 1: (0, [2.0])}


def test_restart_split_is_a_no_op_in_one_process():
    data = _mixture_data()
    settings = {**SETTINGS["mixture"], "n_init": 3, "seed": 2}
    with restarts_across_ranks():
        assert restart_split() == (0, 1)
        inside = _fit("mixture", data, settings)
    assert restart_split() == (0, 1)
    assert _same(inside, _fit("mixture", data, settings))
