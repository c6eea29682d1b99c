"""Functions the 2-process HMM and RBM tests run on every rank (`spawn_local` pickles them by
name, so they live in a module of their own)."""

from __future__ import annotations

from typing import Any

import torch

from probgen import distributed


def shard_list(items: list[Any]) -> list[Any]:
    """This rank's contiguous block of a list (whole sequences: a split by sequence)."""
    rows = distributed.shard_indices(len(items))
    return items[rows.start : rows.stop]


def fit_hmm(sequences: list[Any], config: dict[str, Any], states: list[Any] | None) -> Any:
    """One HMM fit (float64) on `sequences`, the whole list or this rank's part of it."""
    from probgen.hmm import HMM

    model = HMM(**config).double()
    return model.fit(sequences, states=states)


def hmm_record(model: Any) -> dict[str, Any]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return {"state": state, "history": model.history_, "n_symbols": model.n_symbols}


def fit_hmms(jobs: list[tuple[list[Any], dict[str, Any], list[Any] | None]]) -> list[Any]:
    """Fit one HMM per (sequences, config, states) on this rank's sequences."""
    fits = []
    for sequences, config, states in jobs:
        labels = None if states is None else shard_list(states)
        fits.append(hmm_record(fit_hmm(shard_list(sequences), config, labels)))
    return fits


def hmm_helpers() -> dict[str, Any]:
    """The agreement helpers of `probgen.hmm.sharded`, as seen by one rank."""
    from probgen.hmm import sharded

    me = distributed.rank()
    return {
        "steps": sharded.summed_count(10 + me),
        "total": sharded.reduced_total(0.5 + me),
        "all_true": sharded.all_ranks(True),
        "one_false": sharded.all_ranks(me == 0),
        "seed": sharded.agree_on_seed(None),
        "given_seed": sharded.agree_on_seed(7),
    }


def fit_hmms_and_helpers(jobs: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """`fit_hmms(jobs)` and `hmm_helpers()` in one launch (process start-up is the cost)."""
    return fit_hmms(jobs), hmm_helpers()


def fit_boltzmann(kind: str, settings: dict[str, Any], data: torch.Tensor,
                  validation: torch.Tensor | None) -> Any:
    """One RBM or BoltzmannMachine fit (float64) on `data` (all rows, or this rank's)."""
    from probgen.boltzmann import RBM, BoltzmannMachine

    if kind == "rbm":
        model = RBM(**settings).double()
        return model.fit(data, validation_data=validation)
    return BoltzmannMachine(**settings).double().fit(data)


def boltzmann_record(model: Any) -> dict[str, Any]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in model.history_]
    return {"state": state, "history": history}


def fit_boltzmanns(jobs: list[tuple[str, dict[str, Any], torch.Tensor, Any]]) -> list[Any]:
    """Fit one model per (kind, settings, data, validation) on this rank's rows."""
    fits = []
    for kind, settings, data, validation in jobs:
        held = None if validation is None else distributed.shard(validation)
        fits.append(boltzmann_record(fit_boltzmann(kind, settings, distributed.shard(data), held)))
    return fits
