"""Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

Each real example x_i gets a ball of radius r_i = the distance to its k-th nearest other real
example (and each fake y_j a radius s_j among the fakes). Then

- precision = share of fakes inside at least one real ball: fidelity;
- recall = share of reals inside at least one fake ball: diversity;
- density = (1 / k) x mean over fakes of the number of real balls that contain it (about 1 when
  the two distributions agree; robust to real outliers, unlike precision);
- coverage = share of reals whose own ball contains at least one fake.

Ties. The balls here are closed (|x - y| <= r), as in Kynkäänniemi et al.'s definition and
reference code. The `prdc` package (Naeem et al.'s code, version 0.2) compares with a strict `<`,
so a point lying exactly on a radius counts as outside; distances tie with radii on discrete
data (binarised images) and for copies of data points: when k + 1 real points coincide their
radius is 0, and with `<` even an exact copy of them counts as outside every ball (a collapsed
generator sitting on a data point gets precision 0 there). Apart from ties the two agree (it
handles the self-distance as we do: the (k+1)-th smallest distance of a point to its own set,
itself included at 0, is its k-th neighbour distance). ``ties="open"`` reproduces `prdc`.

Example:
    >>> import torch
    >>> from probgen.metrics.prdc import precision_recall_density_coverage
    >>> g = torch.Generator().manual_seed(0)
    >>> real = torch.randn(300, 2, generator=g)
    >>> collapsed = real[:1].repeat(300, 1) + 0.01 * torch.randn(300, 2, generator=g)
    >>> scores = precision_recall_density_coverage(real, collapsed, k=5)
    >>> scores["precision"] > 0.9, scores["recall"] < 0.1
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from probgen.core.data import as_tensor
from probgen.core.errors import DataError

__all__ = ["precision_recall_density_coverage", "nearest_neighbour_radii", "as_feature_matrix"]

# Rows of a distance matrix computed at once: bounds memory at about CHUNK x n x 8 bytes.
_CHUNK = 1024


def as_feature_matrix(
    data: Any, name: str, features: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """Examples (n, ...) as a float64 matrix (n, d), through `features` when given."""
    tensor = as_tensor(data, name)
    if features is not None:
        with torch.no_grad():
            tensor = torch.as_tensor(features(tensor))
        if bool(torch.isnan(tensor).any()):
            raise DataError(f"the features of {name} contain NaN values")
    # Metrics run on the CPU in float64 (the sets are small; the precision matters).
    tensor = tensor.detach().cpu().to(torch.float64)
    if tensor.dim() == 1:
        tensor = tensor[:, None]
    return tensor.reshape(tensor.shape[0], -1)


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # The direct formula, not the matrix-product one: a point's distance to itself is exactly 0
    # and equal points tie exactly, which the tie rule below depends on.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def nearest_neighbour_radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance (n,) from each row of `points` to its k-th nearest other row."""
    radii = []
    for start in range(0, points.shape[0], _CHUNK):
        block = _distances(points[start : start + _CHUNK], points)
        # Column 0 of the sorted row is the point itself (distance 0).
        radii.append(block.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _check_k(k: int, sizes: dict[str, int]) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DataError(f"k must be a positive integer, got {k!r}")
    for name, size in sizes.items():
        if k >= size:
            raise DataError(
                f"k = {k} needs more than k examples in {name}, which has {size}; lower k"
            )
    return k


def precision_recall_density_coverage(
    real: Any,
    fake: Any,
    *,
    k: int = 5,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ties: str = "closed",
) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake` against `real`.

    Args:
        real: real examples (n, ...) (flattened to vectors), or their features.
        fake: generated examples (m, ...).
        k: the neighbour that sets each ball's radius (Naeem et al. recommend 5).
        features: map from a batch of examples to features (e.g.
            `load_feature_classifier("mnist").features`); by default the examples themselves.
        ties: ``"closed"`` balls (|x - y| <= r, the paper's definition) or ``"open"``
            (|x - y| < r, what the `prdc` package computes).

    Returns:
        dict with `precision`, `recall`, `density`, `coverage` (floats) and `k`.

    Raises:
        DataError: empty sets, NaN, different feature dimensions, k not below both set sizes,
            an unknown `ties`.
    """
    if ties not in ("closed", "open"):
        raise DataError(f"ties must be 'closed' or 'open', got {ties!r}")
    real_x = as_feature_matrix(real, "real", features)
    fake_x = as_feature_matrix(fake, "fake", features)
    if real_x.shape[1] != fake_x.shape[1]:
        raise DataError(
            f"real has {real_x.shape[1]} features per example, fake has {fake_x.shape[1]}"
        )
    _check_k(k, {"real": real_x.shape[0], "fake": fake_x.shape[0]})
    inside = torch.le if ties == "closed" else torch.lt
    real_radii = nearest_neighbour_radii(real_x, k)
    fake_radii = nearest_neighbour_radii(fake_x, k)
    # For each fake: how many real balls hold it.  For each real: is it in some fake ball, and
    # does its own ball hold some fake.
    balls_holding_fake = torch.zeros(fake_x.shape[0], dtype=torch.float64)
    in_fake_ball = torch.zeros(real_x.shape[0], dtype=torch.bool)
    ball_holds_fake = torch.zeros(real_x.shape[0], dtype=torch.bool)
    for start in range(0, real_x.shape[0], _CHUNK):
        stop = start + _CHUNK
        block = _distances(real_x[start:stop], fake_x)  # (chunk of reals, fakes)
        in_real_ball = inside(block, real_radii[start:stop, None])
        balls_holding_fake += in_real_ball.sum(0)
        in_fake_ball[start:stop] = inside(block, fake_radii[None, :]).any(1)
        ball_holds_fake[start:stop] = in_real_ball.any(1)
    return {
        "precision": float((balls_holding_fake > 0).double().mean()),
        "recall": float(in_fake_ball.double().mean()),
        "density": float(balls_holding_fake.mean() / k),
        "coverage": float(ball_holds_fake.double().mean()),
        "k": k,
    }
