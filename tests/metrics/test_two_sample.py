"""Two-sample tests (MMD, energy, classifier) and memorisation checks: statistics against
closed forms and scipy, calibration under the null, power under a shift, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch

from probgen.core.errors import DataError
from probgen.metrics import (
    classifier_test,
    data_copying_test,
    energy_test,
    mmd,
    mmd_test,
    nearest_neighbour_distances,
)
from probgen.metrics.memorisation import _mann_whitney_z


def _exact_permutation_p_value(x: np.ndarray, y: np.ndarray, statistic) -> float:
    """p-value over every relabelling of the pooled sample (brute force, tiny samples)."""
    pooled, n = np.vstack([x, y]), len(x)
    observed = statistic(x, y)
    values = []
    for chosen in itertools.combinations(range(len(pooled)), n):
        mask = np.zeros(len(pooled), bool)
        mask[list(chosen)] = True
        values.append(statistic(pooled[mask], pooled[~mask]))
    return float(np.mean(np.asarray(values) >= observed - 1e-12))


def _energy(x: np.ndarray, y: np.ndarray) -> float:
    def mean_distance(a, b):
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).mean()

    return 2 * mean_distance(x, y) - mean_distance(x, x) - mean_distance(y, y)


def test_statistics_equal_mmd_and_scipy_energy_distance():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(0.5, 1.0, size=(9, 3))
    result = mmd_test(x, y, bandwidth=1.3, n_permutations=10)
    assert math.isclose(result.statistic, float(mmd(x, y, bandwidth=1.3)), rel_tol=1e-12)
    assert math.isclose(
        mmd_test(x, y, n_permutations=10).statistic, float(mmd(x, y)), rel_tol=1e-12
    )
    assert math.isclose(
        energy_test(x, y, n_permutations=10).statistic, _energy(x, y), rel_tol=1e-12
    )
    # In one dimension the statistic is the square of scipy's energy distance.
    a, b = rng.normal(size=15), rng.normal(1.0, 2.0, size=11)
    squared = scipy.stats.energy_distance(a, b) ** 2
    assert math.isclose(energy_test(a, b, n_permutations=10).statistic, squared, rel_tol=1e-10)


def test_permutation_p_values_match_exhaustive_enumeration():
    # 5 + 5 points: 252 relabellings; 4,000 random ones estimate that p-value to about 0.01.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 2)), rng.normal(0.8, 1.0, size=(5, 2))
    exact_mmd = _exact_permutation_p_value(x, y, lambda a, b: float(mmd(a, b, bandwidth=1.0)))
    exact_energy = _exact_permutation_p_value(x, y, _energy)
    assert 0.05 < exact_mmd < 0.95 and 0.05 < exact_energy < 0.95  # not a trivial case
    ours_mmd = mmd_test(x, y, bandwidth=1.0, n_permutations=4000, seed=0).p_value
    ours_energy = energy_test(x, y, n_permutations=4000, seed=0).p_value
    assert abs(ours_mmd - exact_mmd) < 0.03
    assert abs(ours_energy - exact_energy) < 0.03


def test_calibrated_under_the_null_and_powerful_under_a_shift():
    generator = torch.Generator().manual_seed(0)
    rejections = {"mmd": 0, "energy": 0}
    p_values = []
    repetitions = 40
    for repetition in range(repetitions):
        x = torch.randn(25, 2, generator=generator)
        y = torch.randn(25, 2, generator=generator)
        mmd_p = mmd_test(x, y, n_permutations=99, seed=repetition).p_value
        energy_p = energy_test(x, y, n_permutations=99, seed=repetition).p_value
        rejections["mmd"] += mmd_p <= 0.05
        rejections["energy"] += energy_p <= 0.05
        p_values.append(mmd_p)
    # Binomial(40, 0.05): P(more than 7 rejections) < 0.002.
    assert rejections["mmd"] <= 7 and rejections["energy"] <= 7
    assert 0.35 < np.mean(p_values) < 0.65
    x = torch.randn(60, 2, generator=generator)
    y = torch.randn(60, 2, generator=generator) + torch.tensor([0.8, 0.0])
    assert mmd_test(x, y, n_permutations=199).p_value <= 0.01
    assert energy_test(x, y, n_permutations=199).p_value <= 0.01
    # The smallest attainable p-value is 1 / (1 + n_permutations).
    assert mmd_test(x, y + 10, n_permutations=99).p_value == pytest.approx(0.01)


def test_classifier_two_sample_test():
    generator = torch.Generator().manual_seed(0)
    accuracies = []
    for repetition in range(8):
        x, y = torch.randn(100, 2, generator=generator), torch.randn(100, 2, generator=generator)
        accuracies.append(classifier_test(x, y, seed=repetition).accuracy)
    assert abs(np.mean(accuracies) - 0.5) < 0.05
    x, y = torch.randn(200, 2, generator=generator), torch.randn(200, 2, generator=generator)
    shifted = classifier_test(x, y + 1.0)
    assert shifted.accuracy > 0.65 and shifted.p_value < 1e-4 and shifted.n_test == 200
    assert classifier_test(x, y + 1.0, classifier="logistic").accuracy > 0.65
    # Unequal sizes are balanced first, so chance stays at 0.5 (not the majority share).
    unequal = classifier_test(x, torch.randn(40, 2, generator=generator))
    assert unequal.n_test == 40
    from sklearn.tree import DecisionTreeClassifier

    tree = classifier_test(x, y + 1.0, classifier=DecisionTreeClassifier(random_state=0))
    assert tree.accuracy > 0.6


def test_mann_whitney_z_equals_scipy_u():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=30), np.round(rng.normal(size=25), 1)  # ties across samples
    u = scipy.stats.mannwhitneyu(a, b).statistic
    expected = (u - 30 * 25 / 2) / math.sqrt(30 * 25 * 56 / 12)
    assert math.isclose(_mann_whitney_z(torch.as_tensor(a), torch.as_tensor(b)), expected)


def test_memorisation_flags_copies_and_passes_fresh_samples():
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(600, 3, generator=generator)
    heldout = torch.randn(300, 3, generator=generator)
    fresh = torch.randn(300, 3, generator=generator)
    copies = train[:300]
    copied = data_copying_test(train, copies, heldout, n_cells=5)
    honest = data_copying_test(train, fresh, heldout, n_cells=5)
    assert copied["copying"] and copied["statistic"] < -5
    assert not honest["copying"] and abs(honest["statistic"]) < 3
    assert copied["cells_used"] == 5 and len(copied["cell_z"]) == 5
    # A spread-out generator (underfitting) is far from the data: C_T well above 0.
    assert data_copying_test(train, 2 * fresh, heldout, n_cells=5)["statistic"] > 3
    near = nearest_neighbour_distances(train, copies + 1e-4, heldout)
    far = nearest_neighbour_distances(train, fresh, heldout)
    assert near["median_ratio"] < 0.01 and near["generated_copy_fraction"] > 0.95
    assert 0.7 < far["median_ratio"] < 1.4
    assert abs(far["generated_copy_fraction"] - far["heldout_copy_fraction"]) < 0.1


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: mmd_test(np.ones((5, 2)), np.ones((5, 3))), "y"),
        (lambda: mmd_test(np.ones((1, 2)), np.ones((5, 2))), "x"),
        (lambda: mmd_test(np.ones((4, 2)), np.ones((5, 2)), n_permutations=0), "n_permutations"),
        (lambda: mmd_test(np.ones((4, 2)), np.ones((5, 2)), bandwidth=-1.0), "bandwidth"),
        (lambda: energy_test(np.zeros((0, 2)), np.ones((5, 2))), "x"),
        (lambda: energy_test(np.ones((4, 2)), [[np.nan, 0.0]]), "y"),
        (lambda: classifier_test(np.ones((8, 2)), np.ones((8, 2)), classifier="svm"), "classifier"),
        (
            lambda: classifier_test(np.ones((8, 2)), np.ones((8, 2)), test_fraction=1.0),
            "test_fraction",
        ),
        (lambda: data_copying_test(np.ones((8, 2)), np.ones((8, 3)), np.ones((8, 2))), "generated"),
        (
            lambda: data_copying_test(np.ones((8, 2)), np.ones((8, 2)), np.ones((8, 2)), n_cells=9),
            "n_cells",
        ),
        (
            lambda: data_copying_test(
                np.random.rand(30, 2), np.random.rand(5, 2), np.random.rand(9, 2)
            ),
            "min_generated",
        ),
        (
            lambda: nearest_neighbour_distances(np.ones((1, 2)), np.ones((3, 2)), np.ones((3, 2))),
            "train",
        ),
        (
            lambda: nearest_neighbour_distances(np.ones((4, 2)), np.ones((3, 2)), np.zeros((0, 2))),
            "heldout",
        ),
    ],
)
def test_bad_input_raises_data_error_naming_the_argument(call, argument):
    with pytest.raises(DataError) as error:
        call()
    assert argument in str(error.value)
