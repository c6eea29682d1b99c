"""Time-conditioned noise-prediction networks: an MLP for vectors, a small U-Net for images.

Both map (x_t, t) to the predicted noise, and with `learned_variance` also to the variance
interpolation v in [-1, 1] of Nichol & Dhariwal (2021); the time t is a real number (0-based
step index, fractional on the probability-flow ODE) fed through a sinusoidal embedding.

Example:
    >>> import torch
    >>> from probgen.diffusion.networks import UNet, TimeMLP
    >>> net = UNet(1, hidden_dims=(8, 16))
    >>> net(torch.zeros(2, 1, 8, 8), torch.tensor([0.0, 5.0]))[0].shape
    torch.Size([2, 1, 8, 8])
    >>> mlp = TimeMLP(2, hidden_dims=(16,), learned_variance=True)
    >>> mlp(torch.zeros(3, 2), torch.ones(3))[1].shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TimeMLP", "UNet", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (n, dim) of real times t (n,) (Vaswani et al.; Ho et al.)."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    ).to(t.dtype)
    angles = t[:, None].to(frequencies.dtype) * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], -1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def _split_output(
    out: torch.Tensor, learned_variance: bool, dim: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not learned_variance:
        return out, None
    eps, v = out.split(out.shape[dim] // 2, dim=dim)
    return eps, torch.tanh(v)


class TimeMLP(nn.Module):
    """MLP noise predictor for vectors: [x_t, embed(t)] -> SiLU layers -> eps (and v).

    Args:
        n_features: dimension of x.
        hidden_dims: hidden layer sizes.
        learned_variance: also output the variance interpolation v.
        embedding_dim: size of the sinusoidal time embedding.
    """

    def __init__(
        self,
        n_features: int,
        hidden_dims: tuple[int, ...] = (128, 128, 128),
        learned_variance: bool = False,
        embedding_dim: int = 32,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.learned_variance = learned_variance
        self.time = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dims[0]), nn.SiLU(), nn.Linear(hidden_dims[0],
                                                                           hidden_dims[0])
        )
        self.inp = nn.Linear(n_features, hidden_dims[0])
        layers: list[nn.Module] = []
        width = hidden_dims[0]
        for size in hidden_dims[1:]:
            layers += [nn.SiLU(), nn.Linear(width, size)]
            width = size
        layers += [nn.SiLU(), nn.Linear(width, n_features * (2 if learned_variance else 1))]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.inp(x) + self.time(timestep_embedding(t, self.embedding_dim).to(x.dtype))
        return _split_output(self.body(h), self.learned_variance, -1)


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, embedding: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(embedding, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """A small U-Net noise predictor for images (n, C, H, W).

    One residual block (GroupNorm, SiLU, time embedding added) per resolution on the way down
    and up, a strided convolution to halve the resolution between levels, nearest upsampling
    back to each skip connection's size (so odd sizes such as 7x7 work), no attention.

    Args:
        channels: image channels C.
        hidden_dims: feature channels at each resolution, e.g. (32, 64) (two levels).
        learned_variance: also output the variance interpolation v.
    """

    def __init__(
        self,
        channels: int,
        hidden_dims: tuple[int, ...] = (32, 64),
        learned_variance: bool = False,
    ) -> None:
        super().__init__()
        self.learned_variance = learned_variance
        base = hidden_dims[0]
        self.embedding_dim = base
        embedding = 4 * base
        self.time = nn.Sequential(
            nn.Linear(base, embedding), nn.SiLU(), nn.Linear(embedding, embedding)
        )
        self.inp = nn.Conv2d(channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        width = base
        for level, size in enumerate(hidden_dims):
            self.down.append(_ResBlock(width, size, embedding))
            width = size
            if level < len(hidden_dims) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.middle = _ResBlock(width, width, embedding)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(hidden_dims))):
            size = hidden_dims[level]
            if level < len(hidden_dims) - 1:
                self.upsample.append(nn.Conv2d(width, width, 3, padding=1))
            self.up.append(_ResBlock(width + size, size, embedding))
            width = size
        self.out_norm = nn.GroupNorm(_groups(width), width)
        self.out = nn.Conv2d(width, channels * (2 if learned_variance else 1), 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = self.time(timestep_embedding(t, self.embedding_dim).to(x.dtype))
        h = self.inp(x)
        skips = []
        for level, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = self.middle(h, emb)
        for index, block in enumerate(self.up):
            skip = skips.pop()
            if index > 0:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
                h = self.upsample[index - 1](h)
            h = block(torch.cat([h, skip], 1), emb)
        out = self.out(F.silu(self.out_norm(h)))
        return _split_output(out, self.learned_variance, 1)
