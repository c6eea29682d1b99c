"""Shared pieces of the property-based tests: small fitted models and the error contract.

Every public entry point, given any input, either works or raises a named probgen error
(`ProbgenError`); an internal torch or numpy exception (an `IndexError` from deep inside a
recursion, a `RuntimeError` about tensor sizes) is a bug in the entry point's input checks.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import probgen
from probgen.core.errors import ProbgenError

settings.register_profile(
    "probgen",
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# `--hypothesis-profile=thorough` (tests/property/test_thorough.py, -m slow) overrides this.
settings.load_profile("probgen")


def works_or_named_error(call: Callable[[], Any]) -> Any:
    """Run `call`; a probgen error is a pass, any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return call()
        except ProbgenError:
            return None


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    with torch.no_grad():
        yield


# Values that break numerical code: NaN, both infinities, huge and tiny magnitudes.
NASTY_FLOATS = st.one_of(
    st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e38, 5e-324, 0.0, -0.0]),
    st.floats(-10, 10, allow_nan=False),
)
DTYPES = st.sampled_from(
    [np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_, np.complex64]
)


@st.composite
def arrays(draw: st.DrawFn, max_dims: int = 3, max_side: int = 5) -> np.ndarray:
    """An array of random dtype and shape (empty sides allowed) filled with nasty values."""
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))
    values = draw(
        hnp.arrays(np.float64, shape, elements=NASTY_FLOATS)
        if np.dtype(dtype).kind in "fc"
        else hnp.arrays(np.int64, shape, elements=st.integers(-3, 8))
    )
    with np.errstate(all="ignore"):
        return values.astype(dtype)


WRONG_TYPES = st.sampled_from([None, "abc", {"a": 1}, [[1, "x"]], object(), 3.5, [], [[]], b"x"])


@st.composite
def inputs(draw: st.DrawFn, near: tuple[int, ...] | None = None) -> Any:
    """Input data: a nasty array, a wrong type, or (`near`) an array of the expected shape."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(WRONG_TYPES)
    if near is not None and choice >= 5:
        rows = draw(st.integers(0, 6))
        values = draw(hnp.arrays(np.float64, (rows, *near), elements=NASTY_FLOATS))
        return (
            values.astype(draw(st.sampled_from([np.float32, np.float64, np.int64])))
            if (np.isfinite(values).all())
            else values
        )
    array = draw(arrays())
    return torch.as_tensor(array) if choice % 2 and array.dtype != np.uint16 else array


SAMPLE_COUNTS = st.one_of(
    st.integers(-2, 6), st.sampled_from([0, 10**12, 2.5, "3", None, True, np.int64(3)])
)
SEEDS = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.sampled_from(["s", 1.5]))


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def fitted() -> dict[str, Any]:
    """One small fitted model per family, fitted once for the whole property run."""
    rng = _rng()
    torch.manual_seed(0)
    rolls = [rng.integers(0, 3, size=30) for _ in range(3)]
    frame = pd.DataFrame({"a": rng.choice(["x", "y"], 80), "b": rng.choice(["u", "v", "w"], 80)})
    binary = (rng.random((64, 4)) < 0.4).astype(np.float32)
    points = rng.normal(size=(64, 2)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "hmm": probgen.HMM(2, "categorical", n_symbols=3, max_iter=5, seed=0).fit(rolls),
            "hmm_gauss": probgen.HMM(2, "gaussian", n_features=2, max_iter=5, seed=0).fit(
                [points[:32], points[32:]]
            ),
            "gmm": probgen.GaussianMixture(2, max_iter=5, seed=0).fit(points),
            "rbm": probgen.RBM(4, 3, n_epochs=2, seed=0),
            "bn": probgen.BayesianNetwork([("a", "b")]).fit(frame),
            "mn": probgen.MarkovNetwork(
                scopes=[("a", "b")], states={"a": ["x", "y"], "b": ["u", "v", "w"]}, max_iter=5
            ).fit(frame),
            "flow": probgen.Flow(2, n_layers=2, hidden_dims=(8,), n_epochs=1, seed=0).fit(points),
            "made": probgen.MADE(4, hidden_dims=(8,), n_epochs=1, seed=0).fit(binary),
            "vae": probgen.VAE(4, latent_dim=2, hidden_dims=(8,), n_epochs=1, seed=0).fit(binary),
        }
        models["rbm"].fit(binary)
    models["frame"] = frame
    models["binary"] = binary
    models["points"] = points
    return _Quiet(models)


class _Quiet(dict):
    """A dict whose repr stays one line in hypothesis's failure reports."""

    def __repr__(self) -> str:
        return f"<fitted models: {', '.join(self)}>"
