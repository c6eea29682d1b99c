"""One spelling of the training settings: `n_epochs` and `learning_rate`; the old `epochs`
and `lr` warn and still apply; model files saved with the old names load silently."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import probgen
from probgen.core.errors import DataError
from probgen.deep.flows import Flow
from probgen.deep.made import MADE
from probgen.deep.pixelcnn import PixelCNN
from probgen.deep.sequence import SequenceModel
from probgen.deep.vae import VAE

OLD_FILES = Path(__file__).parents[1] / "compat" / "files"

# name -> (build(**settings), training data)
MODELS = {
    "vae": (lambda **kw: VAE(4, latent_dim=2, hidden_dims=(8,), seed=0, **kw),
            lambda: torch.randint(0, 2, (16, 4)).float()),
    "flow": (lambda **kw: Flow(2, n_layers=1, hidden_dims=(8,), seed=0, **kw),
             lambda: torch.randn(16, 2)),
    "made": (lambda **kw: MADE(4, hidden_dims=[8], seed=0, **kw),
             lambda: torch.randint(0, 2, (16, 4)).float()),
    "pixelcnn": (lambda **kw: PixelCNN((3, 3), n_filters=4, n_layers=1, seed=0, **kw),
                 lambda: torch.randint(0, 2, (8, 3, 3))),
    "sequence_model": (lambda **kw: SequenceModel("ab", hidden_dim=4, n_layers=1, seed=0, **kw),
                       lambda: ["abab", "baba"] * 4),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_new_names_are_the_attributes_and_the_config(name):
    build, _ = MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        model = build(n_epochs=3, learning_rate=0.01)
    assert (model.n_epochs, model.learning_rate) == (3, 0.01)
    config = model.get_config()
    assert config["n_epochs"] == 3 and config["learning_rate"] == 0.01
    assert "epochs" not in config and "lr" not in config
    assert not hasattr(model, "epochs") and not hasattr(model, "lr")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_old_constructor_names_warn_and_still_apply(name):
    build, _ = MODELS[name]
    with pytest.warns(DeprecationWarning, match="'n_epochs'"):
        model = build(epochs=3)
    assert model.n_epochs == 3
    with pytest.warns(DeprecationWarning, match="'learning_rate'"):
        model = build(lr=0.05)
    assert model.learning_rate == 0.05
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_epoch'"):
        build(n_epoch=3)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_old_fit_option_names_warn_and_still_apply(name, seeded_global_torch):
    build, data = MODELS[name]
    model = build(n_epochs=5)
    with pytest.warns(DeprecationWarning, match=r"\.fit: 'epochs' is deprecated; use 'n_epochs'"):
        model.fit(data(), epochs=1, batch_size=8)
    assert isinstance(model.history_, list) and len(model.history_) == 1
    assert sorted(model.history_[0]) == [
        "epoch", "lr", "seconds", "steps", "train_loss", "val_log_prob"
    ]
    with pytest.warns(DeprecationWarning, match="'learning_rate'"):
        model.fit(data(), n_epochs=1, lr=0.125, batch_size=8)
    assert model.history_[0]["lr"] == 0.125
    with pytest.raises(DataError, match="not also its old name"):
        model.fit(data(), n_epochs=1, epochs=1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_with_old_names_loads_silently(name):
    build, _ = MODELS[name]
    config = build().get_config()
    config["epochs"], config["lr"] = config.pop("n_epochs"), config.pop("learning_rate")
    config["epochs"], config["lr"] = 4, 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        model = type(build()).from_config(config)
    assert (model.n_epochs, model.learning_rate) == (4, 0.02)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_old_model_file_gives_the_new_attribute_names(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        model = probgen.load(OLD_FILES / f"{name}.probgen")
    assert isinstance(model.n_epochs, int) and isinstance(model.learning_rate, float)
    assert "n_epochs" in model.get_config() and "epochs" not in model.get_config()
