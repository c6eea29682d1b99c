"""Networks of the image-to-image GAN (CycleGAN): a ResNet generator and a PatchGAN critic.

Small versions of Zhu et al. (2017)'s networks (after Johnson et al. 2016 and Isola et al.
2017): the generator is a 7x7 stem, ``n_downsampling`` stride-2 convolutions, residual blocks
at the reduced resolution, as many transposed convolutions back up and a ``tanh`` output; the
discriminator is a stack of stride-2 4x4 convolutions ending in a 3x3 convolution to one
channel: one real/fake score per overlapping patch rather than one per image. Instance
normalisation throughout, as in the paper (the statistics of one image, so a batch of one
trains as well as a large batch).

Example:
    >>> import torch
    >>> from probgen.gan.translation_networks import PatchDiscriminator, ResnetGenerator
    >>> g = ResnetGenerator(1, 1, channels=8, n_blocks=1, n_downsampling=1)
    >>> d = PatchDiscriminator(1, channels=8, n_layers=2)
    >>> x = torch.rand(2, 1, 28, 28) * 2 - 1
    >>> g(x).shape, d(x).shape
    (torch.Size([2, 1, 28, 28]), torch.Size([2, 1, 7, 7]))
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ResnetGenerator", "PatchDiscriminator", "ResidualBlock", "count_parameters"]


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


class ResidualBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), reflection padded: the generator's body."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Image (n, in_channels, H, W) in [-1, 1] -> image (n, out_channels, H, W) in [-1, 1].

    Args:
        in_channels: channels of the input domain.
        out_channels: channels of the output domain.
        channels: width of the first layer (doubled at each downsampling).
        n_blocks: residual blocks at the lowest resolution.
        n_downsampling: stride-2 stages; H and W must be divisible by ``2**n_downsampling``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        channels: int = 32,
        n_blocks: int = 3,
        n_downsampling: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, channels, 7),
            _norm(channels),
            nn.ReLU(inplace=True),
        ]
        width = channels
        for _ in range(n_downsampling):
            layers += [
                nn.Conv2d(width, width * 2, 3, stride=2, padding=1),
                _norm(width * 2),
                nn.ReLU(inplace=True),
            ]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(n_blocks)]
        for _ in range(n_downsampling):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                _norm(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN critic: image (n, C, H, W) -> scores (n, 1, H / 2**n_layers, W / 2**n_layers).

    Args:
        in_channels: image channels.
        channels: width of the first layer (doubled at each further layer, at most 8x).
        n_layers: stride-2 4x4 convolutions (each halves the resolution).
    """

    def __init__(self, in_channels: int, *, channels: int = 32, n_layers: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = channels
        for index in range(1, n_layers):
            wider = channels * min(2**index, 8)
            layers += [
                nn.Conv2d(width, wider, 4, stride=2, padding=1),
                _norm(wider),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width = wider
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (for reports)."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))
