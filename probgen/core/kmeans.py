"""k-means++ seeding followed by Lloyd iterations, on plain tensors.

Model families use it to initialise their components (HMM Gaussian and Poisson emissions,
mixture models); it lives in `core` so that no family imports another for it.

Example:
    >>> import torch
    >>> from probgen.core.kmeans import kmeans
    >>> values = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    >>> centres, labels = kmeans(values, 2, torch.Generator().manual_seed(0))
    >>> sorted(round(float(c), 2) for c in centres[:, 0])
    [0.05, 5.05]
"""

from __future__ import annotations

import torch

from probgen.core.errors import DataError

# Larger data is clustered on a random subset of this many rows (plenty for starting values).
SUBSET_SIZE = 20000


def kmeans(
    values: torch.Tensor, n_clusters: int, generator: torch.Generator, n_iter: int = 25
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding followed by Lloyd iterations.

    Args:
        values: (N, D) observations without missing entries.
        n_clusters: number of centres.
        generator: randomness for the seeding.
        n_iter: Lloyd iterations.

    Returns:
        `(centres, labels)`: (n_clusters, D) and (N,) long.

    Example:
        >>> x = torch.cat([torch.zeros(10, 1), torch.ones(10, 1) * 5])
        >>> centres, _ = kmeans(x, 2, torch.Generator().manual_seed(0))
        >>> sorted(centres.squeeze(1).tolist())
        [0.0, 5.0]
    """
    n_values = values.shape[0]
    if n_values > SUBSET_SIZE:
        keep = torch.randperm(n_values, generator=generator, device=generator.device)
        keep = keep[:SUBSET_SIZE]
        values = values[keep.to(values.device)]
        n_values = values.shape[0]
    first = int(torch.randint(n_values, (1,), generator=generator, device=generator.device))
    centres = [values[first]]
    closest = ((values - values[first]) ** 2).sum(-1)
    for _ in range(1, n_clusters):
        total = closest.sum()
        if not bool(torch.isfinite(total)):
            # Squared distances overflow (values near the dtype's limit, or infinite).
            raise DataError("data values are too large (or infinite) to cluster: rescale them")
        if total <= 0:
            pick = int(torch.randint(n_values, (1,), generator=generator, device=generator.device))
        else:
            weights = (closest / total).to(generator.device, torch.float64)
            pick = int(torch.multinomial(weights, 1, generator=generator))
        centres.append(values[pick])
        closest = torch.minimum(closest, ((values - values[pick]) ** 2).sum(-1))
    centre_tensor = torch.stack(centres)
    labels = torch.zeros(n_values, dtype=torch.long, device=values.device)
    for _ in range(n_iter):
        labels = torch.cdist(values, centre_tensor).argmin(-1)
        counts = torch.bincount(labels, minlength=n_clusters).to(values.dtype)
        sums = torch.zeros_like(centre_tensor).index_add_(0, labels, values)
        updated = torch.where(
            counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centre_tensor
        )
        if torch.allclose(updated, centre_tensor):
            break
        centre_tensor = updated
    return centre_tensor, labels
