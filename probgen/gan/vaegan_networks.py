"""Encoders, discriminator features and the two loss terms of `probgen.VAEGAN`.

The decoder and discriminator of a VAE-GAN are the GAN family's own (`probgen.gan.networks`);
this module adds what a VAE-GAN needs besides:

* `ConvEncoder` / `MLPEncoder`: the Gaussian posterior q(z | x) = N(loc, diag(scale^2)). The
  convolutional one mirrors the DCGAN discriminator (strided 4x4 convolutions halving the
  image the same number of times, batch norm after the first, leaky ReLUs), the MLP one has
  ReLU hidden layers;
* `discriminator_layers` / `discriminator_features`: the activations of the discriminator's
  l-th hidden layer (after its leaky ReLU) together with its score, in one pass;
* `gaussian_kl`: KL(N(loc, scale^2) || N(0, I)) in closed form, per example;
* `feature_reconstruction`: ``-log N(f(x) | f(x_tilde), I)`` up to its constant, i.e.
  ``0.5 * ||f(x) - f(x_tilde)||^2`` summed over the features of each example (Larsen et al.
  2016, eq. 9).

Example:
    >>> import torch
    >>> from probgen.gan.vaegan_networks import ConvEncoder, gaussian_kl
    >>> loc, scale = ConvEncoder((1, 28, 28), latent_dim=4, width=8)(torch.rand(3, 1, 28, 28))
    >>> tuple(loc.shape), bool((scale > 0).all())
    ((3, 4), True)
    >>> gaussian_kl(torch.zeros(2, 4), torch.ones(2, 4)).tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from probgen.core.errors import DataError
from probgen.gan.networks import DCGANDiscriminator, MLPDiscriminator, upsampling_steps

__all__ = [
    "ConvEncoder",
    "MLPEncoder",
    "discriminator_layers",
    "discriminator_features",
    "gaussian_kl",
    "feature_reconstruction",
]

# log-variances are kept in this range: exp(20) or exp(-30) already mean a broken fit, and
# clamping keeps one bad minibatch from turning the scale into 0 or inf.
_LOG_VARIANCE_RANGE = (-30.0, 20.0)


def _gaussian_head(hidden: Tensor, head: nn.Linear) -> tuple[Tensor, Tensor]:
    loc, log_variance = head(hidden).chunk(2, dim=-1)
    log_variance = log_variance.clamp(*_LOG_VARIANCE_RANGE)
    return loc, torch.exp(0.5 * log_variance)


class MLPEncoder(nn.Module):
    """A vector (d,) -> (loc, scale) of q(z | x): ReLU hidden layers, a linear Gaussian head."""

    def __init__(self, data_dim: int, latent_dim: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = data_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _gaussian_head(self.net(x.flatten(1)), self.head)


class ConvEncoder(nn.Module):
    """An image (C, H, W) -> (loc, scale) of q(z | x), the DCGAN discriminator's mirror."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 64) -> None:
        super().__init__()
        channels, height, wide = image_shape
        steps = upsampling_steps(height, wide)
        layers: list[nn.Module] = []
        current, out = channels, width
        for index in range(steps):
            layers.append(nn.Conv2d(current, out, 4, stride=2, padding=1, bias=index == 0))
            if index > 0:  # as DCGAN: no normalisation on the input layer
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.2))
            current, out = out, out * 2
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(current * (height >> steps) * (wide >> steps), 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _gaussian_head(self.net(x).flatten(1), self.head)


def discriminator_layers(discriminator: nn.Module) -> int:
    """How many hidden layers (each a linear map or convolution and a leaky ReLU) it has."""
    return len(_hidden_stack(discriminator)) // 2


def _hidden_stack(discriminator: nn.Module) -> nn.Sequential:
    if isinstance(discriminator, DCGANDiscriminator):
        return discriminator.features
    if isinstance(discriminator, MLPDiscriminator):
        return discriminator.net[:-1]  # type: ignore[return-value]
    raise DataError(
        f"discriminator must be a DCGANDiscriminator or MLPDiscriminator, got "
        f"{type(discriminator).__name__}"
    )


def discriminator_features(
    discriminator: nn.Module, x: Tensor, layer: int
) -> tuple[Tensor, Tensor]:
    """The activations of hidden layer `layer` (1 = first), flattened, and the scores of `x`.

    Args:
        discriminator: a `DCGANDiscriminator` or `MLPDiscriminator` with ``pack=1``.
        x: inputs (n, C, H, W) or (n, d).
        layer: which hidden layer's output (after its leaky ReLU) to return, 1-based.

    Returns:
        ``(features (n, k), scores (n,))`` from one pass through the network.
    """
    stack = _hidden_stack(discriminator)
    count = len(stack) // 2
    if not 1 <= layer <= count:
        raise DataError(f"layer must be in 1..{count} for this discriminator, got {layer}")
    features = stack[: 2 * layer](x)
    hidden = stack[2 * layer :](features)
    if isinstance(discriminator, DCGANDiscriminator):
        scores = discriminator.score(hidden.flatten(1)).squeeze(-1)
    else:
        scores = discriminator.net[-1](hidden).squeeze(-1)
    return features.flatten(1), scores


def gaussian_kl(loc: Tensor, scale: Tensor) -> Tensor:
    """KL(N(loc, diag(scale^2)) || N(0, I)) per example: ``0.5 * sum(loc^2 + scale^2 - 1 -
    log scale^2)`` over the last dimension."""
    return 0.5 * (loc.square() + scale.square() - 1.0 - 2.0 * scale.log()).sum(-1)


def feature_reconstruction(real_features: Tensor, reconstructed_features: Tensor) -> Tensor:
    """``-log N(real | reconstructed, I) - k/2 log(2 pi)`` per example: half the squared error
    summed over the k features."""
    return 0.5 * (real_features - reconstructed_features).square().sum(-1)

