"""The in-repo feature classifiers (shipped weights, API, bad input) and grey-level MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from probgen.core.errors import DataError
from probgen.metrics.features import (
    WEIGHTS_DIR,
    FeatureClassifier,
    feature_classifier_names,
    load_feature_classifier,
    save_feature_classifier,
)

ROOT = Path(__file__).resolve().parents[2]


def _digits_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    # The classifier's held-out rows: the digits recipes' test split (seed 0), grey levels.
    from probgen.recipes._digits import SPLIT_BOUNDS
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.data))
    start, stop = SPLIT_BOUNDS["test"]
    rows = order[start:stop]
    return (
        torch.as_tensor(digits.data[rows] / 16.0, dtype=torch.float32),
        torch.as_tensor(digits.target[rows]),
    )


def test_shipped_weights_are_small_and_listed():
    assert {"digits", "mnist"} <= set(feature_classifier_names())
    for path in WEIGHTS_DIR.glob("*.safetensors"):
        assert path.stat().st_size < 1_000_000, path


def test_digits_classifier_api_and_accuracy():
    net = load_feature_classifier("digits")
    assert not net.training and net.num_features == 64
    x, y = _digits_test_split()
    logits = net(x)
    assert logits.shape == (len(x), 10)
    # features are the penultimate layer: the head applied to them gives the logits.
    torch.testing.assert_close(net.head(net.features(x)), logits)
    # (n, 64), (n, 8, 8) and (n, 1, 8, 8) are the same images.
    torch.testing.assert_close(net(x.reshape(-1, 1, 8, 8)), logits)
    torch.testing.assert_close(net(x.reshape(-1, 8, 8).numpy()), logits)
    assert float((net.predict(x) == y).double().mean()) >= 0.95
    assert float((net.predict((x >= 0.5).float()) == y).double().mean()) >= 0.9
    probabilities = net.predict_proba(x)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(len(x)))
    extractor = net.feature_extractor()
    assert extractor.num_features == 64
    torch.testing.assert_close(extractor(x), net.features(x))


def test_mnist_classifier_accuracy_on_held_out_split():
    from probgen.recipes._mnist import SharedDataMissing, grey_mnist

    try:
        x, y = grey_mnist("test")
    except SharedDataMissing as error:
        pytest.skip(str(error))
    net = load_feature_classifier("mnist")
    assert net.num_features == 64
    assert float((net.predict(x) == y).double().mean()) >= 0.97
    assert net(x.reshape(len(x), 784)[:3]).shape == (3, 10)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(3, 63), "shape"),
        (torch.rand(3, 2, 8, 8), "shape"),
        (torch.rand(3, 784), "shape"),
        (torch.rand(3, 64) * 16, r"\[0, 1\]"),
        (torch.rand(3, 64) - 0.5, r"\[0, 1\]"),
        (torch.full((3, 64), float("nan")), "NaN"),
        (torch.rand(0, 64), "empty"),
        ([["a"] * 64], "numbers"),
    ],
)
def test_bad_images_raise_data_error_naming_x(images, message):
    net = load_feature_classifier("digits")
    with pytest.raises(DataError, match=message) as error:
        net.features(images)
    assert "x" in str(error.value)


def test_unknown_name_and_foreign_file(tmp_path):
    with pytest.raises(DataError, match="name must be one of"):
        load_feature_classifier("cifar")
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a feature-classifier"):
        load_feature_classifier(path=foreign)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = FeatureClassifier("digits", 8, channels=(4, 8), num_features=12)
    path = save_feature_classifier(net, tmp_path / "tiny.safetensors", test_accuracy=0.5)
    loaded = load_feature_classifier(path=path)
    x = torch.rand(4, 64)
    torch.testing.assert_close(loaded(x), net.eval()(x))
    assert loaded.num_features == 12 and json.loads(loaded.metadata["test_accuracy"]) == 0.5


def test_recorded_accuracy_matches_the_benchmark_results():
    results = json.loads((ROOT / "benchmarks" / "results" / "feature_classifier.json").read_text())
    import hashlib

    from safetensors.torch import load_file

    for name in ("digits", "mnist"):
        net = load_feature_classifier(name)
        assert json.loads(net.metadata["test_accuracy"]) == results[name]["test_accuracy"]
        # The shipped weights are the ones the recorded run produced.
        digest = hashlib.sha256()
        for key, value in sorted(load_file(str(WEIGHTS_DIR / f"{name}.safetensors")).items()):
            digest.update(key.encode())
            digest.update(value.numpy().tobytes())
        assert digest.hexdigest() == results[name]["tensors_sha256"]
    assert results["mnist"]["test_accuracy"] >= 0.97


def test_grey_mnist_splits_and_errors():
    from probgen.recipes._mnist import SharedDataMissing, grey_mnist

    try:
        train_x, train_y = grey_mnist("train", n=50, seed=1)
    except SharedDataMissing as error:
        pytest.skip(str(error))
    assert train_x.shape == (50, 1, 28, 28) and train_x.dtype == torch.float32
    assert train_y.dtype == torch.int64 and 0 <= int(train_y.min()) <= int(train_y.max()) <= 9
    assert 0 <= float(train_x.min()) and float(train_x.max()) <= 1
    all_train, _ = grey_mnist("train")
    all_test, _ = grey_mnist("test")
    assert len(all_train) == 8000 and len(all_test) == 2000
    # The split does not depend on the seed: the subset of seed 1 lies in the train split.
    train_rows = {row.numpy().tobytes() for row in all_train}
    assert all(row.numpy().tobytes() in train_rows for row in train_x)
    assert not any(row.numpy().tobytes() in train_rows for row in all_test[:200])
    torch.testing.assert_close(
        grey_mnist("test", n=5, seed=3)[0], grey_mnist("test", n=5, seed=3)[0]
    )
    with pytest.raises(DataError, match="split"):
        grey_mnist("valid")
    with pytest.raises(DataError, match="n must be"):
        grey_mnist("test", n=2001)
