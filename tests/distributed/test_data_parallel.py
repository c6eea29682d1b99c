"""Data-parallel training through the shared loop: 2 processes (gloo) train one model."""

from __future__ import annotations

import data_parallel_workers as workers
import pytest
import torch

from probgen import distributed
from probgen.deep.flows import Flow
from probgen.errors import DataError
from probgen.fitting.data_parallel import DataParallel


def _shards() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(161, 2, generator=gen, dtype=torch.float64) * torch.tensor(
        [1.0, 0.3], dtype=torch.float64
    )
    # Uneven shards: equal-weight averaging of the ranks' mean gradients would be wrong.
    return [data[:101], data[101:]]


def _single(data: torch.Tensor, **options) -> Flow:
    return Flow(**workers.flow_settings()).double().fit(data, **options)


def test_two_ranks_train_the_single_process_flow(tmp_path):
    shards = _shards()
    validation = [shards[0][:20] + 0.1, shards[1][:7] - 0.1]
    options = {
        "n_epochs": 3,
        "batch_size": 32,
        "learning_rate": 1e-2,
        "validation_data": validation,
        "checkpoint_dir": str(tmp_path / "ranks"),
    }
    ranks = distributed.spawn_local(workers.fit_flow, 2, args=(shards, options), deadline=120)
    single = _single(
        torch.cat(shards),
        n_epochs=3,
        batch_size=32,
        learning_rate=1e-2,
        validation_data=torch.cat(validation),
    )
    for name, value in single.state_dict().items():
        # every rank holds the same parameters, bit for bit ...
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name])
        # ... which are the single-process fit's on the concatenated shards
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=0, atol=1e-10)
    for ours, theirs in zip(ranks[0]["history"], single.history_, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-10)
        assert ours["val_log_prob"] == pytest.approx(theirs["val_log_prob"], abs=1e-10)
        assert ours["steps"] == theirs["steps"] == ours["epoch"] * 6  # ceil(161 / 32) a epoch

    # Rank 0's checkpoint resumes in one process: a fourth epoch equals 4 uninterrupted ones.
    resumed = _single(
        torch.cat(shards),
        n_epochs=4,
        batch_size=32,
        learning_rate=1e-2,
        checkpoint_dir=str(tmp_path / "ranks"),
        resume=True,
    )
    straight = _single(torch.cat(shards), n_epochs=4, batch_size=32, learning_rate=1e-2)
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=1e-10)


def test_models_with_noise_stay_identical_across_ranks():
    shards = [s.float() for s in _shards()]
    ranks = distributed.spawn_local(workers.fit_stochastic, 2, args=(shards,), deadline=120)
    for key in ("vae", "gan"):
        for name, value in ranks[0][key].items():
            assert torch.equal(value, ranks[1][key][name]), (key, name)
    assert ranks[0]["vae_loss"] == ranks[1]["vae_loss"]
    assert ranks[0]["gan_losses"] == ranks[1]["gan_losses"]
    assert all(torch.isfinite(torch.tensor(ranks[0]["vae_loss"])))


def test_two_ranks_train_the_single_process_vae_draw_for_draw():
    # The reparameterised latents are drawn for the global batch on every rank and sliced:
    # with per-rank draws (or a wrong slice) the parameters differ by ~1e-2 after a few steps.
    # Batches of 4 rows out of 101 + 60 leave one rank without rows in some steps (its
    # generator is then resynchronised); "iwae" runs 3 vectorised particles in an outer plate.
    shards = _shards()
    jobs = [
        ({}, {"n_epochs": 2, "batch_size": 32, "learning_rate": 1e-2}),
        ({}, {"n_epochs": 1, "batch_size": 4, "learning_rate": 1e-2}),
        ({"objective": "iwae", "n_particles": 3}, {"n_epochs": 1, "batch_size": 32}),
    ]
    ranks = distributed.spawn_local(workers.fit_vaes, 2, args=(shards, jobs), deadline=120)
    from probgen.deep.vae import VAE

    for index, (settings, options) in enumerate(jobs):
        single = VAE(**workers.vae_settings(**settings)).double().fit(torch.cat(shards), **options)
        for name, value in single.state_dict().items():
            ours = ranks[0][index]["state"][name]
            assert torch.equal(ours, ranks[1][index]["state"][name]), (index, name)
            torch.testing.assert_close(ours, value, rtol=0, atol=1e-10, msg=f"{index} {name}")
        for ours, theirs in zip(ranks[0][index]["history"], single.history_, strict=True):
            assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-10)


def test_one_process_is_not_data_parallel():
    assert DataParallel.wanted(torch.zeros(3, 2)) is False


def test_a_data_loader_is_refused_under_distribution(monkeypatch):
    from probgen.fitting import batching

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    loader = torch.utils.data.DataLoader(torch.zeros(4, 2), batch_size=2)
    batches = batching._Batches(loader, "data", 2, torch.device("cpu"), None)
    with pytest.raises(DataError, match="DataLoader"):
        DataParallel(torch.nn.Linear(2, 1), batches)
