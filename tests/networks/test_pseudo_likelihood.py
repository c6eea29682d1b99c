"""MarkovNetwork fitting: the pseudo-likelihood objective is the pseudo-likelihood.

Recovering a generating model does not tell the two objectives apart (both are consistent),
so this fits a misspecified model (pairwise factors on data with a three-way interaction,
few rows), where their optima differ, and checks each fit against a brute-force objective
computed here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probgen.networks.markovnet import MarkovNetwork

SCOPES = [["x", "y"], ["y", "z"], ["x", "z"], ["z"]]
L2 = 1e-3


def triple_data() -> torch.Tensor:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, 60)
    y = rng.integers(0, 3, 60)
    z = ((x + y) % 2 == 0).astype(int) ^ (rng.random(60) < 0.15)
    return torch.as_tensor(np.stack([x, y, z], axis=1), dtype=torch.long)


def objectives(model: MarkovNetwork, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalised mean negative log pseudo-likelihood, penalised mean negative log-likelihood)."""
    support = model.enumerate_support()
    log_z = torch.logsumexp(model.unnormalized_log_prob(support), 0)
    penalty = L2 * sum((p**2).sum() for p in model.log_potentials)
    own = model.unnormalized_log_prob(data)
    pseudo = torch.zeros((), dtype=torch.float64)
    for j, card in enumerate(model.cardinalities):
        options = []
        for s in range(card):
            changed = data.clone()
            changed[:, j] = s
            options.append(model.unnormalized_log_prob(changed))
        pseudo = pseudo - (own - torch.logsumexp(torch.stack(options, 1), 1)).mean()
    exact = -(own - log_z).mean()
    return pseudo + penalty, exact + penalty


def gradient_norm(model: MarkovNetwork, value: torch.Tensor) -> float:
    grads = torch.autograd.grad(value, list(model.log_potentials), retain_graph=True)
    return float(torch.cat([g.reshape(-1) for g in grads]).norm())


def fitted(objective: str, data: torch.Tensor) -> MarkovNetwork:
    states = {"x": ["0", "1"], "y": ["0", "1", "2"], "z": ["0", "1"]}
    model = MarkovNetwork(
        scopes=SCOPES, states=states, objective=objective, l2=L2, max_iter=400, tol=1e-12
    )
    return model.fit(data)


def test_pseudo_likelihood_fit_optimises_the_pseudo_likelihood():
    data = triple_data()
    pseudo_fit, exact_fit = fitted("pseudo_likelihood", data), fitted("likelihood", data)
    pseudo_at_pl, exact_at_pl = objectives(pseudo_fit, data)
    pseudo_at_ml, exact_at_ml = objectives(exact_fit, data)
    # each fit is a stationary point of its own objective (computed here by brute force) ...
    assert gradient_norm(pseudo_fit, pseudo_at_pl) < 1e-5
    assert gradient_norm(exact_fit, exact_at_ml) < 1e-5
    # ... and not of the other one: the two optima differ on this data
    assert gradient_norm(pseudo_fit, exact_at_pl) > 3e-4
    assert gradient_norm(exact_fit, pseudo_at_ml) > 3e-4
    assert float(pseudo_at_pl.detach()) < float(pseudo_at_ml.detach()) - 1e-6
    assert float(exact_at_ml.detach()) < float(exact_at_pl.detach()) - 1e-6
    # the recorded objective is the penalised pseudo-likelihood at the returned parameters
    assert pseudo_fit.history_[-1]["objective"] == pytest.approx(
        float(pseudo_at_pl.detach()), abs=1e-9
    )
    assert exact_fit.history_[-1]["objective"] == pytest.approx(
        float(exact_at_ml.detach()), abs=1e-9
    )
