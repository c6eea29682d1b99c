"""Does a generator copy its training data? Generated samples vs held-out data, measured by
their distance to the nearest training example.

- `data_copying_test`: the test of Meehan, Chaudhuri and Dasgupta (2020). The space is cut into
  cells by k-means on the training set. In each cell with enough generated samples, a
  Mann-Whitney U test compares the nearest-training-example distances of the generated samples
  with those of held-out data, as a z-score (negative: generated samples sit closer to the
  training data than fresh data does). C_T is the average z over those cells, weighted by the
  held-out share of each cell. C_T well below 0 (the paper uses -3) flags data copying; well
  above 0 means the samples are farther from the data than fresh data (underfitting).
- `nearest_neighbour_distances`: medians of those distances for generated and held-out data,
  their ratio (about 1 for a generator that samples fresh points), and the share of samples
  whose nearest training example is much closer than the second nearest (d1 / d2 below
  `ratio_threshold`; a near-copy of one training example), for both sets.

Example:
    >>> import torch
    >>> from probgen.metrics.memorisation import data_copying_test
    >>> g = torch.Generator().manual_seed(0)
    >>> train, heldout = torch.randn(500, 2, generator=g), torch.randn(300, 2, generator=g)
    >>> copies = train[:300] + 1e-3 * torch.randn(300, 2, generator=g)
    >>> data_copying_test(train, copies, heldout, n_cells=5)["statistic"] < -3
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from probgen.core.errors import DataError
from probgen.core.kmeans import kmeans
from probgen.metrics.prdc import as_feature_matrix

__all__ = ["data_copying_test", "nearest_neighbour_distances"]

_CHUNK = 1024


def _three_sets(
    train: Any,
    generated: Any,
    heldout: Any,
    features: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    sets = {
        name: as_feature_matrix(values, name, features)
        for name, values in (("train", train), ("generated", generated), ("heldout", heldout))
    }
    width = sets["train"].shape[1]
    for name in ("generated", "heldout"):
        if sets[name].shape[1] != width:
            raise DataError(
                f"{name} has {sets[name].shape[1]} features per example, train has {width}"
            )
    return sets["train"], sets["generated"], sets["heldout"]


def _nearest_train_distances(points: torch.Tensor, train: torch.Tensor, k: int) -> torch.Tensor:
    """Distances (n, k) from each point to its k nearest training examples, ascending."""
    rows = []
    for start in range(0, points.shape[0], _CHUNK):
        block = torch.cdist(
            points[start : start + _CHUNK], train, compute_mode="donot_use_mm_for_euclid_dist"
        )
        rows.append(block.topk(k, dim=1, largest=False).values)
    return torch.cat(rows)


def _mann_whitney_z(generated: torch.Tensor, heldout: torch.Tensor) -> float:
    """z-score of U = #{(g, h): g > h} + #{g = h} / 2 under the null (no tie correction)."""
    m, n = generated.shape[0], heldout.shape[0]
    u = 0.0
    for start in range(0, m, _CHUNK):
        block = generated[start : start + _CHUNK, None]
        u += float((block > heldout[None]).sum()) + 0.5 * float((block == heldout[None]).sum())
    return (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)


def data_copying_test(
    train: Any,
    generated: Any,
    heldout: Any,
    *,
    n_cells: int = 10,
    min_generated: int = 20,
    seed: int = 0,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The data-copying statistic C_T of Meehan et al. (2020).

    Args:
        train: the model's training examples (n_train, ...).
        generated: samples from the model (m, ...).
        heldout: examples from the data distribution the model never saw (n, ...).
        n_cells: k-means cells on the training set.
        min_generated: a cell counts when it holds at least this many generated samples (the
            paper's tau = 20 / m) and at least one held-out example.
        seed: seed of the k-means initialisation.
        features: optional map from examples to features (distances are measured there).

    Returns:
        dict: `statistic` (C_T), `copying` (C_T < -3), `cell_z` (z-score per cell, None where a
        cell was skipped), `cells_used`, `n_cells`.

    Raises:
        DataError: empty sets, NaN, different feature dimensions, too few training examples for
            `n_cells`, or no cell with enough generated samples.
    """
    train_x, generated_x, heldout_x = _three_sets(train, generated, heldout, features)
    if isinstance(n_cells, bool) or not isinstance(n_cells, int) or n_cells < 1:
        raise DataError(f"n_cells must be a positive integer, got {n_cells!r}")
    if n_cells > train_x.shape[0]:
        raise DataError(f"n_cells = {n_cells} is more than the {train_x.shape[0]} train examples")
    if min_generated < 1:
        raise DataError(f"min_generated must be at least 1, got {min_generated}")
    centres, _ = kmeans(train_x, n_cells, torch.Generator().manual_seed(int(seed)))
    generated_cell = torch.cdist(generated_x, centres).argmin(1)
    heldout_cell = torch.cdist(heldout_x, centres).argmin(1)
    generated_distance = _nearest_train_distances(generated_x, train_x, 1)[:, 0]
    heldout_distance = _nearest_train_distances(heldout_x, train_x, 1)[:, 0]
    cell_z: list[float | None] = []
    weighted, weight = 0.0, 0.0
    for cell in range(n_cells):
        in_generated = generated_cell == cell
        in_heldout = heldout_cell == cell
        if int(in_generated.sum()) < min_generated or not bool(in_heldout.any()):
            cell_z.append(None)
            continue
        z = _mann_whitney_z(generated_distance[in_generated], heldout_distance[in_heldout])
        share = float(in_heldout.double().mean())
        cell_z.append(z)
        weighted += share * z
        weight += share
    if weight == 0:
        raise DataError(
            f"no cell holds {min_generated} generated samples and a held-out example; "
            "pass more samples, fewer n_cells or a smaller min_generated"
        )
    statistic = weighted / weight
    return {
        "statistic": statistic,
        "copying": statistic < -3,
        "cell_z": cell_z,
        "cells_used": sum(z is not None for z in cell_z),
        "n_cells": n_cells,
    }


def nearest_neighbour_distances(
    train: Any,
    generated: Any,
    heldout: Any,
    *,
    ratio_threshold: float = 1 / 3,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Nearest-training-example distances of generated samples against held-out data.

    Args:
        train: the model's training examples (at least 2).
        generated: samples from the model.
        heldout: examples the model never saw.
        ratio_threshold: a point is a near-copy when d1 / d2 < this (d1, d2: distances to its
            nearest and second-nearest training examples).
        features: optional map from examples to features.

    Returns:
        dict: `generated_median`, `heldout_median` (median d1), `median_ratio` (generated /
        held-out; about 1 for fresh samples, near 0 for copies), `generated_copy_fraction`,
        `heldout_copy_fraction` (share of near-copies; the held-out figure is the baseline).
    """
    train_x, generated_x, heldout_x = _three_sets(train, generated, heldout, features)
    if train_x.shape[0] < 2:
        raise DataError("train needs at least 2 examples (a nearest and a second nearest)")
    if not 0 < ratio_threshold <= 1:
        raise DataError(f"ratio_threshold must be in (0, 1], got {ratio_threshold}")
    report: dict[str, float] = {}
    for name, points in (("generated", generated_x), ("heldout", heldout_x)):
        nearest = _nearest_train_distances(points, train_x, 2)
        report[f"{name}_median"] = float(nearest[:, 0].median())
        # 0 / 0 (a point on two equal training examples) is a copy too.
        copy = nearest[:, 0] < ratio_threshold * nearest[:, 1]
        copy |= nearest[:, 0] == 0
        report[f"{name}_copy_fraction"] = float(copy.double().mean())
    held = report["heldout_median"]
    report["median_ratio"] = report["generated_median"] / held if held > 0 else math.nan
    return report
