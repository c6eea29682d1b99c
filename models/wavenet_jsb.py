"""WaveNet on JSB Chorales piano rolls: 88 binary keys per frame, Bernoulli keys given the past.

Data: `../shared/data/jsb_chorales/JSB_Chorales.mat` (Boulanger-Lewandowski et al. 2012, as
shipped by the TCN repository of Bai et al. 2018): 229 train / 76 valid / 77 test chorales of
25 to 160 frames, 88 keys. `data()` gives a split as a list of float tensors (frames, 88), of
different lengths (WaveNet takes them ragged). Architecture: a small WaveNet (kernel 2,
dilations 1..32 twice, receptive field 127 frames) with dropout 0.5 on the gates (this small
data set is overfitted quickly). Reference: test negative log-likelihood per frame of 8.10
(TCN), 8.45 (LSTM), 8.43 (GRU) in Bai et al. (2018), Table 3; their protocol scores frames 2..T
of each chorale given the earlier ones (`nll_per_frame(..., skip_first=True)`), while
`log_prob` also scores the first frame from the begin step.

Example:
    >>> from probgen.recipes import wavenet_jsb
    >>> wavenet_jsb.build().event_shape
    torch.Size([88])
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from probgen.recipes._shared_data import shared_file

from probgen.core.errors import DataError
from probgen.deep.wavenet import WaveNet

FAMILY = "autoregressive"
N_KEYS = 88
REFERENCE = {
    "test_nll_per_frame": {"TCN": 8.10, "LSTM": 8.45, "GRU": 8.43},
    "what": "test negative log-likelihood per frame (nats) on JSB Chorales, frames 2..T of "
    "each chorale given the earlier ones, summed over chorales / frames",
    "source": "Bai, Kolter, Koltun (2018), An Empirical Evaluation of Generic Convolutional "
    "and Recurrent Networks for Sequence Modeling, Table 3",
}
SMOKE = {
    "build": {"residual_channels": 8, "skip_channels": 8, "n_layers": 2, "n_cycles": 1},
    "data": {"n": 8},
    "fit": {"n_epochs": 1},
}
# 2**(88*5) sequences cannot be enumerated; normalisation is checked on tiny models in tests.
CONTRACT = {"check_normalization": False, "n_samples": 50}

SETTINGS: dict[str, Any] = dict(
    output="bernoulli",
    n_channels=N_KEYS,
    residual_channels=64,
    skip_channels=64,
    kernel_size=2,
    n_layers=6,
    n_cycles=2,
    dropout=0.5,
    n_epochs=40,
    batch_size=8,
    learning_rate=2e-3,
    grad_clip=1.0,
    seed=0,
)


def build(**overrides: Any) -> WaveNet:
    """A Bernoulli WaveNet over 88-key frames."""
    return WaveNet(**{**SETTINGS, **overrides})


@lru_cache(maxsize=1)
def _chorales() -> dict[str, list[torch.Tensor]]:
    from scipy.io import loadmat

    mat = loadmat(shared_file("jsb_chorales", "JSB_Chorales.mat"))
    return {
        split: [torch.as_tensor(roll, dtype=torch.float32) for roll in mat[f"{split}data"][0]]
        for split in ("train", "valid", "test")
    }


def data(split: str = "train", seed: int = 0, n: int | None = None) -> list[torch.Tensor]:
    """The chorales of a split (train/valid/test) as float 0/1 tensors (frames, 88).

    `seed` is unused (the splits are fixed); `n` keeps the first n chorales.

    Raises:
        SharedDataMissing: the data file is not on this machine.
    """
    split = "valid" if split == "validation" else split
    if split not in ("train", "valid", "test"):
        raise DataError(f"split must be 'train', 'valid' or 'test' (JSB Chorales), got {split!r}")
    rolls = _chorales()[split]
    return [roll.clone() for roll in (rolls if n is None else rolls[: int(n)])]


def nll_per_frame(model: WaveNet, rolls: list[torch.Tensor], skip_first: bool = True) -> float:
    """Negative log-likelihood per frame in nats, summed over chorales and divided by frames.

    Args:
        model: a fitted Bernoulli WaveNet over 88 keys.
        rolls: chorales (frames, 88).
        skip_first: score frames 2..T only (the protocol of Bai et al. 2018); False scores
            every frame, the first one from the begin step (what `log_prob` sums).
    """
    total, frames = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rolls), 32):
            batch = rolls[start : start + 32]
            steps = model.log_prob_steps(batch).double()
            if skip_first:
                steps = steps[:, 1:]
            total -= steps.sum().item()
            frames += sum(roll.shape[0] - int(skip_first) for roll in batch)
    return total / frames
