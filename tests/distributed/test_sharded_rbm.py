"""Sharded RBM and Boltzmann-machine training: 2 processes (gloo), each holding part of the
rows, make the single-process updates with the same seed (data term summed over the ranks)."""

from __future__ import annotations

import pytest
import sharded_workers as workers
import torch

from probgen import distributed


def _binary(n: int, width: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(3, width, generator=gen) < 0.5).double()
    flips = (torch.rand(n, width, generator=gen) < 0.1).double()
    return (prototypes[torch.randint(3, (n,), generator=gen)] + flips) % 2


def _jobs() -> list[tuple[str, dict[str, object], torch.Tensor, torch.Tensor | None]]:
    binary = _binary(101, 6, 0)  # 101 rows, batches of 16: a short last batch
    held_out = _binary(23, 6, 1)
    gaussian = torch.randn(90, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    categorical = torch.nn.functional.one_hot(
        torch.randint(3, (70, 2), generator=torch.Generator().manual_seed(3)), 3
    ).double()
    figures = ["reconstruction_error", "pseudo_log_likelihood", "log_likelihood"]
    return [
        ("rbm", {"n_visible": 6, "n_hidden": 3, "batch_size": 16, "n_epochs": 4, "seed": 0,
                 "monitor": figures, "monitor_size": 60}, binary, held_out),
        ("rbm", {"n_visible": 4, "n_hidden": 3, "visible": "gaussian", "batch_size": 20,
                 "n_epochs": 3, "seed": 1, "momentum": 0.5, "weight_decay": 1e-3,
                 "learning_rate": 0.01}, gaussian, None),
        ("rbm", {"n_visible": 2, "n_hidden": 2, "visible": "categorical", "n_categories": 3,
                 "batch_size": 25, "n_epochs": 3, "seed": 2, "n_temperatures": 3,
                 "cd_steps": 2}, categorical, None),
        # CD-2: the chains start at each rank's rows, with the whole batch's noise.
        ("rbm", {"n_visible": 6, "n_hidden": 3, "method": "cd", "cd_steps": 2, "batch_size": 16,
                 "n_epochs": 3, "seed": 5, "momentum": 0.3}, binary, None),
        ("rbm", {"n_visible": 4, "n_hidden": 2, "visible": "gaussian", "method": "cd",
                 "batch_size": 20, "n_epochs": 2, "seed": 6, "learning_rate": 0.01}, gaussian,
         None),
        ("bm", {"n_units": 6, "method": "pcd", "batch_size": 16, "n_epochs": 3, "seed": 3},
         binary, None),
        ("bm", {"n_units": 6, "method": "exact", "n_epochs": 3, "seed": 4}, binary, None),
        # No seed: rank 0's is used on every rank, so the chains stay the same.
        ("rbm", {"n_visible": 6, "n_hidden": 3, "batch_size": 16, "n_epochs": 2, "seed": None},
         binary, None),
    ]


def test_two_processes_make_the_single_process_updates():
    jobs = _jobs()
    ranks = distributed.spawn_local(workers.fit_boltzmanns, 2, args=(jobs,), deadline=120)
    assert len(ranks[0]) == len(ranks[1]) == len(jobs)
    for index, (kind, settings, data, validation) in enumerate(jobs):
        # (without a seed the fit is random: only the ranks' agreement is checked below)
        expected = workers.boltzmann_record(workers.fit_boltzmann(kind, settings, data, validation))
        fit0, fit1 = ranks[0][index], ranks[1][index]
        for name, value in expected["state"].items():
            # every rank holds the same parameters, bit for bit ...
            assert torch.equal(fit0["state"][name], fit1["state"][name]), (index, name)
            if settings["seed"] is None:
                continue  # rank 0's seed: a single process cannot repeat the fit
            # ... and they are the single-process fit's (the sums differ only in rounding)
            difference = float((fit0["state"][name] - value).abs().max())
            assert difference <= 1e-10, (index, name, difference)
        assert fit0["history"] == fit1["history"]
        if settings["seed"] is None:
            continue
        assert len(fit0["history"]) == len(expected["history"])
        for ours, theirs in zip(fit0["history"], expected["history"]):
            assert ours.keys() == theirs.keys()
            for key, value in theirs.items():
                assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (index, key)
