"""Several named steps in one gradient loop (an adversarial model needs no loop of its own):
each step updates only its own parameter group, with its own learning rate and betas, as many
times per batch as asked; every optimiser is checkpointed; NaN keeps the last good values."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from probgen.core.errors import DataError, FitError
from probgen.fitting import Step, fit_model
from probgen.fitting.checkpoint import load_checkpoint


class _TwoPlayers(nn.Module):
    """A toy two-player game: a generator `g` and a critic `d`, each one linear layer."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.g = nn.Linear(2, 2)
        self.d = nn.Linear(2, 1)

    def fake(self, n: int) -> torch.Tensor:
        # Draws from torch's global generator, as a GAN's noise does.
        return self.g(torch.randn(n, 2))


def _critic_loss(model: _TwoPlayers, batch: torch.Tensor) -> torch.Tensor:
    # Both players take part in the loss: gradients reach `g` too, but the step must not use them.
    return model.d(model.fake(len(batch))).mean() - model.d(batch).mean()


def _generator_loss(model: _TwoPlayers, batch: torch.Tensor) -> torch.Tensor:
    return -model.d(model.fake(len(batch))).mean()


def _data(n: int = 48) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(3)) + 2.0


def _steps(log: list | None = None, **critic: object) -> list[Step]:
    def logged(name, loss):
        def call(model, batch):
            if log is not None:
                log.append((name, _snapshot(model)))
            return loss(model, batch)

        return call

    options = {"parameters": "d", "repeats": 3, "learning_rate": 1e-2, **critic}
    return [
        Step("critic", logged("critic", _critic_loss), **options),
        Step("generator", logged("generator", _generator_loss), parameters="g",
             learning_rate=1e-3, betas=(0.5, 0.9)),
    ]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _group_equal(first: dict, second: dict, prefix: str) -> bool:
    return all(torch.equal(first[k], second[k]) for k in first if k.startswith(prefix + "."))


def test_each_step_updates_only_its_own_group_and_repeats_are_honoured():
    model, log = _TwoPlayers(), []
    data = _data()
    history = fit_model(model, data, steps=_steps(log), n_epochs=2, batch_size=16, seed=0)
    n_batches = 2 * 3
    assert [name for name, _ in log] == (["critic"] * 3 + ["generator"]) * n_batches
    log.append(("end", _snapshot(model)))
    for (name, before), (_, after) in zip(log, log[1:]):
        own, other = ("d", "g") if name == "critic" else ("g", "d")
        assert _group_equal(before, after, other), f"a {name} step changed {other}"
        assert not _group_equal(before, after, own), f"a {name} step left {own} unchanged"
    assert [h["steps"] for h in history] == [3, 6]
    assert set(history[0]["losses"]) == {"critic", "generator"}
    for record in history:
        assert record["train_loss"] == pytest.approx(sum(record["losses"].values()))


def test_separate_learning_rates_and_betas_are_applied(tmp_path):
    model = _TwoPlayers()
    before = _snapshot(model)
    steps = _steps(repeats=1)
    history = fit_model(model, _data(), steps=steps, n_epochs=1, batch_size=16, max_steps=1,
                        checkpoint_dir=tmp_path, seed=0)
    after = _snapshot(model)
    # Adam's first update moves each weight by its learning rate (times sign(gradient)).
    for prefix, lr in (("d.", 1e-2), ("g.", 1e-3)):
        # The critic's bias gets no gradient (it cancels between real and fake): weights only.
        moves = (after[prefix + "weight"] - before[prefix + "weight"]).abs().flatten()
        assert torch.allclose(moves, torch.full_like(moves, lr), rtol=1e-3), prefix
    assert history[0]["lrs"] == {"critic": 1e-2, "generator": 1e-3}
    _, meta = load_checkpoint(tmp_path)
    groups = {name: state["param_groups"][0] for name, state in meta["optimizers"].items()}
    assert groups["optimizer:generator"]["betas"] == [0.5, 0.9]
    assert groups["optimizer:critic"]["lr"] == 1e-2


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    data = _data()
    options = dict(steps=_steps(), batch_size=16, seed=7)
    straight = _TwoPlayers()
    straight_history = fit_model(straight, data, n_epochs=4, **options)
    interrupted = _TwoPlayers()
    fit_model(interrupted, data, n_epochs=4, max_steps=2 * 3, checkpoint_dir=tmp_path, **options)
    _, meta = load_checkpoint(tmp_path)
    assert meta["epoch"] == 2 and sorted(meta["optimizers"]) == [
        "optimizer:critic", "optimizer:generator"
    ]
    resumed = _TwoPlayers()
    resumed_history = fit_model(
        resumed, data, n_epochs=4, checkpoint_dir=tmp_path, resume=True, **options
    )
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed_history] == [
        {k: v for k, v in h.items() if k not in drop} for h in straight_history
    ]


def test_resume_refuses_a_checkpoint_of_other_steps(tmp_path):
    data = _data()
    fit_model(_TwoPlayers(), data, steps=_steps(), n_epochs=1, checkpoint_dir=tmp_path, seed=0)
    with pytest.raises(FitError, match="does not match"):
        fit_model(_TwoPlayers(), data, loss=_generator_loss, n_epochs=2,
                  checkpoint_dir=tmp_path, resume=True, seed=0)


def test_nan_loss_raises_fit_error_and_keeps_the_last_good_parameters():
    model, calls, seen = _TwoPlayers(), [], []

    def generator_loss(model, batch):
        calls.append(None)
        seen.append(_snapshot(model))
        loss = _generator_loss(model, batch)
        return loss * math.nan if len(calls) == 3 else loss

    steps = [_steps()[0], Step("generator", generator_loss, parameters="g")]
    with pytest.raises(FitError, match="generator.*nan"):
        fit_model(model, _data(), steps=steps, n_epochs=3, batch_size=16, seed=0)
    last_good = seen[-1]
    for key, value in model.state_dict().items():
        assert torch.equal(value, last_good[key]), key
        assert torch.isfinite(value).all()


def test_one_loss_and_steps_forms_agree_for_a_single_step():
    data = _data()
    first, second = _TwoPlayers(), _TwoPlayers()
    one = fit_model(first, data, loss=_generator_loss, n_epochs=2, batch_size=16, seed=1)
    step = Step("generator", _generator_loss)
    many = fit_model(second, data, steps=[step], n_epochs=2, batch_size=16, seed=1)
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key
    assert [h["train_loss"] for h in one] == [h["losses"]["generator"] for h in many]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "either loss or steps"),
        (dict(loss=_generator_loss, steps=[Step("g", _generator_loss)]), "either loss or steps"),
        (dict(steps=[]), "at least one"),
        (dict(steps=[Step("g", _generator_loss), Step("g", _critic_loss)]), "unique"),
        (dict(steps=[Step("a/b", _generator_loss)]), "unique"),
        (dict(steps=[Step("g", _generator_loss, repeats=0)]), "repeats"),
        (dict(steps=[Step("g", _generator_loss, parameters="nope")]), "no submodule"),
        (dict(steps=[Step("g", _generator_loss, learning_rate=-1.0)]), "learning_rate"),
        (dict(steps=[Step("g", _generator_loss, optimizer="sgd", betas=(0.5, 0.9))]), "betas"),
    ],
)
def test_bad_steps_raise_data_error(kwargs, message):
    with pytest.raises(DataError, match=message):
        fit_model(_TwoPlayers(), _data(), n_epochs=1, **kwargs)


def test_old_setting_names_warn_and_still_apply():
    with pytest.warns(DeprecationWarning, match="'n_epochs'"):
        history = fit_model(_TwoPlayers(), _data(), loss=_generator_loss, epochs=2, seed=0)
    assert len(history) == 2
    with pytest.warns(DeprecationWarning, match="'learning_rate'"):
        history = fit_model(_TwoPlayers(), _data(), loss=_generator_loss, n_epochs=1, lr=0.25)
    assert history[0]["lr"] == 0.25
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        fit_model(_TwoPlayers(), _data(), loss=_generator_loss, n_epochs=1, learning_rate=0.1)
