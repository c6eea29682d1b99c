"""The encoder and decoder networks of `VAE` (MLP or convolutional) and its `Independent`.

Example:
    >>> import torch
    >>> from probgen.deep.vae_networks import _mlp
    >>> _mlp([4, 8, 2])(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from probgen.core.errors import DataError


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _image_layout(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) of an image event shape (H, W) or (C, H, W)."""
    if len(input_shape) == 2:
        return 1, input_shape[0], input_shape[1]
    if len(input_shape) == 3:
        return input_shape
    raise DataError(
        f"a conv encoder/decoder needs input_shape (height, width) or (channels, height, "
        f"width); got {input_shape}"
    )


class _Network(nn.Module):
    """An encoder or decoder network: its kind ("mlp" or "conv") and the data's event shape."""

    def __init__(self, kind: str, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.kind = kind
        self.input_shape = input_shape


class _Encoder(_Network):
    """x (n, *input_shape) [+ one-hot label] -> (loc, scale) of q(z | x)."""

    def __init__(
        self,
        kind: str,
        input_shape: tuple[int, ...],
        latent_dim: int,
        hidden_dims: tuple[int, ...],
        n_label_features: int,
        in_scale: float,
    ) -> None:
        super().__init__(kind, input_shape)
        self.in_scale = in_scale
        if kind == "conv":
            channels, height, width = _image_layout(input_shape)
            self.features = nn.Sequential(
                nn.Conv2d(channels, 32, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Flatten(),
            )
            n_features = (
                64 * math.ceil(math.ceil(height / 2) / 2) * math.ceil(math.ceil(width / 2) / 2)
            )
        else:
            self.features = nn.Flatten()
            n_features = math.prod(input_shape)
        self.head = _mlp([n_features + n_label_features, *hidden_dims, 2 * latent_dim])

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.in_scale != 1.0:  # only categorical codes are rescaled; skip a no-op multiply
            x = x * self.in_scale
        if self.kind == "conv":
            x = x.reshape(x.shape[0], *_image_layout(self.input_shape))
        features = self.features(x)
        if labels is not None:
            features = torch.cat([features, labels], -1)
        loc, raw_scale = self.head(features).chunk(2, -1)
        return loc, F.softplus(raw_scale) + 1e-4


class _Decoder(_Network):
    """z (..., latent) [+ one-hot label] -> likelihood parameters (..., *input_shape[, C])."""

    def __init__(
        self,
        kind: str,
        input_shape: tuple[int, ...],
        latent_dim: int,
        hidden_dims: tuple[int, ...],
        n_label_features: int,
        n_categories: int,
    ) -> None:
        super().__init__(kind, input_shape)
        self.n_categories = n_categories
        n_in = latent_dim + n_label_features
        if kind == "conv":
            channels, height, width = _image_layout(input_shape)
            self.grid = (64, math.ceil(height / 4), math.ceil(width / 4))
            self.body = _mlp([n_in, *hidden_dims, math.prod(self.grid)])
            self.deconv = nn.Sequential(
                nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(32, channels * n_categories, 4, stride=2, padding=1),
            )
        else:
            self.body = _mlp([n_in, *hidden_dims, math.prod(input_shape) * n_categories])

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is not None:
            labels = labels.expand(*z.shape[:-1], labels.shape[-1])
            z = torch.cat([z, labels], -1)
        leading = z.shape[:-1]
        hidden = self.body(z.reshape(-1, z.shape[-1]))
        suffix = (self.n_categories,) if self.n_categories > 1 else ()
        if self.kind == "conv":
            channels, height, width = _image_layout(self.input_shape)
            image = self.deconv(hidden.reshape(-1, *self.grid))[..., :height, :width]
            if self.n_categories > 1:
                image = image.reshape(-1, channels, self.n_categories, height, width)
                image = image.movedim(2, -1)
            return image.reshape(*leading, *self.input_shape, *suffix)
        return hidden.reshape(*leading, *self.input_shape, *suffix)


class _Independent(dist.Independent):
    """`pyro.distributions.Independent` whose expansion to its own batch shape is itself.

    A `pyro.plate` broadcasts each sample site's distribution by calling `expand` with the
    plate's batch shape even when the distribution has that shape already; for `Independent`
    that builds a new distribution with new views of its parameters (and autograd nodes that
    pass gradients through unchanged) at every site of every step. Expanding a distribution
    to the batch shape it has is the identity, so this returns it as it is.

    Example:
        >>> normal = _Independent(dist.Normal(torch.zeros(3, 2), 1.0), 1)
        >>> normal.expand([3]) is normal, normal.expand([4, 3]).batch_shape
        (True, torch.Size([4, 3]))
    """

    def expand(self, batch_shape: Any, _instance: Any = None) -> dist.Independent:
        if _instance is None and torch.Size(batch_shape) == self.batch_shape:
            return self
        return super().expand(batch_shape, _instance)
