"""`sample_chains` over 2 processes (gloo): chains split over the ranks, gathered on rank 0.

The gathered chains must equal the single-process run with the same seed, with MH's pooled
warm-up adaptation (step size, proposal covariance, the "mixed" Student-t fitted to all chains'
pooled draws, straggler restarts) on; a chain count that the world size does not divide works.
"""

from __future__ import annotations

import warnings
from typing import Any

import distributed_workers as workers
import numpy as np
import pytest
import torch

from probgen import distributed
from probgen.samplers import sample_chains

Y = torch.tensor(2.5, dtype=torch.float64)

# (target, method, settings); 7 and 3 chains are not divisible by 2 ranks.
SPLIT_JOBS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "banana",
        "mh",
        {"num_chains": 7, "num_samples": 30, "warmup": 120, "seed": 3, "event_shape": (3,)},
    ),
    (
        "banana",
        "mh",
        {
            "num_chains": 6,
            "num_samples": 10,
            "warmup": 30,
            "seed": 4,
            "event_shape": (3,),
            "proposal": "independence",
            "thin": 2,
        },
    ),
    (
        "discrete",
        "gibbs",
        {
            "num_chains": 5,
            "num_samples": 40,
            "warmup": 20,
            "seed": 5,
            "cardinalities": [3, 2, 4],
            "event_shape": (3,),
        },
    ),
    (
        "discrete",
        "mh",
        {
            "num_chains": 5,
            "num_samples": 40,
            "warmup": 24,
            "seed": 6,
            "cardinalities": [3, 2, 4],
            "event_shape": (3,),
        },
    ),
    (
        "banana",
        "nuts",
        {"num_chains": 3, "num_samples": 5, "warmup": 6, "seed": 7, "event_shape": (3,)},
    ),
    (
        "mixed",
        "gibbs",
        {
            "num_chains": 3,
            "num_samples": 5,
            "warmup": 5,
            "seed": 8,
            "continuous": "nuts",
            "model_args": (Y,),
        },
    ),
    # SVI cannot split: it runs whole on rank 0, with a warning.
    (
        "banana",
        "svi",
        {
            "num_chains": 2,
            "num_samples": 5,
            "warmup": 0,
            "seed": 9,
            "num_steps": 5,
            "event_shape": (3,),
        },
    ),
]
# log densities and gradients of 5 points, each rank differentiating its block of rows
POINTS = torch.linspace(-1.5, 2.0, 15, dtype=torch.float64).reshape(5, 3)
GRADIENT_JOBS: list[tuple[str, str, dict[str, Any]]] = [
    ("banana", "value_and_grad", {"points": POINTS}),
    # ChEES through the target that gathers values and gradients
    (
        "banana",
        "chees_split",
        {"num_chains": 5, "num_samples": 10, "warmup": 40, "seed": 3, "event_shape": (3,)},
    ),
]
REFUSED_JOBS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "banana",
        "mh",
        {"num_chains": 1, "num_samples": 5, "warmup": 5, "seed": 0, "event_shape": (3,)},
    ),
]


def _single_process(target: str, method: str, settings: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sample_chains(workers.SAMPLER_TARGETS[target], method, progress=False, **settings)


def _assert_same(ours: dict[str, Any], samples: Any) -> None:
    assert set(ours["draws"]) == set(samples.draws)
    for name, value in samples.draws.items():
        np.testing.assert_allclose(ours["draws"][name], value, rtol=0, atol=1e-10, err_msg=name)
    for name in ("lp", "acceptance_rate", "step_size", "diverging"):
        if name in samples.stats:
            np.testing.assert_allclose(
                ours["stats"][name], samples.stats[name], rtol=0, atol=1e-10, err_msg=name
            )


@pytest.fixture(scope="module")
def ranks() -> list[Any]:
    # One launch for every check keeps the process start-up to one.
    return distributed.spawn_local(
        workers.sample_chains_split,
        2,
        args=(SPLIT_JOBS + REFUSED_JOBS + GRADIENT_JOBS,),
        deadline=180,
    )


def test_chains_gathered_on_rank_0_equal_the_single_process_chains(ranks):
    for index, (target, method, settings) in enumerate(SPLIT_JOBS):
        rank0, rank1 = ranks[0][index], ranks[1][index]
        assert "error" not in rank0, (method, rank0)
        assert rank1["samples"] is None  # rank 0 holds every chain
        expected = _single_process(target, method, settings)
        ours = rank0["samples"]
        assert ours["draws"][next(iter(ours["draws"]))].shape[0] == settings["num_chains"]
        _assert_same(ours, expected)
        if method != "svi":
            assert ours["attrs"]["ranks"] == 2


def test_pooled_mh_adaptation_is_the_whole_runs(ranks):
    """The default MH run adapts from every chain's statistics: its step size left the
    default, the pooled Student-t companion ran, and the chains equal the single-process
    ones (checked above) but not those of each rank's block sampled on its own (what a rank
    adapting from its own chains alone, with its own noise, would give)."""
    target, method, settings = SPLIT_JOBS[0]
    ours = ranks[0][0]["samples"]
    assert ours["attrs"]["mh_independence_steps"] is True
    assert not np.allclose(ours["stats"]["step_size"], 2.38 / np.sqrt(3))
    blocks = [
        _single_process(target, method, {**settings, "num_chains": count}) for count in (4, 3)
    ]
    alone = np.concatenate([block.draws["x"] for block in blocks])
    assert np.abs(alone - ours["draws"]["x"]).max() > 1e-3


def test_split_fallbacks_and_refusals_are_explicit(ranks):
    svi = SPLIT_JOBS.index(next(job for job in SPLIT_JOBS if job[1] == "svi"))
    for rank in ranks:
        assert any("runs whole on rank 0" in message for message in rank[svi]["warnings"])
    too_few = len(SPLIT_JOBS)
    for rank in ranks:
        assert rank[too_few]["error"].startswith("DataError")
        assert "num_chains=1" in rank[too_few]["error"]


def test_split_rows_gathers_values_and_gradients_of_each_ranks_rows(ranks):
    points = POINTS.clone().requires_grad_(True)
    values = workers.banana_log_density(points)
    (gradient,) = torch.autograd.grad(values.sum(), points)
    index = len(SPLIT_JOBS) + len(REFUSED_JOBS)
    for rank in ranks:
        lp, grad = rank[index]
        torch.testing.assert_close(lp, values.detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, gradient, rtol=0, atol=1e-12)


def test_chees_split_through_the_gradient_gathering_target_equals_one_process(ranks):
    """ChEES split over 2 ranks equals one process, with its pooled step size, trajectory
    length and mass matrix adapted from all chains."""
    _, _, settings = GRADIENT_JOBS[1]
    index = len(SPLIT_JOBS) + len(REFUSED_JOBS) + 1
    assert ranks[1][index]["samples"] is None
    ours = ranks[0][index]["samples"]
    expected = _single_process("banana", "chees", settings)
    _assert_same(ours, expected)
    np.testing.assert_array_equal(ours["stats"]["n_steps"], expected.stats["n_steps"])
