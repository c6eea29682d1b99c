"""Saving and loading models: safetensors tensors plus a JSON config, versioned and atomic.

A probgen model file is a safetensors file whose metadata holds one JSON document under the
key ``probgen``: the format name and version, the model's class (which must be a probgen
`Model` subclass inside the `probgen` package, recipes included), its constructor config, its
fitted non-tensor state, and a SHA-256 digest of the tensor bytes. Loading never unpickles;
anything that does not parse, does not match its digest, or names a foreign class raises
`ModelFileError`. Saving writes a temporary file beside the target and renames it, so a crash
never damages an existing file.

Example:
    >>> import tempfile, pathlib, probgen
    >>> hmm = probgen.HMM(2, emission="categorical", n_symbols=3)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hmm.probgen"
    >>> hmm.save(path)
    >>> type(probgen.load(path)).__name__
    'HMM'
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from probgen.core.atomic import atomic_write_bytes
from probgen.core.errors import DataError, ModelFileError
from probgen.core.registry import class_path, is_model_class

FORMAT_NAME = "probgen-model"
FORMAT_VERSION = 1
_ALLOWED_MODULE_PREFIXES = ("probgen.", "models.")
# Files written before the layout by family name the modules of that time; each maps to the
# package that exports the class now (recipes were the top-level `models` package).
_LEGACY_MODULES = {
    "probgen.graphical.hmm": "probgen.hmm",
    "probgen.graphical.bayesnet": "probgen.networks",
    "probgen.graphical.markovnet": "probgen.networks",
    "probgen.graphical.rbm": "probgen.boltzmann",
    "probgen.graphical.boltzmann": "probgen.boltzmann",
    "probgen.graphical.boltzmann_machine": "probgen.boltzmann",
    "probgen.graphical.dbn": "probgen.boltzmann",
    "probgen.graphical.mixture": "probgen.mixture",
    "probgen.pyro_bridge": "probgen.samplers.pyro_density",
}
_MAX_HEADER_BYTES = 100_000_000


def save_model(model: Any, path: str | os.PathLike) -> None:
    """Save `model` (a `probgen.core.contract.Model`) to `path`, atomically.

    Args:
        model: the model to save.
        path: destination file; its folder must exist.

    Raises:
        DataError: `path` is a folder or its parent folder does not exist.
    """
    from safetensors.torch import save as safetensors_save

    path = Path(path)
    if path.is_dir():
        raise DataError(f"path {str(path)!r} is a folder; give a file name to save the model to")
    if not path.parent.exists():
        raise DataError(f"path: folder {str(path.parent)!r} does not exist")
    tensors = {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in model.get_tensors().items()
    }
    digest = _digest(tensors)
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class": class_path(type(model)),
        "config": model.get_config(),
        "fitted_state": model.get_fitted_state(),
        "tensor_sha256": digest,
        "torch_version": torch.__version__,
    }
    payload = safetensors_save(tensors, metadata={"probgen": json.dumps(document)})
    atomic_write_bytes(path, payload)


def load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """Load a model saved with `Model.save`.

    Args:
        path: the model file.
        map_location: device to place the tensors on.

    Returns:
        The model, on `map_location`, with its fitted state.

    Raises:
        ModelFileError: the file is missing, truncated, corrupt, foreign or of a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"path {str(path)!r} is not a file")
    raw = path.read_bytes()
    document, tensors = _parse(raw, path)
    cls = _resolve_class(document.get("class"), path)
    try:
        model = cls.from_config(document.get("config") or {})
        model.set_tensors(tensors)
        model.set_fitted_state(document.get("fitted_state") or {})
    except ModelFileError:
        raise
    except Exception as error:  # a config or tensor that does not fit the class
        raise ModelFileError(
            f"{str(path)!r} does not hold a valid {cls.__name__}: {error}"
        ) from error
    return model.to(map_location)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON document of a model file (class, config, fitted state) without building it."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"path {str(path)!r} is not a file")
    document, _ = _parse(path.read_bytes(), path)
    return document


def _parse(raw: bytes, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load as safetensors_load

    where = repr(str(path))
    if len(raw) < 8:
        raise ModelFileError(f"{where} is not a probgen model file (only {len(raw)} bytes)")
    (header_size,) = struct.unpack("<Q", raw[:8])
    if header_size <= 1 or header_size > _MAX_HEADER_BYTES or 8 + header_size > len(raw):
        raise ModelFileError(f"{where} is not a probgen model file or is truncated")
    try:
        header = json.loads(raw[8 : 8 + header_size].decode("utf-8"))
        document = json.loads(header["__metadata__"]["probgen"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ModelFileError(f"{where} is not a probgen model file") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{where} is not a probgen model file")
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{where} has format version {version!r}; this probgen reads up to {FORMAT_VERSION}"
        )
    try:
        tensors = safetensors_load(raw)
    except Exception as error:
        raise ModelFileError(f"{where} is corrupt or truncated: {error}") from error
    if _digest(tensors) != document.get("tensor_sha256"):
        raise ModelFileError(f"{where} is corrupt: its tensors do not match their checksum")
    return document, tensors


def _resolve_class(name: Any, path: Path) -> Any:
    if not isinstance(name, str) or not name.startswith(_ALLOWED_MODULE_PREFIXES):
        raise ModelFileError(f"{str(path)!r} names a class outside probgen: {name!r}")
    module_name, _, qualname = name.rpartition(".")
    module_name = _LEGACY_MODULES.get(module_name, module_name)
    if module_name == "models" or module_name.startswith("models."):
        module_name = "probgen.recipes" + module_name[len("models") :]
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ModelFileError(f"{str(path)!r} names an unknown class {name!r}") from error
    if not is_model_class(target):
        raise ModelFileError(f"{str(path)!r} names {name!r}, which is not a probgen model")
    return target


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(
            tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        )
    return digest.hexdigest()
