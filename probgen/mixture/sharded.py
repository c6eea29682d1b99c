"""Sharded EM for Gaussian mixtures: each rank holds its rows, every rank the same parameters.

Under `torch.distributed` (`probgen.core.distributed`), `GaussianMixture.fit` takes this
rank's rows and runs the same EM as one process on all the rows:

- `sharded_features`: the EM features of the rank's rows, centred on the mean of all rows;
- `sharded_start`: the starting responsibilities of the rank's rows, equal to the rows of the
  single-process start on the concatenated data (ranks in order) with the same generator. The
  k-means start runs, on every rank, on the same rows a single process would cluster (all
  rows, or the random subset of `KMEANS_SUBSET` rows it draws beyond that), assembled by one
  sum over the ranks; the random start draws every rank's rows in order from the same
  generator and keeps its own, so the generators stay in step for the next restart;
- the E-step's log-likelihood and the M-step's sums are reduced in
  `probgen.mixture.inference.em_iteration(..., sharded=True)`.

Example:
    >>> import torch
    >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.1]], dtype=torch.float64)
    >>> start = sharded_start(x, 2, "kmeans", torch.Generator().manual_seed(0), 0, 4)
    >>> start.sum(0).tolist()  # one-hot k-means labels: two points per cluster
    [2.0, 2.0]
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.core.distributed import all_reduce_sum
from probgen.core.kmeans import SUBSET_SIZE as KMEANS_SUBSET
from probgen.core.kmeans import kmeans
from probgen.mixture.inference import EMFeatures, _augmented

# Rows drawn per block by the sharded random start (blocks of draws equal one draw on CPU).
_RANDOM_BLOCK = 65536


def sharded_features(x: Tensor, covariance: str) -> EMFeatures:
    """`em_features` of this rank's rows `x`, centred on the mean of every rank's rows."""
    totals = torch.cat([x.sum(0), x.new_tensor([x.shape[0]])])
    all_reduce_sum(totals)
    shift = totals[:-1] / totals[-1]
    return EMFeatures(
        covariance, x, shift, _augmented(x - shift, covariance), _augmented(x, covariance)
    )


def _kmeans_labels(
    x: Tensor, n_components: int, generator: torch.Generator, offset: int, total: int
) -> Tensor:
    """This rank's rows' k-means labels, as a single process would give them."""
    n_local, n_features = x.shape
    if total > KMEANS_SUBSET:
        # The draw `kmeans` makes for a single process, from the same generator.
        keep = torch.randperm(total, generator=generator, device=generator.device)
        keep = keep[:KMEANS_SUBSET].to(x.device)
    else:
        keep = torch.arange(total, device=x.device)
    mine = (keep >= offset) & (keep < offset + n_local)
    values = x.new_zeros(keep.shape[0], n_features)
    values[mine] = x[keep[mine] - offset]
    all_reduce_sum(values)  # every rank contributes its rows, zeros elsewhere
    centres, labels = kmeans(values, n_components, generator)
    if total > KMEANS_SUBSET:
        return torch.cdist(x, centres).argmin(-1)
    return labels[offset : offset + n_local]


def _random_responsibilities(
    x: Tensor, n_components: int, generator: torch.Generator, offset: int, total: int
) -> Tensor:
    """This rank's rows of the random start, drawing all rows so the generator stays in step."""
    dtype, device = x.dtype, x.device
    if generator.device.type != "cpu":
        # Blocks of draws equal one draw only on CPU: draw all rows at once elsewhere.
        uniform = torch.rand(total, n_components, dtype=dtype, generator=generator, device=device)
        uniform = uniform[offset : offset + x.shape[0]]
    else:
        blocks = []
        for start in range(0, total, _RANDOM_BLOCK):
            stop = min(start + _RANDOM_BLOCK, total)
            block = torch.rand(stop - start, n_components, dtype=dtype, generator=generator)
            low, high = max(start, offset), min(stop, offset + x.shape[0])
            if low < high:
                blocks.append(block[low - start : high - start])
        empty = torch.empty(0, n_components, dtype=dtype)
        uniform = (torch.cat(blocks) if blocks else empty).to(device)
    return uniform / uniform.sum(1, keepdim=True)


def sharded_start(
    x: Tensor,
    n_components: int,
    init: str,
    generator: torch.Generator,
    offset: int,
    total: int,
) -> Tensor:
    """Starting responsibilities (n_local, K) of this rank's rows `x`.

    Args:
        x: this rank's rows (n_local, D).
        n_components: K.
        init: "kmeans" (one-hot k-means labels) or "random" (uniform, normalised rows).
        generator: the fit's generator, in the same state on every rank.
        offset: the index of this rank's first row among all rows (`shard_layout`).
        total: the number of rows of all ranks.
    """
    if init == "kmeans":
        labels = _kmeans_labels(x, n_components, generator, offset, total)
        return torch.nn.functional.one_hot(labels, n_components).to(x.dtype)
    return _random_responsibilities(x, n_components, generator, offset, total)
