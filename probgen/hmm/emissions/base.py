"""The emission protocol of hidden Markov models and the helpers every family shares.

`Emission` is the `nn.Module` interface the HMM drives (see `probgen.hmm.emissions`); its
defaults go through `log_prob` and `statistics`, and families override the layout-aware
methods where that is faster.

Example:
    >>> from probgen.hmm.emissions.base import COVARIANCE_TYPES
    >>> COVARIANCE_TYPES
    ('diag', 'full', 'spherical', 'tied')
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from probgen.hmm.layout import (
    scale_state_major,
    states_by_steps,
)

COVARIANCE_TYPES = ("diag", "full", "spherical", "tied")


class Emission(nn.Module):
    """Base class of emission families (one parameter set per hidden state)."""

    family: ClassVar[str] = ""
    supports_em: ClassVar[bool] = True
    allows_missing: ClassVar[bool] = False
    discrete: ClassVar[bool] = False

    def __init__(self, n_states: int) -> None:
        super().__init__()
        self.n_states = n_states
        self.event_shape = torch.Size()

    # ---- what subclasses implement --------------------------------------------------------
    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        """log p(value | state) for every state: (..., *event) -> (..., n_states)."""
        raise NotImplementedError

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive sufficient statistics of `values` (N, *event) weighted by `weights` (N, S)."""
        raise NotImplementedError

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        """Set the parameters that maximise the expected complete log-likelihood (+ log prior)."""
        raise NotImplementedError

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        """Data-driven starting parameters from the observed values (N, *event)."""
        raise NotImplementedError

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        """The emission as a torch distribution with batch shape (n_states,) (or index's).

        `library` is the module the distribution classes come from: `torch.distributions`, or
        `pyro.distributions` for use inside Pyro programs.
        """
        raise NotImplementedError

    def n_parameters(self) -> int:
        """Number of free parameters (for AIC/BIC)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON constructor arguments of this family (merged into the HMM's config)."""
        return {}

    # ---- the e-step in the state-major layout (defaults; families may override) ----------
    def prepare(self, values_tm: torch.Tensor) -> Any:
        """What `scaled_probs` and `posterior_statistics` need from time-major values.

        Args:
            values_tm: (max_length, n_sequences, *event) observations (padding holds valid
                values).

        Returns:
            By default the values themselves; families precompute here, once per e-step, what
            both methods share.
        """
        return values_tm

    def prepare_key(self) -> torch.Tensor | None:
        """The parameters `prepare` depends on (None: the values alone), for caching its result.

        EM never changes them, so a fit prepares its data once per restart.
        """
        return None

    def state_outer(self, inputs: Any) -> bool:
        """Whether the e-step's arrays for these prepared inputs should be stored state-outer.

        State-outer storage (`probgen.hmm.inference.state_major_empty`) turns sums over all
        steps into single matrix products, at a small cost to the time-step loops; families
        whose `scaled_probs` and `posterior_statistics` are such products choose it.
        """
        return False

    def scaled_probs(
        self, inputs: Any, mask_tm: torch.Tensor | None, *, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step scaled emission probabilities (max_length, n_states, n_sequences).

        Args:
            inputs: what `prepare` returned.
            mask_tm: (max_length, n_sequences) bool, False on padded steps; None when all
                steps are real.
            out: an optional (max_length, n_states, n_sequences) buffer to write them into.

        Returns:
            `(emission_probs, log_offsets)` as from `probgen.hmm.inference.scale_state_major`:
            padded steps are neutral.
        """
        log_probs = self.log_prob(inputs).transpose(1, 2)
        log_probs = log_probs.contiguous() if out is None else out.copy_(log_probs)
        return scale_state_major(log_probs, mask_tm)

    def posterior_statistics(
        self, inputs: Any, posteriors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """`statistics` of every step weighted by state-major posteriors (T, n_states, B).

        The posteriors are zero on padded steps, so those steps add nothing.
        """
        values = inputs.reshape(-1, *self.event_shape)
        # (T * B, S) in the time-major order of `values`: the transpose of a view when the
        # posteriors are stored state-outer, so `weights.t() @ ...` is a plain matrix product.
        weights = states_by_steps(posteriors).t()
        return self.statistics(values, weights)

    # ---- shared defaults -----------------------------------------------------------------
    def log_prior(self) -> torch.Tensor:
        """Log prior density (up to a constant) that the m-step's regularisers maximise."""
        return torch.zeros((), dtype=self._float_dtype(), device=self._device())

    def sample(self, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One observation per entry of `states` (long tensor) -> (*states.shape, *event)."""
        flat = states.reshape(-1)
        draws = _sample_with_generator(self.distribution(flat), generator)
        return draws.reshape(*states.shape, *self.event_shape)

    def perturb(self, generator: torch.Generator, scale: float = 0.1) -> None:
        """Random change of the parameters, for restarts of gradient fitting (no-op for EM)."""

    def _device(self) -> torch.device:
        for tensor in self.buffers():
            return tensor.device
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def _float_dtype(self) -> torch.dtype:
        for tensor in list(self.buffers()) + list(self.parameters()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()


def _sample_with_generator(
    distribution: torch.distributions.Distribution, generator: torch.Generator
) -> torch.Tensor:
    """Draw from a torch distribution with randomness taken only from `generator`.

    torch distributions draw from the global generator; a forked RNG state seeded from
    `generator` keeps the draw reproducible without touching the caller's global state.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    device = generator.device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        return distribution.sample()


def _uniform(shape: torch.Size, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, dtype=dtype, generator=generator, device=generator.device)


def _normalize(values: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Rows of `values` normalised; rows that sum to zero keep `fallback`'s row."""
    total = values.sum(-1, keepdim=True)
    normalised = values / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, normalised, fallback)
