"""The thread policy of `probgen.core.threads`, and that the library's loops run under it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import probgen
from probgen.core import threads
from probgen.core.threads import THREADED_WORK, small_op_threads


@pytest.fixture
def two_threads(monkeypatch):
    """torch at 2 threads (the suite runs at 1), no override; restored afterwards."""
    previous = torch.get_num_threads()
    monkeypatch.delenv(threads.ENV_VARIABLE, raising=False)
    monkeypatch.setattr(threads, "_override", None)
    # the size rule on its own: an idle machine (test_busy_machine_pins_large_steps: a busy one)
    monkeypatch.setattr(threads, "machine_is_busy", lambda: False)
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def thread_calls(two_threads, monkeypatch):
    """Every `torch.set_num_threads` call made by the library, in order."""
    calls: list[int] = []
    real = torch.set_num_threads

    def spy(n: int) -> None:
        calls.append(n)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", spy)
    return calls


def test_small_work_runs_on_one_thread_and_restores(two_threads):
    with small_op_threads(1000):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with small_op_threads(None):  # unknown work counts as small
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_large_work_keeps_the_callers_setting(two_threads):
    with small_op_threads(THREADED_WORK + 1):
        assert torch.get_num_threads() == 2
    with small_op_threads(THREADED_WORK):
        assert torch.get_num_threads() == 1


def test_busy_machine_pins_large_steps(two_threads, monkeypatch):
    monkeypatch.setattr(threads, "machine_is_busy", lambda: True)
    with small_op_threads(THREADED_WORK * 8):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(("load", "cores", "busy"), [(1.2, 2, False), (1.6, 2, True),
                                                    (14.0, 16, False), (15.7, 16, True)])
def test_busy_means_load_beyond_the_cores_less_a_half(monkeypatch, load, cores, busy):
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, 0.0, 0.0))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda _: set(range(cores)),
                        raising=False)
    assert threads.machine_is_busy() is busy


def test_other_devices_are_left_alone(two_threads):
    with small_op_threads(10, torch.device("meta")):
        assert torch.get_num_threads() == 2


def test_setting_restored_after_an_exception(two_threads):
    with pytest.raises(RuntimeError, match="boom"):
        with small_op_threads(10):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_decorated_entry_point_restores_after_an_exception(two_threads):
    @threads.small_op_loop()
    def failing() -> None:
        assert torch.get_num_threads() == 1
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        failing()
    assert torch.get_num_threads() == 2


def test_call_override_is_honoured_and_wins_over_environment(two_threads, monkeypatch):
    probgen.set_num_threads(3)
    try:
        monkeypatch.setenv(threads.ENV_VARIABLE, "1")
        with small_op_threads(10):  # small work too: the override decides
            assert torch.get_num_threads() == 3
        with small_op_threads(THREADED_WORK * 8):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 2
    finally:
        probgen.set_num_threads(None)
    with small_op_threads(10):
        assert torch.get_num_threads() == 1  # the environment's 1


def test_environment_override_is_read_at_call_time(two_threads, monkeypatch):
    monkeypatch.setenv(threads.ENV_VARIABLE, "1")
    with small_op_threads(THREADED_WORK * 8):  # large work, but the user asked for 1
        assert torch.get_num_threads() == 1
    monkeypatch.setenv(threads.ENV_VARIABLE, "auto")
    with small_op_threads(THREADED_WORK * 8):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_environment_value_is_named(two_threads, monkeypatch, value):
    monkeypatch.setenv(threads.ENV_VARIABLE, value)
    with pytest.raises(ValueError, match="PROBGEN_NUM_THREADS"):
        with small_op_threads(10):
            pass
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_bad_override_is_rejected(value):
    with pytest.raises(ValueError):
        probgen.set_num_threads(value)


def test_hmm_step_loop_threads_keeps_its_rule(two_threads):
    from probgen.hmm.layout import THREADED_STEP_WORK, step_loop_threads

    assert THREADED_STEP_WORK == THREADED_WORK
    with step_loop_threads(torch.zeros(1), 10, 3):
        assert torch.get_num_threads() == 1
    with step_loop_threads(torch.zeros(1), THREADED_WORK // 4 + 1, 2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


def test_nothing_changes_at_import():
    code = (
        "import json, torch\n"
        "torch.set_num_threads(2)\n"
        "before = torch.get_num_threads()\n"
        "import probgen, probgen.hmm, probgen.networks, probgen.boltzmann, probgen.mixture\n"
        "import probgen.samplers, probgen.fitting, probgen.core.threads, probgen.core.progress\n"
        "probgen.HMM, probgen.BayesianNetwork, probgen.RBM, probgen.sample_chains\n"
        "probgen.set_num_threads\n"
        "print(json.dumps([before, torch.get_num_threads()]))\n"
    )
    env = {**os.environ, "PROBGEN_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    assert before == after == 2


def _assert_ran_pinned(calls: list[int]) -> None:
    # Pinned to one thread for the call, then the caller's 2 restored.
    assert calls, "the entry point did not apply the thread policy"
    assert calls[0] == 1
    assert calls[-1] == 2
    assert torch.get_num_threads() == 2


def test_bayesian_network_query_runs_under_the_policy(thread_calls):
    import pandas as pd

    asia = probgen.BayesianNetwork.from_example("asia")
    evidence = pd.DataFrame({"smoke": ["yes", "no", "yes"]})
    asia.query(["lung"], evidence=evidence)
    _assert_ran_pinned(thread_calls)
    thread_calls.clear()
    asia.marginals(evidence)
    _assert_ran_pinned(thread_calls)


def test_rbm_epoch_runs_under_the_policy(thread_calls):
    x = (torch.rand(64, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    rbm = probgen.RBM(8, 4, n_epochs=1, batch_size=16, monitor=(), seed=0)
    checked_at: list[int] = []
    check = rbm._check_visible

    def recording_check(*args, **kwargs):
        checked_at.append(torch.get_num_threads())
        return check(*args, **kwargs)

    rbm._check_visible = recording_check
    rbm.fit(x)
    _assert_ran_pinned(thread_calls)
    # the data check runs under the policy too (it stalled at 2 threads beside busy work)
    assert checked_at == [1]


def test_large_rbm_keeps_the_callers_threads(thread_calls):
    x = (torch.rand(512, 1024, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    rbm = probgen.RBM(1024, 256, n_epochs=1, batch_size=512, monitor=(), seed=0)
    assert 512 * 1024 * 256 > THREADED_WORK
    rbm.fit(x)
    assert 1 not in thread_calls


def test_mh_chains_run_under_the_policy(thread_calls):
    def log_density(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x**2).sum(-1)

    probgen.sample_chains(
        log_density, "mh", num_chains=4, num_samples=20, warmup=20, initial=torch.zeros(2),
        seed=0, progress=False,
    )
    _assert_ran_pinned(thread_calls)


def test_gmm_em_runs_under_the_policy(thread_calls):
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    probgen.GaussianMixture(2, max_iter=3, tol=0.0, seed=0).fit(x)
    _assert_ran_pinned(thread_calls)


def test_entry_point_warnings_still_point_at_the_caller(two_threads):
    # The policy wraps loops inside the entry points, so `stacklevel` keeps naming user code.
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    with pytest.warns(DeprecationWarning) as record:
        probgen.GaussianMixture(2, max_iter=50).fit(x, seed=0)
    assert any(item.filename == __file__ for item in record)
