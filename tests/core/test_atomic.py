"""Atomic saving: a process killed in the middle of `save` leaves the old file loadable, and
saved files (models, checkpoints, samples) get the permissions of the user's umask."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import probgen
from probgen.core.atomic import atomic_write_bytes
from probgen.fitting.checkpoint import CHECKPOINT_NAME
from probgen.fitting.loop import fit_model
from probgen.samplers.samples import Samples

# The child saves a large RBM (about 16 MB of weights) over `target`. With PAUSE set, it
# stops between writing the complete temporary file and the rename, says so, and waits to be
# killed: the kill then lands at the worst moment for a non-atomic writer.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    import probgen
    import probgen.core.atomic as atomic

    target, pause = sys.argv[1], sys.argv[2] == "pause"
    real_replace = os.replace

    def slow_replace(source, destination):
        print("written", flush=True)
        if pause:
            time.sleep(600)
        real_replace(source, destination)

    atomic.os.replace = slow_replace
    model = probgen.RBM(2000, 2000, seed=1)
    print("start", flush=True)
    model.save(target)
    """
)


def _old_model(path: Path) -> probgen.GaussianMixture:
    points = np.random.default_rng(0).normal(size=(50, 2))
    model = probgen.GaussianMixture(2, seed=0).fit(points)
    model.save(path)
    return model


def _start_child(target: Path, pause: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target), "pause" if pause else "go"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_old_file_survives(target: Path, old: probgen.GaussianMixture) -> None:
    restored = probgen.load(target)
    assert type(restored) is probgen.GaussianMixture
    x = torch.zeros(3, 2, dtype=old.means.dtype)
    torch.testing.assert_close(restored.log_prob(x), old.log_prob(x))


def _check_folder_still_usable(folder: Path, target: Path) -> None:
    # What a kill leaves behind is a hidden temporary file, never a *.probgen file; it does
    # not stop the next save, and that save replaces the target completely.
    for path in folder.iterdir():
        if path != target:
            assert path.name.startswith(f".{target.name}.") and path.name.endswith(".tmp")
    points = np.random.default_rng(1).normal(size=(40, 3))
    new = probgen.GaussianMixture(1, seed=0).fit(points)
    new.save(target)
    assert probgen.load(target).n_features == 3


def test_kill_between_temporary_file_and_rename_keeps_old_file(tmp_path):
    target = tmp_path / "model.probgen"
    old = _old_model(target)
    child = _start_child(target, pause=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while "written" not in lines and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        assert "written" in lines, (lines, child.stderr.read())
        # The complete new file exists beside the old one at this point.
        temporaries = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert temporaries and temporaries[0].stat().st_size > 10_000_000
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    _check_old_file_survives(target, old)
    _check_folder_still_usable(tmp_path, target)


@pytest.mark.slow
def test_kill_at_random_times_in_save_keeps_a_loadable_file(tmp_path):
    """SIGKILL at random moments of a real (unpaused) save: the target is always whole."""
    target = tmp_path / "model.probgen"
    old = _old_model(target)
    chooser = random.Random(0)
    outcomes: set[str] = set()
    attempts = 0
    # Kill delays log-uniform over 1-400 ms, so that some kills land inside the save and some
    # after it whatever the machine's load; keep going until both have happened.
    while attempts < 12 or ("GaussianMixture" not in outcomes and attempts < 60):
        attempts += 1
        child = _start_child(target, pause=False)
        assert child.stdout.readline().strip() == "start", child.stderr.read()
        time.sleep(0.001 * 400 ** chooser.random())
        child.send_signal(signal.SIGKILL)
        child.wait()
        model = probgen.load(target)  # old or new, never torn
        outcomes.add(type(model).__name__)
        if isinstance(model, probgen.GaussianMixture):
            _check_old_file_survives(target, old)
        else:
            old = _old_model(target)  # reset, so the next kill again lands on a save over it
    _check_folder_still_usable(tmp_path, target)
    assert "GaussianMixture" in outcomes


# ---- permissions -----------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_model_file_gets_umask_permissions(tmp_path, umask):
    path = tmp_path / "model.probgen"
    _old_model(path)
    assert _mode(path) == 0o666 & ~umask


def test_checkpoint_gets_umask_permissions(tmp_path, umask):
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    data = torch.randn(16, 2)
    fit_model(net, data, loss=lambda m, b: m(b).pow(2).mean(), n_epochs=1, checkpoint_dir=tmp_path)
    assert _mode(tmp_path / CHECKPOINT_NAME) == 0o666 & ~umask


def test_saved_samples_get_umask_permissions(tmp_path, umask):
    path = tmp_path / "draws.safetensors"
    Samples({"x": np.zeros((2, 3))}).save(path)
    assert _mode(path) == 0o666 & ~umask
    assert Samples.load(path)["x"].shape == (2, 3)


def test_overwrite_keeps_the_existing_file_mode(tmp_path):
    """A file the user made group-readable (or private) keeps that mode when overwritten."""
    path = tmp_path / "model.probgen"
    _old_model(path)
    for mode in (0o640, 0o600, 0o664):
        path.chmod(mode)
        _old_model(path)
        assert _mode(path) == mode


def test_failed_write_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def explode(stream):
        stream.write(b"half")
        raise RuntimeError("disk on fire")

    from probgen.core.atomic import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(path, explode)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
