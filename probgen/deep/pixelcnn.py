"""Gated PixelCNN (van den Oord et al., 2016) for binary and small grey-level images.

The image is modelled pixel by pixel in raster order (and channel by channel inside a pixel):
p(x) = prod_i p(x_i | x_<i), each conditional a categorical over the grey levels. Causality
comes from masked convolutions: a vertical stack sees the rows above (its features are shifted
down one row before they reach the horizontal stack) and a horizontal stack sees the pixels to
the left in the current row, which together cover every earlier pixel with no blind spot. The
centre tap of the horizontal convolutions is masked by channel group: type A in the first
layer (channel c sees channels < c of its own pixel), type B afterwards (groups <= c).

Example:
    >>> import torch
    >>> from probgen.deep.pixelcnn import PixelCNN
    >>> model = PixelCNN((4, 4), n_filters=8, n_layers=2).init_for_evaluation()
    >>> model.log_prob(torch.zeros(3, 4, 4)).shape
    torch.Size([3])
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import as_tensor, check_positive_int
from probgen.core.errors import DataError
from probgen.fitting.settings import RenamedSettings, renamed_arguments

_MAX_SUPPORT = 2**16


def channel_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, mask_type: str) -> torch.Tensor:
    """Centre-tap connectivity between channel groups: 'A' strict (<), 'B' inclusive (<=)."""
    if mask_type == "A":
        return (out_groups[:, None] > in_groups[None, :]).float()
    return (out_groups[:, None] >= in_groups[None, :]).float()


def hidden_groups(n_features: int, n_channels: int) -> torch.Tensor:
    """Channel group of each of `n_features` hidden features (contiguous equal blocks)."""
    return torch.arange(n_features) * n_channels // n_features


class GatedLayer(nn.Module):
    """One gated PixelCNN layer: vertical and horizontal stacks with a down-shifted link.

    Args:
        in_channels: channels of the stacks' input (image channels for the first layer).
        n_filters: hidden features F (the gate produces 2F pre-activations).
        n_channels: image channels C (the channel groups).
        kernel_size: odd spatial size k.
        first: first layer (type A centre mask, no residual connection).
    """

    def __init__(
        self, in_channels: int, n_filters: int, n_channels: int, kernel_size: int, first: bool
    ):
        super().__init__()
        self.n_filters = n_filters
        self.half = kernel_size // 2
        self.first = first
        self.vertical = nn.Conv2d(in_channels, 2 * n_filters, (self.half + 1, kernel_size))
        self.horizontal = nn.Conv2d(in_channels, 2 * n_filters, (1, self.half + 1))
        self.link = nn.Conv2d(2 * n_filters, 2 * n_filters, 1)
        gate_groups = hidden_groups(n_filters, n_channels).repeat(2)
        in_groups = torch.arange(in_channels) if first else hidden_groups(n_filters, n_channels)
        horizontal_mask = torch.ones_like(self.horizontal.weight)
        horizontal_mask[:, :, 0, -1] = channel_mask(gate_groups, in_groups, "A" if first else "B")
        self.register_buffer("horizontal_mask", horizontal_mask)
        if not first:
            self.residual = nn.Conv2d(n_filters, n_filters, 1)
            groups = hidden_groups(n_filters, n_channels)
            self.register_buffer(
                "residual_mask", channel_mask(groups, groups, "B")[:, :, None, None]
            )

    def forward(
        self, vertical: torch.Tensor, horizontal: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.half
        # Vertical output row i sees input rows i-half..i; it reaches the horizontal stack only
        # after a one-row down shift, so there it sees rows strictly above.
        vertical_pre = self.vertical(F.pad(vertical, (half, half, half, 0)))
        shifted = F.pad(vertical_pre, (0, 0, 1, 0))[:, :, :-1]
        horizontal_pre = F.conv2d(
            F.pad(horizontal, (half, 0, 0, 0)),
            self.horizontal.weight * self.horizontal_mask,
            self.horizontal.bias,
        ) + self.link(shifted)
        vertical_out = _gate(vertical_pre, self.n_filters)
        gated = _gate(horizontal_pre, self.n_filters)
        if self.first:
            return vertical_out, gated
        residual = F.conv2d(gated, self.residual.weight * self.residual_mask, self.residual.bias)
        return vertical_out, horizontal + residual


def _gate(pre_activation: torch.Tensor, n_filters: int) -> torch.Tensor:
    return torch.tanh(pre_activation[:, :n_filters]) * torch.sigmoid(pre_activation[:, n_filters:])


class PixelCNN(RenamedSettings, Model):
    """Gated PixelCNN over images with `n_levels` grey levels per channel; exact `log_prob`.

    Args:
        image_shape: (H, W) or (C, H, W); the event shape.
        n_levels: grey levels per channel (2 for binary images, up to 256).
        n_filters: hidden features per stack (rounded up to a multiple of C).
        n_layers: gated layers (the first uses a type A mask).
        kernel_size: spatial size of the later layers (odd).
        first_kernel_size: spatial size of the first layer (odd).
        output_filters: width of the 1x1 output layers (default n_filters).
        n_epochs, batch_size, learning_rate, seed: training settings (overridable in `fit`).

    Example:
        >>> import torch
        >>> from probgen.deep.pixelcnn import PixelCNN
        >>> images = torch.randint(0, 2, (32, 5, 5))
        >>> model = PixelCNN((5, 5), n_filters=8, n_layers=2, n_epochs=1, seed=0).fit(images)
        >>> model.sample(2, seed=0).shape
        torch.Size([2, 5, 5])
    """

    log_prob_kind = LogProbKind.EXACT
    fitted_attributes = ("history_", "n_iter_")
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    def __init__(
        self,
        image_shape: tuple[int, ...] | list[int],
        n_levels: int = 2,
        n_filters: int = 64,
        n_layers: int = 7,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        output_filters: int | None = None,
        n_epochs: int = 10,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        seed: int | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        n_epochs, learning_rate = renamed_arguments(
            type(self).__name__, deprecated, n_epochs=n_epochs, learning_rate=learning_rate
        ).values()
        shape = tuple(image_shape)
        if len(shape) not in (2, 3):
            raise DataError(f"image_shape must be (H, W) or (C, H, W), got {shape}")
        for size in shape:
            check_positive_int(size, "image_shape[]")
        self.image_shape = shape
        self.n_channels = shape[0] if len(shape) == 3 else 1
        self.height, self.width = shape[-2], shape[-1]
        self.n_levels = check_positive_int(n_levels, "n_levels", minimum=2)
        if self.n_levels > 256:
            raise DataError(f"n_levels must be at most 256, got {n_levels}")
        for value, name in ((kernel_size, "kernel_size"), (first_kernel_size, "first_kernel_size")):
            if check_positive_int(value, name) % 2 == 0:
                raise DataError(f"{name} must be odd, got {value}")
        channels = self.n_channels
        self.n_filters = -(-check_positive_int(n_filters, "n_filters") // channels) * channels
        self.n_layers = check_positive_int(n_layers, "n_layers")
        self.kernel_size = kernel_size
        self.first_kernel_size = first_kernel_size
        self.output_filters = (
            -(-check_positive_int(output_filters or self.n_filters, "output_filters") // channels)
            * channels
        )
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        self.seed = seed
        self.event_shape = torch.Size(shape)

        # Seeded initial weights without touching the caller's global random state.
        with seeded_initialisation(seed):
            self.layers = nn.ModuleList(
                [GatedLayer(channels, self.n_filters, channels, first_kernel_size, first=True)]
                + [
                    GatedLayer(self.n_filters, self.n_filters, channels, kernel_size, first=False)
                    for _ in range(self.n_layers - 1)
                ]
            )
            self.output_hidden = nn.Conv2d(self.n_filters, self.output_filters, 1)
            self.output_logits = nn.Conv2d(self.output_filters, channels * self.n_levels, 1)
        hidden = hidden_groups(self.n_filters, channels)
        out_hidden = hidden_groups(self.output_filters, channels)
        logit_groups = torch.arange(channels).repeat_interleave(self.n_levels)
        self.register_buffer(
            "output_hidden_mask", channel_mask(out_hidden, hidden, "B")[:, :, None, None]
        )
        self.register_buffer(
            "output_logits_mask", channel_mask(logit_groups, out_hidden, "B")[:, :, None, None]
        )

    def init_for_evaluation(self) -> PixelCNN:
        """Mark the (randomly initialised) model usable without fitting; returns self."""
        self._mark_fitted()
        return self

    # ---- network ---------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Conditional logits of every pixel and channel.

        Args:
            x: images (N, C, H', W) with values in 0..n_levels-1 (float or integer; H' <= H
                is allowed because row i depends only on rows <= i).

        Returns:
            (N, C, n_levels, H', W) logits; entry (c, i, j) depends only on pixels before
            (i, j) in raster order and on channels < c of pixel (i, j).
        """
        scaled = x.to(self.dtype) * (2.0 / (self.n_levels - 1)) - 1.0
        vertical, horizontal = scaled, scaled
        for layer in self.layers:
            vertical, horizontal = layer(vertical, horizontal)
        hidden = F.conv2d(
            torch.relu(horizontal),
            self.output_hidden.weight * self.output_hidden_mask,
            self.output_hidden.bias,
        )
        logits = F.conv2d(
            torch.relu(hidden),
            self.output_logits.weight * self.output_logits_mask,
            self.output_logits.bias,
        )
        return logits.unflatten(1, (self.n_channels, self.n_levels))

    def _log_prob_images(self, images: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(self.logits(images), 2)
        picked = log_probs.gather(2, images.long().unsqueeze(2)).squeeze(2)
        return picked.flatten(1).sum(-1)

    def _check_input(self, x: Any, name: str = "x") -> torch.Tensor:
        # as_tensor rejects NaN, infinities and a wrong image shape, naming `name`.
        tensor = as_tensor(x, name, event_shape=self.image_shape)
        if tensor.dtype == torch.bool:
            tensor = tensor.long()
        top = self.n_levels - 1
        if tensor.is_floating_point() and not torch.equal(tensor, tensor.round()):
            raise DataError(
                f"{name} must hold grey levels 0..{top} as whole numbers; found non-integer "
                "values (scale images to integer levels first)"
            )
        if (tensor < 0).any() or (tensor > top).any():
            bad = tensor[(tensor < 0) | (tensor > top)][0].item()
            what = "binary values 0/1" if top == 1 else f"grey levels 0..{top}"
            raise DataError(f"{name} must hold {what}; found {bad}")
        return tensor.to(self.device).long()

    def _to_images(self, checked: torch.Tensor) -> torch.Tensor:
        return checked.reshape(-1, self.n_channels, self.height, self.width)

    # ---- density contract ------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: Any) -> torch.Tensor:
        """Exact log-mass of each image.

        Args:
            x: images (*batch, *image_shape) with values in 0..n_levels-1.

        Returns:
            Tensor (*batch,).
        """
        self.check_fitted("log_prob")
        checked = self._check_input(x)
        batch_shape = checked.shape[: checked.dim() - len(self.image_shape)]
        return self._log_prob_images(self._to_images(checked)).reshape(batch_shape)

    def sample(self, n: int, *, seed: int | torch.Generator | None = None) -> torch.Tensor:
        """Draw `n` images pixel by pixel, channel by channel: long tensor (n, *image_shape)."""
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        images = torch.zeros(
            n, self.n_channels, self.height, self.width, dtype=torch.long, device=self.device
        )
        with torch.no_grad():
            for row in range(self.height):
                for column in range(self.width):
                    for channel in range(self.n_channels):
                        # Row `row` depends only on rows <= row: crop the rest away.
                        logits = self.logits(images[:, :, : row + 1])[:, channel, :, row, column]
                        probabilities = torch.softmax(logits, -1)
                        images[:, channel, row, column] = torch.multinomial(
                            probabilities, 1, generator=generator
                        ).squeeze(-1)
        return images.reshape(n, *self.image_shape)

    def enumerate_support(self) -> torch.Tensor:
        """Every image of a tiny event space, long tensor (n_levels**(C*H*W), *image_shape)."""
        n_values = math.prod(self.image_shape)
        size = self.n_levels**n_values
        if size > _MAX_SUPPORT:
            raise DataError(
                f"enumerate_support: {self.n_levels}**{n_values} images is too many to list "
                f"(limit {_MAX_SUPPORT})"
            )
        values = list(itertools.product(range(self.n_levels), repeat=n_values))
        return torch.tensor(values, dtype=torch.long, device=self.device).reshape(
            size, *self.image_shape
        )

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: Any, *, validation_data: Any = None, **options: Any) -> PixelCNN:
        """Maximum likelihood with Adam (loss: nats per sub-pixel, averaged over the batch).

        Args:
            data: images (n, *image_shape) with values in 0..n_levels-1.
            validation_data: optional held-out images (log-likelihood recorded per epoch).
            **options: settings for `probgen.fitting.fit_model`, overriding the model's
                (n_epochs, batch_size, learning_rate, seed, early_stopping_patience,
                checkpoint_dir, ...).

        Returns:
            self, with `history_` and `n_iter_`.
        """
        fit_pixel_model(self, data, validation_data, options)
        return self


def fit_pixel_model(model: Any, data: Any, validation_data: Any, options: dict) -> None:
    """The fit of the pixel-by-pixel image models (PixelCNN, PixelRNN): mean negative
    log-likelihood per pixel through the shared loop, held-out log-likelihood per image."""
    from probgen.fitting.batching import first_tensor
    from probgen.fitting.loop import fit_with_model_settings

    train = model._to_images(model._check_input(data, "data"))
    validation = (
        None
        if validation_data is None
        else model._to_images(model._check_input(validation_data, "validation_data"))
    )
    n_values = math.prod(model.image_shape)

    def loss(fitted: Any, batch: Any) -> torch.Tensor:
        return -fitted._log_prob_images(first_tensor(batch)).mean() / n_values

    def validation_log_prob(fitted: Any, batch: Any) -> torch.Tensor:
        return fitted._log_prob_images(first_tensor(batch))

    fit_with_model_settings(
        model,
        train,
        loss=loss,
        validation_data=validation,
        validation_log_prob=validation_log_prob,
        options=options,
    )
