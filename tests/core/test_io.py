"""Save/load: atomic, versioned, no unpickling, clear errors on corrupt or foreign files."""

from __future__ import annotations

import json
import struct

import pytest
import torch

import probgen
from probgen.core.contract import LogProbKind, Model
from probgen.core.errors import DataError, ModelFileError, NotFittedError
from probgen.core.io import read_metadata


class TinyGaussian(Model):
    """A one-parameter model used to exercise the foundation."""

    log_prob_kind = LogProbKind.EXACT

    def __init__(self, dim: int = 2):
        super().__init__()
        self.dim = dim
        self.event_shape = torch.Size([dim])
        self.loc = torch.nn.Parameter(torch.zeros(dim))

    def get_config(self):
        return {"dim": self.dim}

    def fit(self, data):
        x = torch.as_tensor(data, dtype=torch.float32)
        with torch.no_grad():
            self.loc.copy_(x.mean(0))
        self._mark_fitted()
        self.history_ = [{"iteration": 1, "log_likelihood": float(self.log_prob(x).mean())}]
        return self

    def log_prob(self, x):
        self.check_fitted("log_prob")
        x = torch.as_tensor(x, dtype=self.loc.dtype)
        return torch.distributions.Normal(self.loc, 1.0).log_prob(x).sum(-1)

    def sample(self, n, *, seed=None):
        generator = self.make_generator(seed)
        return self.loc.detach() + torch.randn(n, self.dim, generator=generator)


@pytest.fixture(autouse=True)
def allow_test_classes(monkeypatch):
    # Loading only resolves classes inside probgen/models; this module's toy class is let in.
    import probgen.core.io

    monkeypatch.setattr(
        probgen.core.io,
        "_ALLOWED_MODULE_PREFIXES",
        (*probgen.core.io._ALLOWED_MODULE_PREFIXES, TinyGaussian.__module__ + "."),
    )


@pytest.fixture
def fitted():
    return TinyGaussian(2).fit(torch.randn(50, 2, generator=torch.Generator().manual_seed(0)))


def test_round_trip_keeps_parameters_and_fitted_state(tmp_path, fitted):
    path = tmp_path / "m.probgen"
    fitted.save(path)
    restored = probgen.load(path)
    assert isinstance(restored, TinyGaussian)
    assert torch.equal(restored.loc, fitted.loc)
    assert restored.history_ == fitted.history_
    assert restored.fitted_
    assert read_metadata(path)["config"] == {"dim": 2}


def test_not_fitted_error_names_method():
    with pytest.raises(NotFittedError, match="log_prob"):
        TinyGaussian().log_prob(torch.zeros(1, 2))


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip_tensor_byte", "garbage", "empty", "foreign_safetensors", "newer_version"],
)
def test_damaged_files_raise_model_file_error(tmp_path, fitted, damage):
    path = tmp_path / "m.probgen"
    fitted.save(path)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 3]
    elif damage == "flip_tensor_byte":
        raw[-1] ^= 0xFF
    elif damage == "garbage":
        raw = bytearray(b"not a model file at all, just text" * 3)
    elif damage == "empty":
        raw = bytearray()
    elif damage == "foreign_safetensors":
        from safetensors.torch import save

        raw = bytearray(save({"weight": torch.zeros(3)}))
    elif damage == "newer_version":
        (size,) = struct.unpack("<Q", bytes(raw[:8]))
        header = json.loads(bytes(raw[8 : 8 + size]))
        document = json.loads(header["__metadata__"]["probgen"])
        document["format_version"] = 999
        header["__metadata__"]["probgen"] = json.dumps(document)
        encoded = json.dumps(header).encode()
        raw = bytearray(struct.pack("<Q", len(encoded)) + encoded + bytes(raw[8 + size :]))
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError):
        probgen.load(path)


def test_class_outside_probgen_is_rejected(tmp_path, fitted):
    path = tmp_path / "m.probgen"
    fitted.save(path)
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    document = json.loads(header["__metadata__"]["probgen"])
    document["class"] = "os.system"
    header["__metadata__"]["probgen"] = json.dumps(document)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + size :])
    with pytest.raises(ModelFileError, match="outside probgen"):
        probgen.load(path)


def test_failed_save_keeps_existing_file(tmp_path, fitted, monkeypatch):
    path = tmp_path / "m.probgen"
    fitted.save(path)
    before = path.read_bytes()

    def broken_config():
        raise RuntimeError("crash while saving")

    monkeypatch.setattr(fitted, "get_config", broken_config)
    with pytest.raises(RuntimeError):
        fitted.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.probgen"]


def test_save_to_missing_folder_names_path(tmp_path, fitted):
    with pytest.raises(DataError, match="path"):
        fitted.save(tmp_path / "missing" / "m.probgen")


def test_missing_file_is_model_file_error(tmp_path):
    with pytest.raises(ModelFileError):
        probgen.load(tmp_path / "nothing.probgen")
