"""PixelRNN (van den Oord, Kalchbrenner and Kavukcuoglu, 2016): Row LSTM and Diagonal BiLSTM.

The image is modelled pixel by pixel in raster order (and channel by channel inside a pixel):
p(x) = prod_i p(x_i | x_<i). A k x k type A masked convolution feeds a stack of recurrent
layers with residual connections, either Row LSTMs (`layer="row"`: rows computed top to bottom,
a triangular receptive field above each pixel) or Diagonal BiLSTMs (`layer="diagonal"`: the
image is skewed so that diagonals are computed one after the other in both directions, and the
receptive field covers every earlier pixel). Two 1 x 1 type B layers give the conditionals: a
Bernoulli per binary pixel (`n_levels=2`) or a categorical over the grey levels. The layers
are in `probgen.deep.pixelrnn_layers`, whose docstring says why they are causal.

Example:
    >>> import torch
    >>> from probgen.deep.pixelrnn import PixelRNN
    >>> model = PixelRNN((4, 4), layer="diagonal", n_hidden=4, n_layers=1)
    >>> model.init_for_evaluation().log_prob(torch.zeros(3, 4, 4)).shape
    torch.Size([3])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.core.threads import small_op_threads
from probgen.deep.pixelcnn import PixelCNN, channel_mask, fit_pixel_model, hidden_groups
from probgen.deep.pixelrnn_layers import (
    DiagonalBiLSTMLayer,
    MaskedConv2d,
    RowLSTMLayer,
    first_layer,
    pointwise_b,
)

__all__ = ["PixelRNN", "LAYER_TYPES"]

LAYER_TYPES = ("row", "diagonal")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class PixelRNN(Model):
    """PixelRNN over images with `n_levels` grey levels per channel; exact `log_prob`.

    Args:
        image_shape: (H, W) or (C, H, W); the event shape.
        n_levels: grey levels per channel: 2 for binary images (a Bernoulli per pixel, one
            logit), up to 256 (a categorical per pixel).
        layer: "row" (Row LSTM) or "diagonal" (Diagonal BiLSTM).
        n_hidden: LSTM state size h of each layer (and direction); the residual stream has
            2h features (both rounded up to a multiple of C).
        n_layers: recurrent layers, each with a residual connection.
        first_kernel_size: odd size of the first, type A, convolution.
        row_kernel_size: odd width of the Row LSTM's input-to-state and state-to-state
            convolutions (unused by the Diagonal BiLSTM, whose are 1 x 1 and 2 x 1).
        output_filters: width of the hidden 1 x 1 output layer (default 2h).
        n_epochs, batch_size, learning_rate, seed: training settings (overridable in `fit`).

    Example:
        >>> import torch
        >>> from probgen.deep.pixelrnn import PixelRNN
        >>> images = torch.randint(0, 2, (32, 4, 4))
        >>> model = PixelRNN((4, 4), n_hidden=4, n_layers=1, n_epochs=1, seed=0).fit(images)
        >>> model.sample(2, seed=0).shape
        torch.Size([2, 4, 4])
    """

    log_prob_kind = LogProbKind.EXACT
    fitted_attributes = ("history_", "n_iter_")
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    # The image checks and the support are those of the gated PixelCNN, whose attributes
    # (image_shape, n_levels, n_channels, height, width) this class shares.
    _check_input = PixelCNN._check_input
    _to_images = PixelCNN._to_images
    enumerate_support = PixelCNN.enumerate_support

    def __init__(
        self,
        image_shape: tuple[int, ...] | list[int],
        n_levels: int = 2,
        layer: str = "row",
        n_hidden: int = 16,
        n_layers: int = 7,
        first_kernel_size: int = 7,
        row_kernel_size: int = 3,
        output_filters: int | None = None,
        n_epochs: int = 10,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        shape = tuple(image_shape)
        if len(shape) not in (2, 3):
            raise DataError(f"image_shape must be (H, W) or (C, H, W), got {shape}")
        for size in shape:
            check_positive_int(size, "image_shape[]")
        self.image_shape = shape
        self.n_channels = channels = shape[0] if len(shape) == 3 else 1
        self.height, self.width = shape[-2], shape[-1]
        self.n_levels = check_positive_int(n_levels, "n_levels", minimum=2)
        if self.n_levels > 256:
            raise DataError(f"n_levels must be at most 256, got {n_levels}")
        self.layer = check_choice(layer, "layer", LAYER_TYPES)
        for value, name in (
            (first_kernel_size, "first_kernel_size"),
            (row_kernel_size, "row_kernel_size"),
        ):
            if check_positive_int(value, name) % 2 == 0:
                raise DataError(f"{name} must be odd, got {value}")
        self.n_hidden = _round_up(check_positive_int(n_hidden, "n_hidden"), channels)
        self.n_layers = check_positive_int(n_layers, "n_layers")
        self.first_kernel_size = first_kernel_size
        self.row_kernel_size = row_kernel_size
        n_features = 2 * self.n_hidden
        self.output_filters = _round_up(
            check_positive_int(output_filters or n_features, "output_filters"), channels
        )
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        self.seed = seed
        self.event_shape = torch.Size(shape)

        # Binary pixels need one logit each (the Bernoulli); grey levels one per level.
        self._logits_per_channel = 1 if self.n_levels == 2 else self.n_levels
        # Seeded initial weights without touching the caller's global random state.
        with seeded_initialisation(seed):
            self.input_layer = first_layer(channels, n_features, first_kernel_size)
            self.layers = nn.ModuleList(
                [
                    RowLSTMLayer(n_features, self.n_hidden, channels, row_kernel_size)
                    if self.layer == "row"
                    else DiagonalBiLSTMLayer(n_features, self.n_hidden, channels)
                    for _ in range(self.n_layers)
                ]
            )
            self.output_hidden = pointwise_b(n_features, self.output_filters, channels)
            logit_groups = torch.arange(channels).repeat_interleave(self._logits_per_channel)
            self.output_logits = MaskedConv2d(
                self.output_filters,
                len(logit_groups),
                (1, 1),
                channel_mask(logit_groups, hidden_groups(self.output_filters, channels), "B")[
                    :, :, None, None
                ],
            )

    def init_for_evaluation(self) -> PixelRNN:
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
            (N, C, n_levels, H', W) logits of a categorical over the levels (for binary images
            the first is fixed at 0, so the second is the Bernoulli logit); entry (c, i, j)
            depends only on pixels before (i, j) in raster order and on channels < c of pixel
            (i, j).
        """
        image = self._scaled(x)
        features = self.input_layer(image)
        for layer in self.layers:
            features = layer(features, image)
        return self._head(features)

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype) * (2.0 / (self.n_levels - 1)) - 1.0

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, n_levels, H, W) from the last layer's features (N, F, H, W)."""
        hidden = torch.relu(self.output_hidden(torch.relu(features)))
        logits = self.output_logits(hidden).unflatten(
            1, (self.n_channels, self._logits_per_channel)
        )
        if self.n_levels == 2:
            logits = torch.cat([torch.zeros_like(logits), logits], 2)
        return logits

    def _raster_logits(
        self, images: torch.Tensor, draw: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """`logits(images)` computed pixel by pixel in raster order, with the recurrent states
        of the rows above cached: each pixel costs one step per layer, not a pass over the rows.

        Args:
            images: (N, C, H, W) levels; with `draw`, overwritten pixel by pixel.
            draw: `draw(logits (N, n_levels)) -> levels (N,)`, called for each channel of each
                pixel in turn; its draw is written into `images` before the next call.

        Returns:
            (N, C, n_levels, H, W) logits, equal to `logits(images)` for the final images.
        """
        n, channels, height, width = images.shape
        logits = images.new_zeros(n, channels, self.n_levels, height, width, dtype=self.dtype)
        zeros = images.new_zeros(n, self.n_hidden, width, dtype=self.dtype)
        # Per layer, the row above's states: Row LSTM (state, cell); Diagonal BiLSTM
        # (left-to-right state, right-to-left state).
        above = [(zeros, zeros) for _ in self.layers]
        diagonal = self.layer == "diagonal"
        half = self.first_kernel_size // 2
        for row in range(height):
            left = [(zeros[..., 0], zeros[..., 0]) for _ in self.layers]
            row_inputs: list[list[torch.Tensor]] = [[] for _ in self.layers]
            row_states: list[list[torch.Tensor]] = [[] for _ in self.layers]
            for column in range(width):
                for channel in range(channels):
                    window = self._scaled(images[:, :, max(0, row - half) : row + 1])
                    features = self.input_layer(window)[:, :, -1]  # this row: (N, F, W)
                    if diagonal:
                        features, pending = self._diagonal_pixel(
                            features[..., column], column, above, left
                        )
                        pixel_logits = self._head(features[:, :, None, None])[..., 0, 0]
                    else:
                        pending = []
                        for index, layer in enumerate(self.layers):
                            features, state, cell = layer.row_step(features, *above[index])
                            pending.append((state, cell))
                        pixel_logits = self._head(features[:, :, None])[..., 0, column]
                    logits[..., row, column] = pixel_logits
                    if draw is not None:
                        images[:, channel, row, column] = draw(pixel_logits[:, channel])
                # The last channel's states depend only on pixels drawn by now: keep them.
                if diagonal:
                    for index, (x_pixel, state, cell) in enumerate(pending):
                        row_inputs[index].append(x_pixel)
                        row_states[index].append(state)
                        left[index] = (state, cell)
            if diagonal:
                image_row = self._scaled(images[:, :, row])
                above = [
                    (
                        torch.stack(row_states[index], 2),
                        layer.right_row(
                            torch.stack(row_inputs[index], 2), image_row, above[index][1]
                        ),
                    )
                    for index, layer in enumerate(self.layers)
                ]
            else:
                above = pending
        return logits

    def _diagonal_pixel(
        self,
        x_pixel: torch.Tensor,
        column: int,
        above: list[tuple[torch.Tensor, torch.Tensor]],
        left: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """Last layer's features (N, F) at one pixel, and per layer (input, state, cell)."""
        pending = []
        for index, layer in enumerate(self.layers):
            left_above, right_above = above[index]
            state, cell = layer.left_step(x_pixel, left_above[..., column], *left[index])
            pending.append((x_pixel, state, cell))
            x_pixel = layer.pixel_output(x_pixel, state, right_above[..., column])
        return x_pixel, pending

    def _step_work(self, n_images: int) -> int:
        """Work of one recurrent step for the thread policy (`probgen.core.threads`)."""
        return n_images * sum(int(p.numel()) for p in self.parameters())

    def _log_prob_images(self, images: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(self.logits(images), 2)
        picked = log_probs.gather(2, images.long().unsqueeze(2)).squeeze(2)
        return picked.flatten(1).sum(-1)

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
        images = self._to_images(checked)
        with small_op_threads(self._step_work(len(images)), self.device):
            return self._log_prob_images(images).reshape(batch_shape)

    def sample(self, n: int, *, seed: int | torch.Generator | None = None) -> torch.Tensor:
        """Draw `n` images pixel by pixel, channel by channel: long tensor (n, *image_shape).

        The recurrent states of the rows above are cached, so each pixel costs one step of
        each layer (`_raster_logits`).
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        images = torch.zeros(
            n, self.n_channels, self.height, self.width, dtype=torch.long, device=self.device
        )

        def draw(logits: torch.Tensor) -> torch.Tensor:
            probabilities = torch.softmax(logits, -1)
            return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)

        with torch.no_grad(), small_op_threads(self._step_work(n), self.device):
            self._raster_logits(images, draw)
        return images.reshape(n, *self.image_shape)

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: Any, *, validation_data: Any = None, **options: Any) -> PixelRNN:
        """Maximum likelihood with Adam (loss: nats per sub-pixel, averaged over the batch).

        Args:
            data: images (n, *image_shape) with values in 0..n_levels-1.
            validation_data: optional held-out images (log-likelihood recorded per epoch).
            **options: settings for `probgen.fitting.fit_model`, overriding the model's
                (n_epochs, batch_size, learning_rate, seed, max_steps, grad_clip,
                early_stopping_patience, checkpoint_dir, ...).

        Returns:
            self, with `history_` and `n_iter_`.
        """
        fit_pixel_model(self, data, validation_data, options)
        return self
