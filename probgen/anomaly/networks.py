"""Small torch networks of the anomaly detectors: MLP autoencoder and Deep SVDD encoders.

Deep SVDD (Ruff et al., 2018) needs an encoder without bias terms: with a bias (or an
affine batch norm) the network could map every input to the centre and make the one-class
loss zero ("hypersphere collapse"). Both encoders here are bias-free; the convolutional one is
the paper's MNIST LeNet (two 5x5 convolutions of 8 and 4 channels, batch norm without affine
parameters, leaky ReLU, 2x2 max pooling, a linear map to the representation).

Example:
    >>> import torch
    >>> from probgen.anomaly.networks import svdd_encoder
    >>> net = svdd_encoder("conv", (1, 28, 28), hidden_dims=(), rep_dim=32)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 32])
    >>> any(name.endswith("bias") for name, _ in net.named_parameters())
    False
"""

from __future__ import annotations

import math

from torch import nn

__all__ = ["mlp", "svdd_encoder", "svdd_decoder"]


def mlp(
    sizes: list[int], *, bias: bool = True, activation: type[nn.Module] = nn.LeakyReLU
) -> nn.Sequential:
    """Linear layers of `sizes[i] -> sizes[i + 1]` with `activation` between them (not after)."""
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(size_in, size_out, bias=bias))
        if index < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class _LeNetEncoder(nn.Module):
    """Ruff et al.'s bias-free MNIST encoder, for (C, H, W) inputs with H, W divisible by 4."""

    def __init__(self, input_shape: tuple[int, ...], rep_dim: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 5, padding=2, bias=False),
            nn.BatchNorm2d(8, eps=1e-4, affine=False),
            nn.LeakyReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 4, 5, padding=2, bias=False),
            nn.BatchNorm2d(4, eps=1e-4, affine=False),
            nn.LeakyReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(4 * (height // 4) * (width // 4), rep_dim, bias=False)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class _Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def svdd_encoder(
    architecture: str, input_shape: tuple[int, ...], hidden_dims: tuple[int, ...], rep_dim: int
) -> nn.Module:
    """A bias-free encoder from examples of `input_shape` to `rep_dim` features.

    Args:
        architecture: "mlp" (flattened input, leaky ReLU between bias-free linear layers) or
            "conv" (the paper's LeNet; `input_shape` is (C, H, W)).
        input_shape: shape of one example.
        hidden_dims: hidden layer sizes of the MLP (ignored by "conv").
        rep_dim: size of the representation.
    """
    if architecture == "conv":
        return _LeNetEncoder(input_shape, rep_dim)
    n_features = math.prod(input_shape)
    return nn.Sequential(_Flatten(), mlp([n_features, *hidden_dims, rep_dim], bias=False))


def svdd_decoder(
    input_shape: tuple[int, ...], hidden_dims: tuple[int, ...], rep_dim: int
) -> nn.Module:
    """An MLP decoder from the representation back to flattened examples (for pretraining)."""
    n_features = math.prod(input_shape)
    return mlp([rep_dim, *reversed(hidden_dims), n_features])
