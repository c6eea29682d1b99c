"""Shared helpers of the diffusion tests: the recipe's 2-D mixture and its exact noise predictor."""

from __future__ import annotations

import torch
from probgen.recipes import diffusion_gaussians
from torch import nn

from probgen.diffusion import Diffusion


class MixtureOracle(nn.Module):
    """eps*(x_t, t) = -sqrt(1 - alpha_bar) grad log p_t(x_t): the mixture's exact predictor.

    `scale` < 1 shrinks the prediction: a wrong network, for the negative controls.
    """

    def __init__(self, model: Diffusion, scale: float = 1.0) -> None:
        super().__init__()
        self.schedule = model.noise_schedule
        self.n_steps = model.n_steps
        self.scale = scale
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        s = (t.double() + 1) / self.n_steps
        alpha_bar = self.schedule.log_alpha_bar(s).exp()
        # Keep the graph to x when the caller differentiates (the ODE's divergence).
        tracked = x.requires_grad
        with torch.enable_grad():
            y = x.double() if tracked else x.detach().double().requires_grad_(True)
            log_p = diffusion_gaussians.true_log_prob(y, alpha_bar)
            (score,) = torch.autograd.grad(log_p.sum(), y, create_graph=tracked)
        eps = -self.scale * (1 - alpha_bar).sqrt()[:, None] * score
        return eps.to(x.dtype), None


def oracle_model(n_steps: int, schedule: str = "linear", scale: float = 1.0, **settings):
    """A float64 Diffusion marked fitted whose network is the mixture's exact predictor."""
    model = Diffusion((2,), n_steps=n_steps, schedule=schedule, standardize=False, **settings)
    model = model.double()
    model.denoiser = MixtureOracle(model, scale)
    model._mark_fitted()
    return model


def mixture(n: int, split: str = "test") -> torch.Tensor:
    return diffusion_gaussians.data(split, n=n).double()


def true_log_prob(x: torch.Tensor) -> torch.Tensor:
    return diffusion_gaussians.true_log_prob(x)
