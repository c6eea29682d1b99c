"""The layers of PixelRNN (van den Oord et al., 2016): masked convolutions, Row LSTM, Diagonal
BiLSTM, and the skew / unskew maps between an image and its diagonals.

Causality is kept by one invariant: every layer's features at pixel p depend only on image
pixels strictly before p in raster order (and, inside p, on channel groups < c through the
type A first layer and the type B masks after it). Each layer may therefore read its input at
positions q <= p in raster order (at q = p only through a type B channel mask):

- the first layer is a k x k convolution with mask A (rows above, pixels to the left, earlier
  channels of the same pixel);
- a Row LSTM computes row i from a 1 x k input-to-state convolution masked to the pixels at or
  left of j (mask B at the centre) and a 1 x k state-to-state convolution of row i-1's states;
- a Diagonal BiLSTM skews the image so that each diagonal becomes a column, runs a
  column-by-column LSTM whose 2 x 1 state-to-state convolution reads the pixel above and the
  pixel to the left, and unskews. The right-to-left direction (run on the mirrored image) sees
  pixels to the right, so its output is shifted down one row: row i gets row i-1's states,
  which depend on rows <= i-1 only. That direction also reads the image's own pixels (every
  pixel of row i-1 is in the past of row i), so that the receptive field has no hole.

Example:
    >>> import torch
    >>> from probgen.deep.pixelrnn_layers import skew, unskew
    >>> image = torch.arange(6.0).reshape(1, 1, 2, 3)
    >>> skew(image)[0, 0]
    tensor([[0., 1., 2., 0.],
            [0., 3., 4., 5.]])
    >>> torch.equal(unskew(skew(image), 3), image)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from probgen.deep.pixelcnn import channel_mask, hidden_groups

__all__ = [
    "MaskedConv2d",
    "first_layer",
    "RowLSTMLayer",
    "DiagonalBiLSTMLayer",
    "skew",
    "unskew",
]


class MaskedConv2d(nn.Conv2d):
    """A 2-D convolution whose weight is multiplied by a fixed 0/1 mask (a buffer)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        mask: torch.Tensor,
        padding: tuple[int, int] = (0, 0),
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def _raster_mask(
    out_groups: torch.Tensor,
    in_groups: torch.Tensor,
    kernel_size: tuple[int, int],
    mask_type: str,
) -> torch.Tensor:
    """Mask of a (kh, kw) kernel centred on the last row when kh == 1 or the middle row.

    Taps below the centre row and right of the centre tap are cut; the centre tap connects
    channel groups by `mask_type` ('A': strictly earlier groups, 'B': the same or earlier).
    """
    height, width = kernel_size
    centre_row, centre_column = height // 2, width // 2
    mask = torch.ones(len(out_groups), len(in_groups), height, width)
    mask[:, :, centre_row + 1 :] = 0
    mask[:, :, centre_row, centre_column + 1 :] = 0
    mask[:, :, centre_row, centre_column] = channel_mask(out_groups, in_groups, mask_type)
    return mask


def first_layer(n_channels: int, n_features: int, kernel_size: int) -> MaskedConv2d:
    """The k x k type A convolution from the image channels to `n_features` features."""
    mask = _raster_mask(
        hidden_groups(n_features, n_channels), torch.arange(n_channels), (kernel_size,) * 2, "A"
    )
    return MaskedConv2d(
        n_channels, n_features, (kernel_size, kernel_size), mask, padding=(kernel_size // 2,) * 2
    )


def pointwise_b(in_features: int, out_features: int, n_channels: int) -> MaskedConv2d:
    """A 1 x 1 convolution with the type B channel-group mask."""
    mask = channel_mask(
        hidden_groups(out_features, n_channels), hidden_groups(in_features, n_channels), "B"
    )[:, :, None, None]
    return MaskedConv2d(in_features, out_features, (1, 1), mask)


def _gate_groups(n_hidden: int, n_channels: int) -> torch.Tensor:
    """Channel group of each of the 4 * n_hidden gate pre-activations (i, f, o, g blocks)."""
    return hidden_groups(n_hidden, n_channels).repeat(4)


def _lstm_update(
    pre_activation: torch.Tensor, cell: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step; `pre_activation` (..., 4, h, L) holds the i, f, o, g blocks."""
    # One sigmoid over the three gates: fewer small ops in the recurrent loops.
    input_gate, forget_gate, output_gate = torch.sigmoid(pre_activation[..., :3, :, :]).unbind(-3)
    candidate = torch.tanh(pre_activation[..., 3, :, :])
    cell = forget_gate * cell + input_gate * candidate
    return output_gate * torch.tanh(cell), cell


def _pixel_update(
    pre_activation: torch.Tensor, cell: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_lstm_update` of single positions: `pre_activation` (N, 4h), `cell` (N, h)."""
    state, cell = _lstm_update(pre_activation.unflatten(1, (4, -1))[..., None], cell[..., None])
    return state[..., 0], cell[..., 0]


class RowLSTMLayer(nn.Module):
    """Row LSTM with a residual connection: rows computed top to bottom.

    Args:
        n_features: features of the residual stream (the layer's input and output).
        n_hidden: LSTM state size h.
        n_channels: image channels (the channel groups of the masks).
        kernel_size: odd width k of the input-to-state and state-to-state convolutions.
    """

    def __init__(self, n_features: int, n_hidden: int, n_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        gates = _gate_groups(n_hidden, n_channels)
        features = hidden_groups(n_features, n_channels)
        self.input_to_state = MaskedConv2d(
            n_features,
            4 * n_hidden,
            (1, kernel_size),
            _raster_mask(gates, features, (1, kernel_size), "B"),
            padding=(0, kernel_size // 2),
        )
        # Row i-1 is wholly before row i: its states need no mask.
        self.state_to_state = nn.Conv1d(
            n_hidden, 4 * n_hidden, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.residual = pointwise_b(n_hidden, n_features, n_channels)

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Features (N, F, H, W) of the residual stream (`image` is not needed)."""
        n, _, height, width = x.shape
        gates = self.input_to_state(x)  # (N, 4h, H, W)
        state = x.new_zeros(n, self.n_hidden, width)
        cell = torch.zeros_like(state)
        rows = []
        # unbind, not gates[:, :, row]: each indexing's backward would fill a whole zero copy.
        for row_gates in gates.unbind(2):
            pre = row_gates + self.state_to_state(state)
            state, cell = _lstm_update(pre.unflatten(1, (4, self.n_hidden)), cell)
            rows.append(state)
        return x + self.residual(torch.stack(rows, 2))

    def row_step(
        self, x_row: torch.Tensor, state: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One row of `forward` from the row above's states (for cached sampling).

        Args:
            x_row: this row's input features (N, F, W).
            state, cell: the row above's LSTM states (N, h, W) (zeros above the first row).

        Returns:
            The row's output features (N, F, W), and its LSTM states and cells (N, h, W).
        """
        gates = self.input_to_state(x_row[:, :, None])[:, :, 0] + self.state_to_state(state)
        state, cell = _lstm_update(gates.unflatten(1, (4, self.n_hidden)), cell)
        return x_row + self.residual(state[:, :, None])[:, :, 0], state, cell


def skew(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H, W + H - 1): row i moved i places right, zeros elsewhere.

    Each column t of the result is one diagonal i + j = t of the image.
    """
    *batch, height, width = x.shape
    # Rows padded to W + H and read back as rows of W + H - 1: row i starts i places later.
    flat = F.pad(x, (0, height)).flatten(-2)[..., : height * (width + height - 1)]
    return flat.reshape(*batch, height, width + height - 1)


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of `skew` for images of the given width."""
    *batch, height, _ = x.shape
    flat = F.pad(x.flatten(-2), (0, height))
    return flat.reshape(*batch, height, width + height)[..., :width]


class DiagonalBiLSTMLayer(nn.Module):
    """Diagonal BiLSTM with a residual connection: both directions run in one column loop.

    Args:
        n_features: features of the residual stream (the layer's input and output).
        n_hidden: LSTM state size h of each direction.
        n_channels: image channels (the channel groups of the masks).
    """

    def __init__(self, n_features: int, n_hidden: int, n_channels: int) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        gates = _gate_groups(n_hidden, n_channels)
        features = hidden_groups(n_features, n_channels)
        # Left-to-right reads pixel p itself: type B.
        self.left_input = MaskedConv2d(
            n_features, 4 * n_hidden, (1, 1), channel_mask(gates, features, "B")[:, :, None, None]
        )
        # Right-to-left is shifted down a row, so all of its row is in the past: no mask. It
        # also reads the pixels themselves, because the type A first layer hides pixel (i, W-1)
        # from every feature of row i, and so from this direction; without them that pixel
        # would be a blind spot for the pixels of row i+1 left of the first kernel's reach.
        self.right_input = nn.Conv2d(n_features + n_channels, 4 * n_hidden, 1)
        # 2 x 1 column convolution of the previous diagonal's states, one group per direction:
        # skewed row i reads rows i-1 and i (the pixels above and to the left).
        self.state_to_state = nn.Conv1d(2 * n_hidden, 8 * n_hidden, 2, groups=2, bias=False)
        self.residual = pointwise_b(n_hidden, n_features, n_channels)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Features (N, F, H, W) of the residual stream, given the scaled image (N, C, H, W)."""
        n, _, height, width = x.shape
        h = self.n_hidden
        left_gates = self.left_input(x)
        right_gates = self.right_input(torch.cat([x, image], 1))
        # The right-to-left direction is the left-to-right one on the mirrored image.
        gates = skew(torch.cat([left_gates, right_gates.flip(-1)], 1))  # (N, 8h, H, T)
        rows = torch.arange(height, device=x.device)
        columns = torch.arange(gates.shape[-1], device=x.device)
        # Skewed positions outside the image keep zero states (the zero padding of the paper).
        inside = ((columns[None] >= rows[:, None]) & (columns[None] < rows[:, None] + width)).to(
            x.dtype
        )
        state = x.new_zeros(n, 2, h, height)
        cell = torch.zeros_like(state)
        diagonals = []
        # Diagonal-major memory, so that each step reads and writes contiguous blocks; and
        # unbind, not gates[..., column], whose backward would fill a whole zero copy each time.
        by_diagonal = gates.permute(3, 0, 1, 2).contiguous().unbind(0)
        for column_gates, column_inside in zip(by_diagonal, inside.t().unbind(0)):
            previous = F.pad(state.reshape(n, 2 * h, height), (1, 0))
            pre = column_gates + self.state_to_state(previous)
            state, cell = _lstm_update(pre.reshape(n, 2, 4, h, height), cell)
            state = state * column_inside
            cell = cell * column_inside
            diagonals.append(state.reshape(n, 2 * h, height))
        left, right = unskew(torch.stack(diagonals).permute(1, 2, 3, 0), width).chunk(2, 1)
        right = F.pad(right.flip(-1), (0, 0, 1, 0))[:, :, :height]
        return x + self.residual(left + right)

    # ---- the same function computed pixel by pixel in raster order (cached sampling) -------
    # In image coordinates the left-to-right LSTM at (i, j) reads the states of (i-1, j) (the
    # 2 x 1 kernel's first tap) and (i, j-1) (its second tap, and the cell), and the
    # right-to-left one mirrors it: (i-1, j) and (i, j+1).
    def _recurrent_weights(self, direction: int) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.state_to_state.weight[direction * 4 * self.n_hidden :][: 4 * self.n_hidden]
        return block[:, :, 0], block[:, :, 1]

    def left_step(
        self,
        x_pixel: torch.Tensor,
        above: torch.Tensor,
        left: torch.Tensor,
        left_cell: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-to-right state and cell (N, h) of one pixel from its input features (N, F)
        and the states above and to the left (N, h)."""
        weight = self.left_input.weight * self.left_input.mask
        above_weight, left_weight = self._recurrent_weights(0)
        pre = (
            F.linear(x_pixel, weight[:, :, 0, 0], self.left_input.bias)
            + F.linear(above, above_weight)
            + F.linear(left, left_weight)
        )
        return _pixel_update(pre, left_cell)

    def right_row(
        self, x_row: torch.Tensor, image_row: torch.Tensor, above: torch.Tensor
    ) -> torch.Tensor:
        """Right-to-left states (N, h, W) of a complete row from its input features (N, F, W),
        its scaled pixels (N, C, W) and the row above's right-to-left states (N, h, W)."""
        n, _, width = x_row.shape
        gates = self.right_input(torch.cat([x_row, image_row], 1)[:, :, None])[:, :, 0]
        gates = gates + F.linear(above.transpose(1, 2), self._recurrent_weights(1)[0]).transpose(
            1, 2
        )
        right_weight = self._recurrent_weights(1)[1]
        state = x_row.new_zeros(n, self.n_hidden)
        cell = torch.zeros_like(state)
        states = [state] * width
        for column in reversed(range(width)):
            state, cell = _pixel_update(gates[:, :, column] + F.linear(state, right_weight), cell)
            states[column] = state
        return torch.stack(states, 2)

    def pixel_output(
        self, x_pixel: torch.Tensor, left_state: torch.Tensor, right_above: torch.Tensor
    ) -> torch.Tensor:
        """The layer's output features (N, F) at one pixel from its input (N, F), its
        left-to-right state and the right-to-left state of the pixel above (N, h)."""
        return x_pixel + self.residual(
            (left_state + right_above)[:, :, None, None]
        )[:, :, 0, 0]
