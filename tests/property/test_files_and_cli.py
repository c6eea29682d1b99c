"""Property tests: `probgen.load`, `sample_chains` and the `probgen` command on hostile inputs.

Corrupt model files (random bytes, truncations, flipped bits), random sampler settings and
targets that return NaN or infinity, random data files for `probgen score` and random counts
for `probgen sample`: each either works or fails with a named probgen error (the command:
exit status 1 and one line on stderr), never an internal exception.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import probgen
from conftest import NASTY_FLOATS, arrays, works_or_named_error
from probgen.cli import main
from probgen.core.errors import DataError, ModelFileError


@pytest.fixture(scope="module")
def saved(tmp_path_factory, fitted):
    """The bytes of a valid saved model file of several families."""
    folder = tmp_path_factory.mktemp("saved")
    files = {}
    for name in ("hmm", "gmm", "bn", "rbm"):
        path = folder / f"{name}.probgen"
        fitted[name].save(path)
        files[name] = path.read_bytes()
    return files


@pytest.mark.parametrize("name", ["hmm", "gmm", "bn", "rbm"])
@given(
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=4),
    junk=st.binary(max_size=64),
)
def test_load_of_damaged_file_raises_model_file_error(saved, name, cut, flips, junk):
    raw = bytearray(saved[name][: int(len(saved[name]) * cut)] if cut < 1 else saved[name])
    for where, mask in flips:
        if raw:
            raw[min(int(where * len(raw)), len(raw) - 1)] ^= mask
    raw += junk
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.probgen"
        path.write_bytes(bytes(raw))
        try:
            model = probgen.load(path)
        except ModelFileError:
            return
    # Undamaged (or damaged only in ignorable trailing bytes): it must be the real model.
    assert (
        type(model).__name__
        == {
            "hmm": "HMM",
            "gmm": "GaussianMixture",
            "bn": "BayesianNetwork",
            "rbm": "RBM",
        }[name]
    )


@given(path=st.sampled_from(["", ".", "/", "nowhere.probgen", "/dev/null"]))
def test_load_of_odd_paths_raises_model_file_error(path):
    with pytest.raises(ModelFileError):
        probgen.load(path)


def _normal(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x**2).sum(-1)


@st.composite
def _broken_targets(draw: st.DrawFn):
    """A log-density that returns a nasty value (NaN, +inf, -inf, huge) somewhere."""
    value = draw(NASTY_FLOATS)
    where = draw(st.sampled_from(["everywhere", "right", "first_chain"]))

    def target(x: torch.Tensor) -> torch.Tensor:
        lp = _normal(x)
        if where == "everywhere":
            return torch.full_like(lp, value)
        if where == "right":
            return torch.where(x[..., 0] > 0, torch.full_like(lp, value), lp)
        return torch.cat([torch.full_like(lp[:1], value), lp[1:]])

    return target


@given(
    method=st.sampled_from(["mh", "gibbs", "nuts", "svi", "hmm", "", None, 3]),
    num_chains=st.one_of(st.integers(-1, 3), st.sampled_from([2.5, "2", None])),
    num_samples=st.one_of(st.integers(-1, 4), st.sampled_from([1.0, None])),
    warmup=st.one_of(st.integers(-1, 3), st.sampled_from([np.nan, "0"])),
    seed=st.one_of(st.integers(-(2**65), 2**65), st.sampled_from([None, 1.5, "0"])),
    thin=st.one_of(st.integers(-1, 2), st.just(0.5)),
)
def test_sample_chains_settings(method, num_chains, num_samples, warmup, seed, thin):
    samples = works_or_named_error(
        lambda: probgen.sample_chains(
            _normal,
            method,
            num_chains=num_chains,
            num_samples=num_samples,
            warmup=warmup,
            seed=seed,
            thin=thin,
            event_shape=(2,),
            progress=False,
        )
    )
    if samples is not None:
        # num_samples counts the kept draws; thinning runs num_samples * thin sweeps.
        assert samples["x"].shape == (num_chains, num_samples, 2)


@given(target=_broken_targets(), method=st.sampled_from(["mh", "nuts"]))
def test_sample_chains_on_broken_targets(target, method):
    samples = works_or_named_error(
        lambda: probgen.sample_chains(
            target,
            method,
            num_chains=2,
            num_samples=3,
            warmup=3,
            event_shape=(2,),
            progress=False,
            # A flat region sends NUTS to its full tree depth; a small one keeps this fast.
            **({"max_tree_depth": 3} if method == "nuts" else {}),
        )
    )
    if samples is not None:
        assert np.isfinite(samples["x"]).all()


@given(initial=st.one_of(arrays(max_dims=2, max_side=3), st.sampled_from([None, "x", [1.0]])))
def test_sample_chains_initial_points(initial):
    works_or_named_error(
        lambda: probgen.sample_chains(
            _normal,
            "mh",
            num_chains=2,
            num_samples=2,
            warmup=2,
            initial=initial,
            event_shape=(2,),
            progress=False,
        )
    )


# ---- the command line --------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, fitted):
    folder = tmp_path_factory.mktemp("cli")
    paths = {}
    for name in ("hmm", "gmm", "bn"):
        paths[name] = folder / f"{name}.probgen"
        fitted[name].save(paths[name])
    return paths


def _run(arguments: list[str], capsys) -> int:
    status = main(arguments)
    captured = capsys.readouterr()
    assert status in (0, 1), status
    if status == 1:
        error_lines = [line for line in captured.err.splitlines() if line.strip()]
        assert error_lines and error_lines[-1].startswith("probgen "), captured.err
    return status


@pytest.mark.parametrize("name", ["hmm", "gmm", "bn"])
@given(
    array=arrays(max_dims=3, max_side=4),
    suffix=st.sampled_from([".npy", ".csv"]),
)
def test_cli_score_on_random_data(model_files, name, array, suffix, capsys, tmp_path):
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    else:
        rows = array.shape[0] if array.ndim else 1
        table = array.reshape(rows, -1) if array.size else np.zeros((rows, 1), array.dtype)
        frame = pd.DataFrame(table)
        names = ["a", "b", "c", "d"] if name == "bn" and frame.shape[1] <= 4 else None
        frame.columns = names[: frame.shape[1]] if names else [f"c{i}" for i in frame.columns]
        frame.to_csv(path, index=False)
    _run(["score", str(model_files[name]), str(path)], capsys)


@pytest.mark.parametrize("name", ["hmm", "gmm", "bn"])
@given(
    n=st.sampled_from(["-1", "0", "1", "3", "x", "1e3", "2.5"]),
    length=st.sampled_from([None, "-1", "0", "2", "y"]),
    seed=st.sampled_from([None, "0", "-5", str(2**70), "abc"]),
    suffix=st.sampled_from([".npy", ".csv", ".txt", ""]),
)
def test_cli_sample_arguments(model_files, name, n, length, seed, suffix, capsys, tmp_path):
    arguments = ["sample", str(model_files[name]), "-n", n, "--out", str(tmp_path / f"o{suffix}")]
    if length is not None:
        arguments += ["--length", length]
    if seed is not None:
        arguments += ["--seed", seed]
    try:
        _run(arguments, capsys)
    except SystemExit as error:  # argparse refusing a non-integer: usage error, status 2
        assert error.code == 2


def test_cli_score_garbage_file_is_one_line(model_files, capsys, tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\x00\xff,\n\x01")
    assert _run(["score", str(model_files["gmm"]), str(path)], capsys) == 1


def test_named_error_on_wrong_width(fitted):
    with pytest.raises(DataError):
        fitted["gmm"].log_prob(np.zeros((3, 5)))
