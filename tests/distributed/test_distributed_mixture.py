"""Sharded EM for GaussianMixture: 2 processes (gloo) give the single-process fit."""

from __future__ import annotations

import distributed_workers as workers
import torch

from probgen import distributed
from probgen.mixture import GaussianMixture


def _data(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]], dtype=torch.float64)
    labels = torch.randint(3, (n,), generator=gen)
    noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return centres[labels] + noise * torch.tensor([1.0, 0.5], dtype=torch.float64)


# Fixed iteration counts (tol=0): the comparison is iteration by iteration.
CONFIGS = [
    {"n_components": 3, "covariance": "full", "max_iter": 12, "tol": 0.0, "seed": 0},
    {
        "n_components": 3,
        "covariance": "diag",
        "init": "random",
        "n_init": 2,
        "max_iter": 10,
        "tol": 0.0,
        "seed": 1,
    },
    {"n_components": 2, "covariance": "spherical", "max_iter": 8, "tol": 0.0, "seed": 2},
]
# Beyond 20,000 rows k-means clusters a random subset: the ranks must draw the same one.
LARGE = [{"n_components": 3, "covariance": "diag", "max_iter": 3, "tol": 0.0, "seed": 3}]


def test_two_processes_fit_the_single_process_mixture():
    small, large = _data(301, 0), _data(20_011, 1)
    # One launch for both data sets keeps the test's process start-up to one.
    ranks = distributed.spawn_local(
        workers.fit_mixtures, 2, args=([(small, CONFIGS), (large, LARGE)],), deadline=120
    )
    expected = []
    for data, configs in [(small, CONFIGS), (large, LARGE)]:
        for config in configs:
            model = GaussianMixture(**config).double().fit(data)
            expected.append((model.state_dict(), model.history_))
    assert len(ranks[0]) == len(ranks[1]) == len(expected)
    for fit0, fit1, (state, history) in zip(ranks[0], ranks[1], expected):
        # every rank holds the same parameters, bit for bit ...
        for name in state:
            assert torch.equal(fit0["state"][name], fit1["state"][name])
        assert fit0["history"] == fit1["history"]
        # ... and they are the single-process fit's (the sums differ only in rounding)
        for name, value in state.items():
            torch.testing.assert_close(fit0["state"][name], value, rtol=0, atol=1e-10)
        assert len(fit0["history"]) == len(history)
        for ours, theirs in zip(fit0["history"], history):
            assert abs(ours["mean_log_likelihood"] - theirs["mean_log_likelihood"]) < 1e-10


def test_single_process_block_fits_the_local_rows_only():
    data = _data(60, 4)
    model = GaussianMixture(2, covariance="diag", max_iter=5, tol=0.0, seed=0).double()
    with distributed.single_process():
        fitted = model.fit(data)
    assert fitted.n_iter_ == 5
