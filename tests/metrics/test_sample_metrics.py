"""FID, KID, precision/recall/density/coverage and the Inception-Score-style score: parity with
torchmetrics and prdc (the oracles), identities, and bad input."""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest
import torch

from probgen.core.errors import DataError
from probgen.metrics import (
    frechet_distance_from_samples,
    inception_score,
    kernel_distance,
    load_feature_classifier,
    precision_recall_density_coverage,
)


def _digit_images(n: int, seed: int, power: float = 1.0) -> torch.Tensor:
    from sklearn.datasets import load_digits

    data = load_digits().data / 16.0
    rows = np.random.default_rng(seed).choice(len(data), n, replace=False)
    return torch.as_tensor(data[rows] ** power, dtype=torch.float32)


def _prdc_reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    prdc = pytest.importorskip("prdc")
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        values = prdc.compute_prdc(real, fake, nearest_k=k)
    return {key: float(value) for key, value in values.items()}


def test_fid_and_kid_equal_torchmetrics_with_the_same_feature_module():
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    kid_module = pytest.importorskip("torchmetrics.image.kid")
    extractor = load_feature_classifier("digits").feature_extractor()
    real, fake = _digit_images(300, 0), _digit_images(240, 1, power=2.0)
    reference = fid_module.FrechetInceptionDistance(feature=extractor)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    ours = frechet_distance_from_samples(real, fake, features=extractor)
    assert float(ours) > 0.1
    assert math.isclose(float(ours), float(reference.compute()), rel_tol=1e-4, abs_tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "saves all features in a buffer"
        kid = kid_module.KernelInceptionDistance(feature=extractor, subsets=6, subset_size=150)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    torch.manual_seed(3)  # torchmetrics draws its subsets from the global generator
    reference_mean, reference_std = kid.compute()
    ours_kid = kernel_distance(real, fake, features=extractor, subsets=6, subset_size=150, seed=3)
    assert float(ours_kid.mean) > 0.01
    assert math.isclose(float(ours_kid.mean), float(reference_mean), rel_tol=1e-4, abs_tol=1e-6)
    assert math.isclose(float(ours_kid.std), float(reference_std), rel_tol=1e-4, abs_tol=1e-6)
    # A different seed draws other subsets: the seed is honoured.
    other = kernel_distance(real, fake, features=extractor, subsets=6, subset_size=150, seed=4)
    assert float(other.mean) != float(ours_kid.mean)


def test_inception_score_equals_torchmetrics_with_the_same_classifier():
    inception = pytest.importorskip("torchmetrics.image.inception")
    classifier = load_feature_classifier("digits")
    images = _digit_images(200, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = inception.InceptionScore(feature=classifier, splits=4)
    reference.update(images)
    torch.manual_seed(5)
    reference_mean, reference_std = reference.compute()
    ours = inception_score(images, classifier=classifier, splits=4, seed=5)
    assert math.isclose(float(ours.mean), float(reference_mean), rel_tol=1e-4)
    assert math.isclose(float(ours.std), float(reference_std), rel_tol=1e-3)
    # Real digits are classified confidently and evenly: close to the 10 classes.
    assert float(ours.mean) > 7
    # One repeated image scores 1 (one class, no diversity).
    repeated = inception_score(images[:1].repeat(50, 1), classifier="digits", splits=5)
    assert math.isclose(float(repeated.mean), 1.0, abs_tol=1e-6)


def test_prdc_equals_the_prdc_package_on_random_data():
    rng = np.random.default_rng(0)
    for trial in range(3):
        real = rng.normal(size=(120, 4))
        fake = rng.normal(0.4, 1.3, size=(90, 4))
        k = 3 + trial
        ours = precision_recall_density_coverage(real, fake, k=k)
        reference = _prdc_reference(real, fake, k)
        for key, value in reference.items():
            assert math.isclose(ours[key], value, rel_tol=1e-12), (key, ours[key], value)


def _brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int, closed: bool) -> dict:
    inside = np.less_equal if closed else np.less

    def radii(points):
        distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
        return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself

    real_r, fake_r = radii(real), radii(fake)
    cross = np.sqrt(((real[:, None] - fake[None]) ** 2).sum(-1))
    held = inside(cross, real_r[:, None])
    return {
        "precision": held.any(0).mean(),
        "recall": inside(cross, fake_r[None]).any(1).mean(),
        "density": held.sum(0).mean() / k,
        "coverage": held.any(1).mean(),
    }


def test_prdc_tie_rule_is_the_only_difference_from_the_prdc_package():
    # Binary vectors tie distances with radii; prdc's strict "<" then differs from closed balls.
    rng = np.random.default_rng(1)
    real = rng.integers(0, 2, size=(40, 5)).astype(float)
    fake = rng.integers(0, 2, size=(35, 5)).astype(float)
    reference = _prdc_reference(real, fake, 3)
    open_balls = precision_recall_density_coverage(real, fake, k=3, ties="open")
    closed = precision_recall_density_coverage(real, fake, k=3)
    for key in reference:
        assert math.isclose(open_balls[key], reference[key], rel_tol=1e-12)
        assert math.isclose(closed[key], _brute_force_prdc(real, fake, 3, True)[key], rel_tol=1e-12)
        assert math.isclose(
            open_balls[key], _brute_force_prdc(real, fake, 3, False)[key], rel_tol=1e-12
        )
    assert closed["density"] > reference["density"]
    # The case that matters: a "generator" copying a point that has k duplicates in the data.
    data = np.vstack([np.zeros((4, 2)), rng.normal(size=(30, 2)) + 5])
    copies = np.zeros((10, 2))
    assert precision_recall_density_coverage(data, copies, k=3)["precision"] == 1.0
    assert _prdc_reference(data, copies, 3)["precision"] == 0.0


def test_metric_identities():
    images = _digit_images(400, 3)
    features = load_feature_classifier("digits").features
    assert float(frechet_distance_from_samples(images, images, features=features)) < 1e-6
    # KID of two halves of one set: unbiased, so its mean over random splits is 0 within its
    # standard error (the biased V-statistic sits about 10 standard errors above 0 here).
    everything = features(_digit_images(1000, 3))
    halves = []
    for split in range(10):
        order = torch.randperm(1000, generator=torch.Generator().manual_seed(split))
        value = kernel_distance(
            everything[order[:300]], everything[order[300:600]], subsets=1, subset_size=300
        )
        halves.append(float(value.mean))
    standard_error = np.std(halves) / math.sqrt(len(halves))
    assert abs(np.mean(halves)) < 3 * standard_error
    shifted = kernel_distance(
        everything[:300], features(_digit_images(300, 4, 3.0)), subset_size=300, subsets=1
    )
    assert float(shifted.mean) > 10 * np.std(halves)
    # A collapsed generator: every sample near one data point.
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 2))
    collapsed = real[7] + 0.01 * rng.normal(size=(300, 2))
    scores = precision_recall_density_coverage(real, collapsed, k=5)
    assert scores["precision"] == 1.0 and scores["recall"] < 0.05 and scores["coverage"] < 0.05
    fresh = precision_recall_density_coverage(real, rng.normal(size=(300, 2)), k=5)
    assert fresh["precision"] > 0.8 and fresh["recall"] > 0.8 and 0.7 < fresh["density"] < 1.3


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: precision_recall_density_coverage(np.zeros((5, 2)), np.zeros((5, 3))), "fake"),
        (lambda: precision_recall_density_coverage(np.zeros((0, 2)), np.zeros((5, 2))), "real"),
        (lambda: precision_recall_density_coverage(np.ones((5, 2)), np.ones((4, 2)), k=4), "k"),
        (lambda: precision_recall_density_coverage(np.ones((5, 2)), np.ones((6, 2)), k=0), "k"),
        (
            lambda: precision_recall_density_coverage(
                np.full((5, 2), np.nan), np.ones((6, 2)), k=2
            ),
            "real",
        ),
        (
            lambda: precision_recall_density_coverage(np.ones((5, 2)), np.ones((6, 2)), ties="x"),
            "ties",
        ),
        (lambda: kernel_distance(np.ones((5, 2)), np.ones((5, 3))), "fake"),
        (lambda: kernel_distance(np.ones((5, 2)), np.ones((6, 2)), subset_size=6), "subset_size"),
        (lambda: kernel_distance(np.ones((5, 2)), np.ones((6, 2)), subsets=0), "subsets"),
        (lambda: kernel_distance(np.ones((5, 2)), [[np.nan, 1.0]] * 5, subset_size=3), "fake"),
        (lambda: kernel_distance(np.zeros((0, 2)), np.ones((6, 2))), "real"),
        (lambda: inception_score(torch.rand(5, 64), classifier="digits", splits=6), "splits"),
        (lambda: inception_score(torch.rand(5, 63), classifier="digits"), "x"),
        (lambda: frechet_distance_from_samples(np.ones((5, 2)), np.ones((5, 3))), "y"),
    ],
)
def test_bad_input_raises_data_error_naming_the_argument(call, argument):
    with pytest.raises(DataError) as error:
        call()
    assert argument in str(error.value)
