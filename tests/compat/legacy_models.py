"""One small seeded fit per model family, used to pin the layout move.

`python tests/compat/legacy_models.py` (run once, with the code before the layout move) writes
`tests/compat/files/NAME.probgen`. The tests load those files (whose class paths are the old
ones, such as ``probgen.hmm.model.HMM``) and repeat each seeded fit with today's code: the
tensors must match up to float rounding (see test_legacy_files.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import probgen

FILES = Path(__file__).parent / "files"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def hmm_categorical() -> tuple[Any, Any]:
    rng = _rng(0)
    sequences = [rng.integers(0, 3, size=length) for length in (40, 25, 31)]
    model = probgen.HMM(2, emission="categorical", n_symbols=3, n_init=2, max_iter=20, seed=1)
    return model.fit(sequences), sequences


def hmm_gaussian() -> tuple[Any, Any]:
    rng = _rng(1)
    sequences = [rng.normal(size=(length, 2)) + (rng.random() > 0.5) for length in (30, 22)]
    model = probgen.HMM(2, emission="gaussian", n_features=2, covariance="full", max_iter=15,
                        seed=2)
    return model.fit(sequences), sequences


def bayesian_network() -> tuple[Any, Any]:
    import pandas as pd

    rng = _rng(2)
    rain = rng.integers(0, 2, 300)
    sprinkler = (rng.random(300) < np.where(rain == 1, 0.1, 0.5)).astype(int)
    wet = (rng.random(300) < 0.1 + 0.4 * rain + 0.4 * sprinkler).astype(int)
    data = pd.DataFrame({"rain": rain, "sprinkler": sprinkler, "wet": wet})
    model = probgen.BayesianNetwork(
        [("rain", "sprinkler"), ("rain", "wet"), ("sprinkler", "wet")], method="bayes", prior="bdeu"
    )
    return model.fit(data), data


def markov_network() -> tuple[Any, Any]:
    import pandas as pd

    rng = _rng(3)
    a = rng.integers(0, 2, 200)
    b = np.where(rng.random(200) < 0.8, a, 1 - a)
    c = np.where(rng.random(200) < 0.7, b, 1 - b)
    data = pd.DataFrame({"a": a, "b": b, "c": c})
    model = probgen.MarkovNetwork(
        scopes=[("a", "b"), ("b", "c")], states={name: [0, 1] for name in "abc"}, max_iter=30
    )
    return model.fit(data), data


def rbm() -> tuple[Any, Any]:
    data = (torch.rand(120, 6, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    model = probgen.RBM(6, 3, n_epochs=3, batch_size=20, seed=5)
    return model.fit(data), data


def boltzmann_machine() -> tuple[Any, Any]:
    data = (torch.rand(80, 5, generator=torch.Generator().manual_seed(6)) < 0.5).float()
    model = probgen.BoltzmannMachine(5, n_epochs=4, batch_size=20, seed=7)
    return model.fit(data), data


def dbn() -> tuple[Any, Any]:
    data = (torch.rand(60, 6, generator=torch.Generator().manual_seed(8)) < 0.5).float()
    model = probgen.DBN([6, 4, 3], n_epochs=2, batch_size=20, seed=9)
    return model.fit(data), data


def gaussian_mixture() -> tuple[Any, Any]:
    rng = _rng(10)
    data = np.concatenate([rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) + 4.0])
    model = probgen.GaussianMixture(2, n_init=2, seed=11)
    return model.fit(data), data


def vae() -> tuple[Any, Any]:
    data = (torch.rand(64, 8, generator=torch.Generator().manual_seed(12)) < 0.5).float()
    model = probgen.VAE(8, latent_dim=2, hidden_dims=(16,), n_epochs=2, batch_size=16, seed=13)
    return model.fit(data), data


def flow() -> tuple[Any, Any]:
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(14))
    model = probgen.Flow(2, kind="realnvp", n_layers=2, hidden_dims=(8,), n_epochs=2,
                         batch_size=16, seed=15)
    return model.fit(data), data


def made() -> tuple[Any, Any]:
    data = (torch.rand(64, 6, generator=torch.Generator().manual_seed(16)) < 0.5).float()
    model = probgen.MADE(6, hidden_dims=(12,), n_epochs=2, batch_size=16, seed=17)
    return model.fit(data), data


def pixelcnn() -> tuple[Any, Any]:
    data = (torch.rand(16, 5, 5, generator=torch.Generator().manual_seed(18)) < 0.5).long()
    model = probgen.PixelCNN((5, 5), n_filters=8, n_layers=2, n_epochs=1, batch_size=8, seed=19)
    return model.fit(data), data


def sequence_model() -> tuple[Any, Any]:
    text = "the quick brown fox jumps over the lazy dog " * 6
    model = probgen.SequenceModel(sorted(set(text)), arch="lstm", embedding_dim=8, hidden_dim=8,
                                  n_layers=1, n_epochs=1, batch_size=8, seed=20)
    return model.fit(text, seq_length=16), text


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    name: function
    for name, function in dict(globals()).items()
    if callable(function) and function.__module__ == __name__ and not name.startswith("_")
    and name not in {"main"}
}


def main() -> None:
    torch.set_num_threads(1)
    FILES.mkdir(exist_ok=True)
    for name, build in BUILDERS.items():
        model, _ = build()
        model.save(FILES / f"{name}.probgen")
        print(name, type(model).__module__)


if __name__ == "__main__":
    main()
