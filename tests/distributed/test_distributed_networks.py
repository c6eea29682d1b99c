"""Bayesian-network parameter learning on 2 processes (gloo) equals the single-process fit."""

from __future__ import annotations

import distributed_workers as workers
import numpy as np
import torch

from probgen import distributed
from probgen.networks import BayesianNetwork


def _jobs():
    truth = BayesianNetwork.from_example("asia")
    frame = truth.sample(400, seed=0, as_frame=True)
    holes = np.random.default_rng(0).random(frame.shape) < 0.15
    with_missing = frame.mask(holes)
    # A state seen only in the second half of the rows (rank 1's shard): the ranks must agree
    # on the states they infer from their rows.
    rare = frame.copy()
    rare.loc[rare.index[-3:], "smoke"] = "sometimes"
    edges = truth.edges
    return [
        (with_missing, {"edges": edges, "states": truth.states, "max_iter": 6, "tol": 0.0}),
        (with_missing, {"edges": edges, "max_iter": 4, "tol": 0.0, "method": "bayes"}),
        (rare, {"edges": edges}),  # complete data: one counting pass
        (
            frame.drop(columns="either"),  # a latent variable
            {
                "edges": edges,
                "latent": {"either": ["no", "yes"]},
                "max_iter": 5,
                "tol": 0.0,
                "seed": 1,
            },
        ),
    ]


def test_two_processes_learn_the_single_process_tables():
    jobs = _jobs()
    ranks = distributed.spawn_local(workers.fit_networks, 2, args=(jobs,), deadline=120)
    for index, (frame, settings) in enumerate(jobs):
        model = BayesianNetwork(**settings).fit(frame)
        fit0, fit1 = ranks[0][index], ranks[1][index]
        assert fit0["states"] == fit1["states"] == model.states
        assert fit0["history"] == fit1["history"]
        assert len(fit0["history"]) == len(model.history_)
        for ours, theirs in zip(fit0["history"], model.history_):
            assert abs(ours["log_likelihood"] - theirs["log_likelihood"]) < 1e-9
        for name, value in model.state_dict().items():
            assert torch.equal(fit0["state"][name], fit1["state"][name])
            torch.testing.assert_close(fit0["state"][name], value, rtol=0, atol=1e-10)
