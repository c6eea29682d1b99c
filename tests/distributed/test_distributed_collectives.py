"""`probgen.distributed` on 2 local processes (gloo, 127.0.0.1) and in one process."""

from __future__ import annotations

import distributed_workers as workers
import pytest
import torch

from probgen import distributed


def test_single_process_is_a_no_op():
    values = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert distributed.all_reduce_sum(values) is values
    assert values.tolist() == [1.0, 2.0]
    assert distributed.gather_to_rank0(values)[0] is values
    assert distributed.shard_layout(5) == (0, 5)
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert not distributed.is_distributed()
    distributed.barrier()


def test_torchrun_environment_is_detected(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (3, 4, 1)
    assert distributed.is_distributed()
    assert list(distributed.shard_indices(10)) == [8, 9]
    with distributed.single_process():
        assert (distributed.rank(), distributed.world_size()) == (0, 1)
    monkeypatch.delenv("MASTER_ADDR")  # WORLD_SIZE alone is not a launch
    assert not distributed.is_distributed()


@pytest.mark.parametrize("n, world", [(0, 3), (5, 2), (10, 3), (7, 7), (3, 5)])
def test_shards_are_contiguous_and_cover_the_rows(n, world):
    shards = [distributed.shard_indices(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert torch.equal(
        torch.cat([distributed.shard(torch.arange(n), r, world) for r in range(world)]),
        torch.arange(n),
    )
    with pytest.raises(ValueError, match="rank"):
        distributed.shard_indices(n, world, world)


def test_collectives_on_two_processes():
    ranks = distributed.spawn_local(workers.collectives, 2, timeout=30, deadline=60)
    for me, seen in enumerate(ranks):
        assert (seen["rank"], seen["world"], seen["distributed"]) == (me, 2, True)
        # float64 sums stay float64 (1e-300 would underflow to 0 in float32)
        assert seen["values"].dtype == torch.float64
        assert seen["values"].tolist() == [0.25 + 1.25, 2e-300]
        assert seen["counts"].tolist() == [3]
        assert seen["broadcast"].tolist() == [1.0, 1.0]
        assert seen["layout"] == ((0, 7) if me == 0 else (3, 7))
        assert seen["object"] == {"rank": 1}
        assert seen["local"] == (1, 1.0)
    assert [t.tolist() for t in ranks[0]["gathered"]] == [[0.0, 1.0], [0.0, 1.0, 2.0]]
    assert ranks[1]["gathered"] is None


def test_a_dead_rank_fails_the_others_with_a_clear_error():
    (message, waited), gone = distributed.spawn_local(
        workers.dead_rank, 2, args=(2.0,), timeout=2.0, deadline=30
    )
    assert gone is None
    assert message.startswith("all_reduce_sum failed on rank 0 of 2: another rank died")
    assert waited < 2.0 + 1.0, waited


def test_a_stuck_rank_fails_the_others_within_the_timeout():
    (message, waited), stuck = distributed.spawn_local(
        workers.stuck_rank, 2, args=(1.0,), timeout=1.0, deadline=60
    )
    assert stuck is None
    assert message.startswith("all_reduce_sum failed on rank 0 of 2")
    assert "did not join it within 1 s" in message
    assert 0.9 < waited < 1.0 + 1.0, waited


def test_an_error_on_one_rank_is_raised_by_spawn_local():
    with pytest.raises(distributed.DistributedError, match="(?s)rank 1 failed.*rank 1 gives up"):
        distributed.spawn_local(workers.failing_rank, 2, deadline=60)
