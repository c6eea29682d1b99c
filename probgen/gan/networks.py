"""Generator and discriminator networks of `probgen.GAN`: MLPs for vectors, DCGAN for images.

* `MLPGenerator` / `MLPDiscriminator`: vectors ``(d,)``; the discriminator takes ``pack``
  samples at once (PacGAN), i.e. an input of ``pack * d`` features.
* `DCGANGenerator` / `DCGANDiscriminator` (Radford et al. 2016): images ``(C, H, W)``. The
  generator projects z to a ``(ch, H / 2^k, W / 2^k)`` map and doubles it ``k`` times with
  strided transposed convolutions (batch norm, ReLU), ending in a sigmoid (images in [0, 1]);
  ``k`` is the number of halvings that keep both sides whole and at least 3, so 8x8 digits
  start at 4x4 (k = 1), 28x28 MNIST at 7x7 (k = 2), 32x32 and 64x64 at 4x4 (k = 3, 4). The
  discriminator mirrors it with strided convolutions and leaky ReLUs and no normalisation
  (batch norm would couple the samples of a batch, which WGAN-GP's penalty forbids) and sees
  ``pack * C`` channels.

Both discriminators take ``spectral_norm=True`` (Miyato et al. 2018): each weight matrix (a
convolution's reshaped to ``(out, in * k * k)``) is divided by its largest singular value,
estimated by one power iteration per training forward pass, which bounds the network's
Lipschitz constant and keeps the discriminator from sharpening faster than the generator
can follow.

Class-conditional variants (Mirza & Osindero 2014) append the one-hot label: to z in the
generator, and to each sample before packing in the discriminator (as ``n_classes`` extra
features, or as ``n_classes`` constant channels of an image).

Example:
    >>> import torch
    >>> from probgen.gan.networks import DCGANDiscriminator, DCGANGenerator
    >>> g = DCGANGenerator(16, (1, 28, 28), width=32)
    >>> x = g(torch.randn(5, 16))
    >>> tuple(x.shape), bool((x >= 0).all() and (x <= 1).all())
    ((5, 1, 28, 28), True)
    >>> DCGANDiscriminator((1, 28, 28), width=32, pack=5)(x.reshape(1, 5, 28, 28)).shape
    torch.Size([1])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.core.errors import DataError

__all__ = [
    "MLPGenerator",
    "MLPDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "label_features",
    "upsampling_steps",
]


def label_features(labels: Tensor | None, n_classes: int | None, like: Tensor) -> Tensor | None:
    """One-hot codes ``(n, n_classes)`` of integer labels, in ``like``'s dtype and device."""
    if n_classes is None or labels is None:
        return None
    return F.one_hot(labels.long(), n_classes).to(device=like.device, dtype=like.dtype)


def _normalised(layer: nn.Module, spectral_norm: bool) -> nn.Module:
    """`layer`, spectrally normalised when asked (torch's parametrisation of its weight)."""
    return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer


def upsampling_steps(height: int, width: int) -> int:
    """How many times the DCGAN generator doubles its first map to reach ``(height, width)``.

    The largest ``k <= 4`` such that both sides divide by ``2^k`` leaving at least 3.
    """
    k = 0
    while k < 4 and all(side % 2 ** (k + 1) == 0 and side // 2 ** (k + 1) >= 3
                        for side in (height, width)):
        k += 1
    if k == 0:
        raise DataError(
            f"data_shape {height}x{width}: the DCGAN architecture needs image sides that are "
            "even and at least 6 (e.g. 8, 28, 32, 64)"
        )
    return k


class MLPGenerator(nn.Module):
    """z (and a label) -> a vector: ReLU hidden layers, linear output."""

    def __init__(
        self,
        latent_dim: int,
        data_dim: int,
        hidden_dims: tuple[int, ...],
        n_classes: int | None = None,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        layers: list[nn.Module] = []
        width = latent_dim + (n_classes or 0)
        for hidden in hidden_dims:
            layers.append(nn.Linear(width, hidden))
            if batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU())
            width = hidden
        layers.append(nn.Linear(width, data_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        codes = label_features(labels, self.n_classes, z)
        return self.net(z if codes is None else torch.cat([z, codes], -1))


class MLPDiscriminator(nn.Module):
    """``pack`` vectors (and their labels) -> one score: leaky-ReLU hidden layers."""

    def __init__(
        self,
        data_dim: int,
        hidden_dims: tuple[int, ...],
        pack: int = 1,
        n_classes: int | None = None,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.pack = pack
        layers: list[nn.Module] = []
        width = pack * (data_dim + (n_classes or 0))
        for hidden in hidden_dims:
            layers += [_normalised(nn.Linear(width, hidden), spectral_norm), nn.LeakyReLU(0.2)]
            width = hidden
        layers.append(_normalised(nn.Linear(width, 1), spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, packed: Tensor) -> Tensor:
        """Scores ``(n // pack,)`` of packed inputs ``(n // pack, pack * (d [+ n_classes]))``."""
        return self.net(packed).squeeze(-1)

    def condition(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """Samples with their one-hot labels appended (before packing)."""
        codes = label_features(labels, self.n_classes, x)
        return x if codes is None else torch.cat([x, codes], -1)


class DCGANGenerator(nn.Module):
    """z (and a label) -> an image ``(C, H, W)`` in [0, 1]."""

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        width: int = 64,
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        channels, height, wide = image_shape
        self.n_classes = n_classes
        self.steps = upsampling_steps(height, wide)
        self.start = (height >> self.steps, wide >> self.steps)
        # Channels halve at each doubling, ending at `width`.
        self.first = width * 2**self.steps
        self.project = nn.Sequential(
            nn.Linear(latent_dim + (n_classes or 0), self.first * math.prod(self.start)),
            nn.BatchNorm1d(self.first * math.prod(self.start)),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        current = self.first
        for _ in range(self.steps):
            layers += [
                nn.ConvTranspose2d(current, current // 2, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(current // 2),
                nn.ReLU(),
            ]
            current //= 2
        layers += [nn.Conv2d(current, channels, 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        codes = label_features(labels, self.n_classes, z)
        h = self.project(z if codes is None else torch.cat([z, codes], -1))
        return self.net(h.reshape(-1, self.first, *self.start))


class DCGANDiscriminator(nn.Module):
    """``pack`` images (and their labels) -> one score."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int = 64,
        pack: int = 1,
        n_classes: int | None = None,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        channels, height, wide = image_shape
        self.n_classes = n_classes
        self.pack = pack
        steps = upsampling_steps(height, wide)
        layers: list[nn.Module] = []
        current, out = pack * (channels + (n_classes or 0)), width
        for _ in range(steps):
            conv = nn.Conv2d(current, out, 4, stride=2, padding=1)
            layers += [_normalised(conv, spectral_norm), nn.LeakyReLU(0.2)]
            current, out = out, out * 2
        self.features = nn.Sequential(*layers)
        self.score = _normalised(
            nn.Linear(current * (height >> steps) * (wide >> steps), 1), spectral_norm
        )

    def forward(self, packed: Tensor) -> Tensor:
        """Scores ``(n // pack,)`` of packed images ``(n // pack, pack * C', H, W)``."""
        return self.score(self.features(packed).flatten(1)).squeeze(-1)

    def condition(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """Images with their one-hot labels appended as constant channels (before packing)."""
        codes = label_features(labels, self.n_classes, x)
        if codes is None:
            return x
        maps = codes[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return torch.cat([x, maps], 1)
