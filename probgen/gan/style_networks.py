"""Networks of the style-based generator (StyleGAN, small scale) and its discriminator.

After Karras et al. (2019, 2020):

* the **mapping network** sends a latent ``z`` (normalised to the unit sphere times sqrt(d),
  "pixel norm") through a leaky-ReLU MLP to an intermediate latent ``w``;
* the **synthesis network** starts from a learned constant ``(C, h0, w0)`` and doubles the
  resolution ``n_upsamplings`` times; every convolution is a **modulated convolution**: an
  affine map of that layer's ``w`` gives one scale per input channel, the weights are scaled
  by it and **demodulated** (each output channel's weights divided by their L2 norm), which
  keeps unit-variance inputs at unit variance whatever the style;
* after each convolution, **noise** (one Gaussian map per sample, shared by the channels)
  enters through a learned per-channel scale (zero at the start), then a bias and a leaky ReLU;
* each layer takes its own ``w``, so ``w_per_layer`` of shape ``(n, n_styles, style_dim)``
  controls the image layer by layer: **style mixing** gives the first layers one ``w`` and
  the rest another.

The output layer ("to RGB") is a modulated 1x1 convolution without demodulation, followed
here by ``tanh`` (images in [-1, 1]). Small-scale simplifications: no equalised learning rate
or lazy regularisation; the discriminator is a plain convolutional stack with a minibatch
standard-deviation feature.

Example:
    >>> import torch
    >>> from probgen.gan.style_networks import MappingNetwork, SynthesisNetwork
    >>> mapping = MappingNetwork(8, 16, n_layers=2)
    >>> synthesis = SynthesisNetwork((1, 8, 8), style_dim=16, channels=8, n_upsamplings=1)
    >>> w = mapping(torch.randn(3, 8))
    >>> ws = w[:, None].expand(-1, synthesis.n_styles, -1)
    >>> synthesis.n_styles, synthesis(ws).shape
    (4, torch.Size([3, 1, 8, 8]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.core.errors import DataError

__all__ = [
    "MappingNetwork",
    "ModulatedConv2d",
    "StyleLayer",
    "SynthesisNetwork",
    "StyleDiscriminator",
    "modulated_conv2d",
]

_EPS = 1e-8


def modulated_conv2d(
    x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True, padding: int = 0
) -> Tensor:
    """Convolution with per-sample weights ``weight[o, i] * styles[n, i]`` (demodulated).

    Computed as ``conv(x * styles) * d`` with ``d[n, o] = 1 / ||weight[o] * styles[n]||_2``:
    the same result as scaling the weights of each sample (StyleGAN2's grouped form) with one
    ordinary convolution for the whole batch, which is faster on CPUs.

    Args:
        x: inputs (n, in_channels, H, W).
        weight: (out_channels, in_channels, k, k).
        styles: (n, in_channels), one scale per sample and input channel.
        demodulate: divide each output channel by its effective weights' L2 norm.
        padding: zero padding of the convolution.

    Returns:
        (n, out_channels, H', W').
    """
    out = F.conv2d(x * styles[:, :, None, None], weight, padding=padding)
    if demodulate:
        # ||w[o] * s[n]||^2 = sum_i s[n, i]^2 * sum_{k} w[o, i, k]^2
        squared = styles.square() @ weight.square().sum(dim=(2, 3)).t()
        out = out * (squared + _EPS).rsqrt()[:, :, None, None]
    return out


def demodulated_weights(weight: Tensor, styles: Tensor) -> Tensor:
    """The effective per-sample weights (n, out, in, k, k) of a demodulated convolution."""
    scaled = weight[None] * styles[:, None, :, None, None]
    return scaled * (scaled.square().sum(dim=(2, 3, 4), keepdim=True) + _EPS).rsqrt()


class MappingNetwork(nn.Module):
    """z (n, latent_dim) -> w (n, style_dim): pixel norm, then leaky-ReLU linear layers."""

    def __init__(self, latent_dim: int, style_dim: int, n_layers: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, style_dim), nn.LeakyReLU(0.2)]
            width = style_dim
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        z = z * (z.square().mean(dim=1, keepdim=True) + _EPS).rsqrt()
        return self.net(z)


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled by an affine map of the layer's style."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        *,
        demodulate: bool = True,
    ) -> None:
        super().__init__()
        # Unit-variance weights: demodulation makes the output scale independent of theirs.
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.affine = nn.Linear(style_dim, in_channels)
        nn.init.ones_(self.affine.bias)  # styles start near 1: the plain convolution
        self.demodulate = demodulate
        self.padding = kernel_size // 2
        # Without demodulation (the output layer), the He scale keeps outputs of order one.
        self.gain = 1.0 if demodulate else 1.0 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)
        if not self.demodulate:
            styles = styles * self.gain
        return modulated_conv2d(
            x, self.weight, styles, demodulate=self.demodulate, padding=self.padding
        )


class StyleLayer(nn.Module):
    """Modulated 3x3 convolution, per-channel scaled noise, bias, leaky ReLU (optionally
    after a 2x bilinear upsampling)."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, *, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim)
        self.noise_scale = nn.Parameter(torch.zeros(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None = None) -> Tensor:
        """`noise`: (n, 1, H, W) maps, or None for none (as if the scales were zero)."""
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = self.conv(x, w)
        if noise is not None:
            out = out + self.noise_scale[None, :, None, None] * noise
        out = out + self.bias[None, :, None, None]
        # sqrt(2) keeps the variance of a leaky ReLU's output near its input's.
        return F.leaky_relu(out, 0.2) * math.sqrt(2.0)


class SynthesisNetwork(nn.Module):
    """w per layer (n, n_styles, style_dim) -> images (n, C, H, W) in [-1, 1].

    Args:
        image_shape: (channels, height, width); height and width must divide by
            ``2**n_upsamplings``.
        style_dim: dimension of w.
        channels: feature channels at the base resolution (halved at each upsampling, at
            least 8).
        n_upsamplings: resolution doublings after the constant input.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        style_dim: int,
        channels: int = 64,
        n_upsamplings: int = 2,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        factor = 2**n_upsamplings
        if h % factor or w % factor:
            raise DataError(
                f"n_upsamplings={n_upsamplings}: image height and width ({h}, {w}) must be "
                f"divisible by {factor}"
            )
        self.base_shape = (h // factor, w // factor)
        self.constant = nn.Parameter(torch.randn(channels, *self.base_shape))
        layers = [StyleLayer(channels, channels, style_dim, upsample=False)]
        width = channels
        for _ in range(n_upsamplings):
            narrower = max(width // 2, 8)
            layers.append(StyleLayer(width, narrower, style_dim, upsample=True))
            layers.append(StyleLayer(narrower, narrower, style_dim, upsample=False))
            width = narrower
        self.layers = nn.ModuleList(layers)
        self.to_image = ModulatedConv2d(width, c, 1, style_dim, demodulate=False)
        self.image_bias = nn.Parameter(torch.zeros(c))
        self.n_styles = len(layers) + 1
        self.resolutions = [
            (self.base_shape[0] * 2**up, self.base_shape[1] * 2**up)
            for up in [0] + [u for u in range(1, n_upsamplings + 1) for _ in (0, 1)]
        ]

    def noise(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """One Gaussian noise map (n, 1, H, W) per layer, drawn from `generator`."""
        device, dtype = self.constant.device, self.constant.dtype
        return [
            torch.randn((n, 1, h, w), generator=generator, device=device, dtype=dtype)
            for h, w in self.resolutions
        ]

    def forward(
        self,
        ws: Tensor,
        noise: list[Tensor] | None = None,
        *,
        return_activations: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Images from per-layer styles `ws`; `noise` from `noise()`, or None for no noise.

        With `return_activations`, also each style layer's output (for inspecting which
        layers a style reaches).
        """
        if ws.dim() != 3 or ws.shape[1] != self.n_styles:
            raise DataError(
                f"w_per_layer must have shape (n, {self.n_styles}, style_dim), got "
                f"{tuple(ws.shape)}"
            )
        x = self.constant[None].expand(ws.shape[0], -1, -1, -1)
        activations = []
        for index, layer in enumerate(self.layers):
            x = layer(x, ws[:, index], None if noise is None else noise[index])
            activations.append(x)
        image = torch.tanh(
            self.to_image(x, ws[:, -1]) + self.image_bias[None, :, None, None]
        )
        return (image, activations) if return_activations else image


def _group_size(n: int, largest: int = 4) -> int:
    return max(g for g in range(1, min(largest, n) + 1) if n % g == 0)


class StyleDiscriminator(nn.Module):
    """Images (n, C, H, W) -> scores (n,): convolutions with 2x average pooling, a minibatch
    standard-deviation channel (Karras et al. 2018) and a linear head."""

    def __init__(
        self, image_shape: tuple[int, int, int], channels: int = 64, n_downsamplings: int = 2
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        width = max(channels // 2**n_downsamplings, 8)
        blocks: list[nn.Module] = [nn.Conv2d(c, width, 1), nn.LeakyReLU(0.2)]
        for _ in range(n_downsamplings):
            wider = min(width * 2, channels)
            blocks += [
                nn.Conv2d(width, width, 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(width, wider, 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.AvgPool2d(2),
            ]
            width = wider
        self.features = nn.Sequential(*blocks)
        factor = 2**n_downsamplings
        self.final = nn.Sequential(
            nn.Conv2d(width + 1, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(width * (h // factor) * (w // factor), width),
            nn.LeakyReLU(0.2),
            nn.Linear(width, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        n, c, h, w = features.shape
        group = _group_size(n)
        grouped = features.reshape(group, n // group, c, h, w)
        # Spread of the features within each group: a collapsed generator makes it small.
        spread = (grouped.var(dim=0, unbiased=False) + _EPS).sqrt().mean(dim=(1, 2, 3))
        spread = spread.repeat(group)[:, None, None, None].expand(n, 1, h, w)
        return self.final(torch.cat([features, spread], dim=1)).squeeze(1)
