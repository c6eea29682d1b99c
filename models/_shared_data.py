"""Locate and read the data files under ``../shared/data`` (never downloaded).

The folder is looked up in this order: the ``PROBGEN_SHARED_DATA`` environment variable,
``../shared/data`` beside the project root, and ``../shared/data`` beside the current
directory. Readers raise `SharedDataMissing` (a `FileNotFoundError`) with a clear sentence when
the folder or file is absent, so tests can skip with that reason.

Example:
    >>> from probgen.recipes._shared_data import shared_data_dir
    >>> shared_data_dir() is None or shared_data_dir().is_dir()
    True
"""

from __future__ import annotations

import json
import os
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np


class SharedDataMissing(FileNotFoundError):
    """The shared data folder, or a file in it, is not on this machine."""


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when this machine does not have it."""
    candidates = []
    if os.environ.get("PROBGEN_SHARED_DATA"):
        candidates.append(Path(os.environ["PROBGEN_SHARED_DATA"]))
    project_root = Path(__file__).resolve().parents[1]
    candidates += [project_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def shared_file(*parts: str) -> Path:
    """Path of a file under the shared data folder.

    Raises:
        SharedDataMissing: the folder or the file is absent (the message says which).
    """
    root = shared_data_dir()
    if root is None:
        raise SharedDataMissing(
            "the shared data folder (../shared/data, or $PROBGEN_SHARED_DATA) is not on this "
            "machine; this recipe needs " + "/".join(parts)
        )
    path = root.joinpath(*parts)
    if not path.exists():
        raise SharedDataMissing(f"{path} is missing from the shared data folder")
    return path


@lru_cache(maxsize=8)
def _binarized_mnist(split: str) -> np.ndarray:
    from scipy.io import loadmat

    return loadmat(shared_file("binarized_mnist", f"binarized_mnist_{split}.amat"))["X"].astype(
        np.uint8
    )


def binarized_mnist(split: str = "train") -> np.ndarray:
    """Statically binarized MNIST: uint8 array (n, 784) in {0,1}; split train/valid/test."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    return _binarized_mnist(split).copy()


@lru_cache(maxsize=16)
def _debd(name: str, split: str) -> np.ndarray:
    return np.loadtxt(
        shared_file("debd", name, f"{name}.{split}.data"), delimiter=",", dtype=np.uint8
    )


def debd(name: str, split: str = "train") -> np.ndarray:
    """A binary density-estimation benchmark set (nltcs, dna, mushrooms, nips) as uint8 (n, d)."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    return _debd(name, split).copy()


def tiny_shakespeare() -> str:
    """The tiny shakespeare text (first 90% train, last 10% validation by convention)."""
    root = shared_file("tinyshakespeare")
    files = sorted(p for p in root.iterdir() if p.is_file())
    if not files:
        raise SharedDataMissing(f"{root} holds no text file")
    return files[0].read_text(encoding="utf-8")


def _posteriordb_root() -> Path:
    return shared_file("posteriordb", "posterior_database")


def posteriordb_posterior(name: str) -> dict[str, Any]:
    """The posterior description `posteriors/NAME.json`."""
    return json.loads((_posteriordb_root() / "posteriors" / f"{name}.json").read_text())


def posteriordb_data(name: str) -> dict[str, Any]:
    """The data of posterior `name` as one JSON object."""
    data_name = posteriordb_posterior(name)["data_name"]
    path = _posteriordb_root() / "data" / "data" / f"{data_name}.json.zip"
    if not path.exists():
        raise SharedDataMissing(f"{path} is missing from the shared data folder")
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(archive.namelist()[0]))


def posteriordb_reference_draws(name: str) -> list[dict[str, list[float]]]:
    """Reference posterior draws: a list of chains, each a dict from parameter to draws."""
    path = _posteriordb_root() / "reference_posteriors" / "draws" / "draws" / f"{name}.json.zip"
    if not path.exists():
        raise SharedDataMissing(f"{path} is missing from the shared data folder")
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(archive.namelist()[0]))


def posteriordb_reference_means(name: str) -> dict[str, Any]:
    """Reference posterior means with their Monte Carlo standard errors."""
    path = (
        _posteriordb_root()
        / "reference_posteriors"
        / "summary_statistics"
        / "mean_value"
        / "mean_value"
        / f"{name}.json"
    )
    if not path.exists():
        raise SharedDataMissing(f"{path} is missing from the shared data folder")
    return json.loads(path.read_text())
