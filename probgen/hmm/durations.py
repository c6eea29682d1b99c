"""State-duration distributions of hidden semi-Markov models, on 1..max_duration.

Three families, each a pmf per state over the durations 1..max_duration:

- ``"nonparametric"``: the pmf itself (the m-step counts expected durations);
- ``"poisson"``: d - 1 ~ Poisson(rate), truncated to 1..max_duration and renormalised;
- ``"negative_binomial"``: d - 1 ~ NegativeBinomial(count, prob) (pmf
  C(k + count - 1, k) prob^k (1 - prob)^count), truncated and renormalised.

The parametric m-steps maximise the expected complete log-likelihood of the truncated pmf
numerically (L-BFGS from the current parameters, kept only when it improves), so EM stays
monotone. Right-censored durations (the last segment of a sequence, which only shows that the
duration is at least its observed length) are expanded into expected complete durations
under the current pmf first: the exact e-step for the duration.

Example:
    >>> import torch
    >>> pmf = duration_pmf("poisson", torch.tensor([[2.0, 0.0]]), 5)
    >>> pmf.shape, round(float(pmf.sum()), 6)
    (torch.Size([1, 5]), 1.0)
"""

from __future__ import annotations

import math

import torch

from probgen.core.errors import DataError

DURATION_FAMILIES = ("nonparametric", "poisson", "negative_binomial")


def duration_pmf(family: str, parameters: torch.Tensor, max_duration: int) -> torch.Tensor:
    """The (n_states, max_duration) pmf over 1..max_duration of a parametric family.

    Args:
        family: ``"poisson"`` (parameters[:, 0] = rate) or ``"negative_binomial"``
            (parameters[:, 0] = count > 0, parameters[:, 1] = prob in (0, 1)).
        parameters: (n_states, 2).
        max_duration: largest duration.
    """
    return _log_pmf(family, parameters, max_duration).exp()


def _log_pmf(family: str, parameters: torch.Tensor, max_duration: int) -> torch.Tensor:
    k = torch.arange(max_duration, dtype=parameters.dtype, device=parameters.device)
    if family == "poisson":
        rate = parameters[:, :1]
        logits = k * rate.log() - torch.lgamma(k + 1)
        logits = torch.where(k == 0, torch.zeros_like(logits), logits)  # 0 * log 0 = 0
    elif family == "negative_binomial":
        count, prob = parameters[:, :1], parameters[:, 1:2]
        logits = (
            torch.lgamma(k + count)
            - torch.lgamma(count)
            - torch.lgamma(k + 1)
            + k * prob.log()
            + count * torch.log1p(-prob)
        )
    else:  # pragma: no cover - checked by the model
        raise DataError(f"duration must be one of {DURATION_FAMILIES}, got {family!r}")
    return logits - torch.logsumexp(logits, -1, keepdim=True)


def survival(pmf: torch.Tensor) -> torch.Tensor:
    """P(duration >= d) for d = 1..max_duration, shape of `pmf`.

    Example:
        >>> survival(torch.tensor([[0.5, 0.25, 0.25]])).tolist()
        [[1.0, 0.5, 0.25]]
    """
    return pmf.flip(-1).cumsum(-1).flip(-1)


def expected_durations(
    pmf: torch.Tensor, complete: torch.Tensor, censored: torch.Tensor
) -> torch.Tensor:
    """Expected counts of each duration, the censored ones expanded under `pmf`.

    A segment censored at observed length d has duration d' >= d with probability
    pmf(d') / P(duration >= d).

    Args:
        pmf: (n_states, max_duration).
        complete: (n_states, max_duration) expected numbers of complete segments.
        censored: (n_states, max_duration) expected numbers of censored segments.

    Example:
        >>> expected_durations(torch.tensor([[0.5, 0.5]]), torch.zeros(1, 2),
        ...                    torch.tensor([[1.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    tail = survival(pmf)
    ratio = torch.where(censored > 0, censored / tail.clamp_min(1e-300), torch.zeros_like(tail))
    return complete + pmf * ratio.cumsum(-1)


def initial_parameters(
    family: str, n_states: int, max_duration: int, noise: torch.Tensor
) -> torch.Tensor:
    """Starting parameters (n_states, 2) of a parametric family: mean duration about D / 4.

    Args:
        noise: (n_states,) uniforms in [0, 1) that spread the starts.
    """
    mean = max(1.0, (max_duration - 1) / 4.0) * (0.5 + noise)
    if family == "poisson":
        return torch.stack([mean, torch.zeros_like(mean)], -1)
    count = torch.full_like(mean, 2.0)
    prob = mean / (mean + count)
    return torch.stack([count, prob], -1)


def fit_parameters(
    family: str, parameters: torch.Tensor, counts: torch.Tensor, max_iter: int = 30
) -> torch.Tensor:
    """Parameters maximising sum_d counts[s, d] log pmf_s(d); the current ones if no better.

    Example:
        >>> counts = torch.zeros(1, 30, dtype=torch.float64)
        >>> counts[0, 1:4] = torch.tensor([5.0, 10.0, 5.0])  # d - 1 = 1, 2, 3
        >>> start = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        >>> round(float(fit_parameters("poisson", start, counts)[0, 0]), 3)  # their mean
        2.0
    """
    max_duration = counts.shape[-1]
    work = parameters.detach().to(torch.float64)
    target = counts.detach().to(torch.float64)
    if family == "poisson":
        free = work[:, :1].clamp_min(1e-8).log()
    else:
        free = torch.stack(
            [work[:, 0].clamp_min(1e-8).log(), torch.logit(work[:, 1].clamp(1e-8, 1 - 1e-8))], -1
        )

    def unpack(values: torch.Tensor) -> torch.Tensor:
        if family == "poisson":
            rate = values[:, 0].exp()
            return torch.stack([rate, torch.zeros_like(rate)], -1)
        return torch.stack([values[:, 0].exp(), torch.sigmoid(values[:, 1])], -1)

    def objective(values: torch.Tensor) -> torch.Tensor:
        return -(target * _log_pmf(family, unpack(values), max_duration)).sum()

    # Damped Newton on the few free parameters (torch.optim's first use costs seconds of
    # imports); the states are independent, so each has its own small Hessian.
    variable = free.clone()
    before = float(objective(free))
    current = before
    with torch.enable_grad():
        for _ in range(max_iter):
            point = variable.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(objective(point), point, create_graph=True)
            rows = [
                torch.autograd.grad(gradient[:, j].sum(), point, retain_graph=True)[0]
                for j in range(point.shape[1])
            ]
            hessian = torch.stack(rows, 1).detach()  # (S, k, k)
            gradient = gradient.detach()
            _, info = torch.linalg.cholesky_ex(hessian)
            eye = torch.eye(point.shape[1], dtype=hessian.dtype)
            fallback = (
                eye * (hessian.diagonal(dim1=-2, dim2=-1).abs().amax(-1) + 1.0)[:, None, None]
            )
            hessian = torch.where((info == 0)[:, None, None], hessian, fallback)
            step = torch.linalg.solve(hessian, gradient.unsqueeze(-1)).squeeze(-1)
            size = 1.0
            while size > 1e-6:
                trial = variable - size * step
                value = float(objective(trial))
                if math.isfinite(value) and value <= current:
                    break
                size /= 2
            else:
                break
            variable, improvement, current = trial, current - value, value
            if improvement <= 1e-12 * max(1.0, abs(current)):
                break
    after = current
    if not math.isfinite(after) or after > before:
        return parameters
    return unpack(variable.detach()).to(parameters.dtype)
