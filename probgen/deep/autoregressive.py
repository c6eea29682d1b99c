"""Autoregressive neural likelihood models: MADE, gated PixelCNN and sequence models.

Each factorises p(x) = prod_i p(x_i | x_<i) with a network whose connectivity is masked (MADE,
PixelCNN) or causal by construction (recurrent nets, causal transformers), so `log_prob` is exact
and `sample` draws one variable, pixel or token at a time. The implementations live in
`probgen.deep.made`, `probgen.deep.pixelcnn` and `probgen.deep.sequence`.

Example:
    >>> import torch
    >>> from probgen.deep.autoregressive import MADE
    >>> x = torch.randint(0, 2, (64, 6)).float()
    >>> MADE(6, hidden_dims=[16]).fit(x, n_epochs=1, seed=0).sample(2, seed=0).shape
    torch.Size([2, 6])
"""

from __future__ import annotations

from probgen.deep.made import MADE, MaskedLinear
from probgen.deep.pixelcnn import GatedLayer, PixelCNN
from probgen.deep.sequence import SequenceModel
from probgen.deep.tokenizer import CharTokenizer

__all__ = ["MADE", "PixelCNN", "SequenceModel", "CharTokenizer", "MaskedLinear", "GatedLayer"]
