"""Metropolis-Hastings kernels vectorised over chains.

Each kernel updates a subset of the coordinates of a flat state z (num_chains, dim) for every
chain in one tensor operation, so hundreds of chains cost about as much as one call of the log
density on a batch.

- `RandomWalkKernel`: Gaussian random walk z' = z + step_size * L eps on continuous
  coordinates; during warmup the step size follows a Robbins-Monro recursion toward the target
  acceptance rate (0.44 in one dimension, 0.234 from five, interpolated between), and the
  proposal covariance L L^T is re-estimated from the pooled history of all chains at the end of
  doubling windows (with Stan's shrinkage toward a small multiple of the identity).
- `IndependenceKernel`: proposals from a fixed distribution q (by default a Gaussian fitted to
  the pooled warmup draws, widened), accepted with the ratio p(z') q(z) / p(z) q(z').
- `MultivariateStudentT`: the heavy-tailed q fitted to all chains' pooled warmup draws that
  MH's default ("mixed") sweeps use beside the random walk.
- `DiscreteKernel`: for discrete coordinates, picks one coordinate per chain and proposes a
  different value uniformly (a flip for binary coordinates); symmetric, so the plain
  Metropolis ratio applies.

Example:
    >>> import torch
    >>> kernel = RandomWalkKernel(torch.arange(2), dtype=torch.float64)
    >>> log_density = lambda z: -0.5 * (z**2).sum(-1)
    >>> z = torch.zeros(100, 2, dtype=torch.float64)
    >>> generator = torch.Generator().manual_seed(0)
    >>> z, lp, accept = kernel.step(z, log_density(z), log_density, generator)
    >>> z.shape, accept.shape
    (torch.Size([100, 2]), torch.Size([100]))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

LogDensity = Callable[[torch.Tensor], torch.Tensor]


def target_acceptance(dim: int) -> float:
    """The usual optimal acceptance rate of a random walk in `dim` dimensions."""
    if dim <= 1:
        return 0.44
    if dim >= 5:
        return 0.234
    return 0.44 + (0.234 - 0.44) * (dim - 1) / 4


def metropolis_accept(
    z: torch.Tensor,
    log_prob: torch.Tensor,
    proposal: torch.Tensor,
    proposal_log_prob: torch.Tensor,
    log_ratio_correction: torch.Tensor | float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accept or reject proposals for every chain.

    Returns:
        (new state, new log density, acceptance probability per chain).
    """
    log_ratio = proposal_log_prob - log_prob + log_ratio_correction
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
    accept_prob = log_ratio.clamp(max=0.0).exp()
    uniform = torch.rand(log_ratio.shape, generator=generator, device=z.device, dtype=z.dtype)
    accepted = uniform < accept_prob
    new_z = torch.where(accepted[:, None], proposal, z)
    new_log_prob = torch.where(accepted, proposal_log_prob, log_prob)
    return new_z, new_log_prob, accept_prob


def shrunk_covariance(draws: torch.Tensor) -> torch.Tensor:
    """Sample covariance of pooled draws (n, d), shrunk toward 1e-3 I as Stan does."""
    n = draws.shape[0]
    centred = draws - draws.mean(0)
    covariance = centred.T @ centred / max(n - 1, 1)
    identity = torch.eye(draws.shape[1], dtype=draws.dtype, device=draws.device)
    return (n / (n + 5.0)) * covariance + 1e-3 * (5.0 / (n + 5.0)) * identity


def _safe_cholesky(covariance: torch.Tensor) -> torch.Tensor | None:
    factor, info = torch.linalg.cholesky_ex(covariance)
    return None if bool(info.any()) or not torch.isfinite(factor).all() else factor


class _MetropolisKernel:
    """Base of the kernels: one proposal per chain, accepted with the Metropolis-Hastings ratio.

    Subclasses implement `_proposal_and_correction(z, generator)`, returning the proposed
    states and the log ratio correction log q(z | z') - log q(z' | z) (zero for symmetric
    proposals).
    """

    def _proposal_and_correction(
        self, z: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        raise NotImplementedError  # pragma: no cover - every kernel overrides it

    def step(
        self,
        z: torch.Tensor,
        log_prob: torch.Tensor,
        log_density: LogDensity,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One proposal per chain; returns (z, log density, acceptance probability)."""
        proposal, correction = self._proposal_and_correction(z, generator)
        return metropolis_accept(
            z, log_prob, proposal, log_density(proposal), correction, generator
        )


class RandomWalkKernel(_MetropolisKernel):
    """Adaptive Gaussian random-walk Metropolis on coordinates `index` (see module docstring).

    Args:
        index: long tensor of the coordinates this kernel moves.
        dtype: floating dtype of the state.
        device: device of the state.
        step_size: initial step size (default 2.38 / sqrt(d), optimal for a Gaussian whose
            covariance the proposal matches).
        target_accept: acceptance rate the warmup aims at (default `target_acceptance(d)`).
        adapt_covariance: re-estimate the proposal covariance during warmup.
        dense: full covariance (True) or its diagonal only (False).
    """

    def __init__(
        self,
        index: torch.Tensor,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        step_size: float | None = None,
        target_accept: float | None = None,
        adapt_covariance: bool = True,
        dense: bool = True,
    ) -> None:
        self.index = index.to(device)
        self.size = int(index.numel())
        self.dtype = dtype
        self.device = torch.device(device)
        self.default_step = 2.38 / math.sqrt(max(self.size, 1))
        self.log_step = math.log(step_size if step_size is not None else self.default_step)
        self.target_accept = (
            target_accept if target_accept is not None else target_acceptance(self.size)
        )
        self.adapt_covariance = adapt_covariance
        self.dense = dense
        self.cholesky = torch.eye(self.size, dtype=dtype, device=self.device)
        self._adapt_count = 0
        self._history: list[torch.Tensor] = []

    @property
    def step_size(self) -> float:
        return math.exp(self.log_step)

    def propose(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(
            (z.shape[0], self.size), generator=generator, dtype=z.dtype, device=z.device
        )
        proposal = z.clone()
        if self.size <= 32:
            # Broadcast-and-sum avoids BLAS, whose thread pool costs milliseconds per tiny
            # matmul on a busy machine.
            scaled = (noise.unsqueeze(-2) * self.cholesky).sum(-1)
        else:
            scaled = noise @ self.cholesky.T
        proposal[:, self.index] = z[:, self.index] + self.step_size * scaled
        return proposal

    def _proposal_and_correction(
        self, z: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, float]:
        return self.propose(z, generator), 0.0

    # ---- warmup ----------------------------------------------------------------------------
    def adapt(
        self, iteration: int, warmup: int, z: torch.Tensor, accept_prob: torch.Tensor
    ) -> None:
        """Update step size (and covariance at window ends) after warmup step `iteration`."""
        self._adapt_count += 1
        rate = 2.0 / (self._adapt_count + 3) ** 0.6
        mean_accept = float(torch.nan_to_num(accept_prob, nan=0.0).mean())
        self.log_step += rate * (mean_accept - self.target_accept)
        self.log_step = min(max(self.log_step, -30.0), 10.0)
        if not self.adapt_covariance or self.size == 0:
            return
        self._history.append(z[:, self.index].detach().clone())
        if iteration + 1 in covariance_window_ends(warmup):
            pooled = torch.cat(self._history, dim=0)
            covariance = shrunk_covariance(pooled)
            if not self.dense:
                covariance = torch.diag(torch.diagonal(covariance))
            factor = _safe_cholesky(covariance)
            if factor is not None:
                self.cholesky = factor
                self.log_step = math.log(self.default_step)
                self._adapt_count = 0
            self._history = []

    def fitted_gaussian(self, z_history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance of pooled draws (n, dim) on this kernel's coordinates."""
        part = z_history[:, self.index]
        return part.mean(0), shrunk_covariance(part)


def covariance_window_ends(warmup: int) -> set[int]:
    """Warmup iterations after which the covariance is re-estimated.

    Like Stan: a fast initial 15% (step size only), then windows of doubling length starting at
    25 draws, the last one stretched to end at 85% of warmup; the final 15% adapts the step size
    to the last covariance.
    """
    if warmup < 20:
        return set()
    start = int(0.15 * warmup)
    stop = int(0.85 * warmup)
    ends = set()
    length = max(25, (stop - start) // 8)
    position = start
    while position + length <= stop:
        next_length = 2 * length
        if position + length + next_length > stop:
            ends.add(stop)
            break
        position += length
        ends.add(position)
        length = next_length
    if not ends and stop > start:
        ends.add(stop)
    return ends


class MultivariateStudentT:
    """Multivariate Student-t proposal fitted to pooled draws: heavier tails than the target's.

    With tails heavier than the posterior's, the ratio p / q stays bounded, so independence
    proposals from it cannot strand a chain in the tails (unlike a Gaussian fit).

    Args:
        loc: mean (d,).
        covariance: scale matrix (d, d) (the draws' covariance times the squared widening).
        df: degrees of freedom (a positive integer).
    """

    def __init__(self, loc: torch.Tensor, covariance: torch.Tensor, df: int = 5) -> None:
        self.loc = loc
        self.scale_tril = torch.linalg.cholesky(covariance)
        self.df = float(int(df))
        dim = loc.shape[-1]
        self._log_norm = (
            math.lgamma(0.5 * (self.df + dim))
            - math.lgamma(0.5 * self.df)
            - 0.5 * dim * math.log(self.df * math.pi)
            - torch.diagonal(self.scale_tril).log().sum()
        )

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` draws using only `generator` (reproducible runs)."""
        dim = self.loc.shape[-1]
        like = self.loc
        normal = torch.randn(
            (count, dim), generator=generator, dtype=like.dtype, device=like.device
        )
        # chi-square(df) as a sum of df squared normals: torch's gamma sampler takes no generator
        chi2 = torch.randn(
            (count, int(self.df)), generator=generator, dtype=like.dtype, device=like.device
        ).pow(2).sum(-1)
        scale = (self.df / chi2.clamp_min(1e-300)).sqrt()
        return self.loc + scale[:, None] * (normal @ self.scale_tril.T)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log density at `value` (..., d)."""
        centred = (value - self.loc).unsqueeze(-1)
        solved = torch.linalg.solve_triangular(self.scale_tril, centred, upper=False)
        mahalanobis = solved.squeeze(-1).pow(2).sum(-1)
        dim = self.loc.shape[-1]
        return self._log_norm - 0.5 * (self.df + dim) * torch.log1p(mahalanobis / self.df)


class IndependenceKernel(_MetropolisKernel):
    """Independence Metropolis-Hastings on coordinates `index` with proposal `proposal`.

    Args:
        index: coordinates moved.
        proposal: a torch distribution with event shape (len(index),); `sample` and `log_prob`
            are used (sampling draws standard normals from the generator when it is a
            `MultivariateNormal`, so runs are reproducible).
    """

    def __init__(self, index: torch.Tensor, proposal: torch.distributions.Distribution) -> None:
        self.index = index
        self.proposal = proposal
        self.step_size = float("nan")

    def _draw(self, count: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        if isinstance(self.proposal, MultivariateStudentT):
            return self.proposal.draw(count, generator)
        if isinstance(self.proposal, torch.distributions.MultivariateNormal):
            noise = torch.randn(
                (count, self.index.numel()),
                generator=generator,
                dtype=like.dtype,
                device=like.device,
            )
            return self.proposal.loc + noise @ self.proposal.scale_tril.T
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
            return self.proposal.sample((count,)).to(like.dtype)

    def _proposal_and_correction(
        self, z: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One independent proposal per chain, and the ratio q(z) / q(z') in logs."""
        proposal = z.clone()
        proposal[:, self.index] = self._draw(z.shape[0], generator, z)
        correction = self.proposal.log_prob(z[:, self.index]) - self.proposal.log_prob(
            proposal[:, self.index]
        )
        return proposal, correction


class DiscreteKernel(_MetropolisKernel):
    """Symmetric single-coordinate moves for discrete coordinates.

    Each chain picks one of `index` uniformly and moves it to one of its other values chosen
    uniformly (a flip for a binary coordinate).

    Args:
        index: discrete coordinates.
        cardinality: number of values of each of them (long, same length).
        low: smallest value of each of them (long, same length).
    """

    def __init__(self, index: torch.Tensor, cardinality: torch.Tensor, low: torch.Tensor) -> None:
        self.index = index
        self.cardinality = cardinality
        self.low = low
        self.step_size = float("nan")

    def _proposal_and_correction(
        self, z: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, float]:
        num_chains = z.shape[0]
        pick = torch.randint(
            0, self.index.numel(), (num_chains,), generator=generator, device=z.device
        )
        coordinate = self.index.to(z.device)[pick]
        count = self.cardinality.to(z.device)[pick]
        low = self.low.to(z.device)[pick]
        shift = (
            1
            + torch.floor(
                torch.rand(num_chains, generator=generator, device=z.device, dtype=z.dtype)
                * (count - 1).to(z.dtype)
            ).long()
        )
        rows = torch.arange(num_chains, device=z.device)
        current = z[rows, coordinate].round().long() - low
        proposal = z.clone()
        proposal[rows, coordinate] = (low + (current + shift) % count).to(z.dtype)
        return proposal, 0.0
