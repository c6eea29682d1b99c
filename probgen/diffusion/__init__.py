"""Diffusion models (DDPM/DDIM) with honest variational likelihood bounds.

`Diffusion` (model.py) is the model; the pure tensor pieces are `schedules` (linear and cosine
noise schedules), `bound` (the bound's KL and decoder terms), `sampling` (DDPM and DDIM),
`ode` (probability-flow ODE log-likelihood) and `networks` (time-conditioned MLP and U-Net).

Example:
    >>> from probgen.diffusion import Diffusion
    >>> Diffusion((2,), n_steps=10).log_prob_kind.value
    'lower_bound'
"""

from probgen.diffusion.model import Diffusion

__all__ = ["Diffusion"]
