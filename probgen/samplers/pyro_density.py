"""`PyroDensity`: a Pyro model as a probgen Density over its unconstrained latent vector.

`PyroDensity(model, model_args, model_kwargs)` is a probgen `Model` of kind `unnormalized` over
the flat vector of the model's latent sites (see `probgen.samplers.pyro_potential` for how the
vector and the log density are built); its `sample` draws by MCMC through `sample_chains`. The
samplers in `probgen.samplers` take it like any other density.

Example:
    >>> import torch, pyro, pyro.distributions as dist
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(mu, sigma), obs=y)
    >>> density = PyroDensity(model, model_args=(torch.tensor([0.5, 1.5, 1.0]),))
    >>> density.event_shape, density.site_names
    (torch.Size([2]), ['mu', 'sigma'])
    >>> density.log_prob(torch.zeros(4, 2)).shape
    torch.Size([4])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from probgen.core.contract import LogProbKind, Model
from probgen.core.distributed import single_process
from probgen.samplers.chains import sample_chains
from probgen.samplers.pyro_potential import PyroPotential

__all__ = ["PyroDensity"]


class PyroDensity(PyroPotential, Model):
    """A Pyro model as an unnormalised density over its unconstrained latent vector.

    The arguments, attributes and log density are `PyroPotential`'s (this class adds the
    density contract on top); the constant is unknown (kind `unnormalized`). `fit` is a no-op:
    a posterior has nothing to fit.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        >>> density = PyroDensity(model)
        >>> values = density.constrain(torch.zeros(1, 1))
        >>> float(values["scale"][0])
        1.0
    """

    log_prob_kind = LogProbKind.UNNORMALIZED
    fitted_attributes = ()

    def __init__(
        self,
        model: Callable[..., Any],
        model_args: tuple = (),
        model_kwargs: dict[str, Any] | None = None,
        *,
        vectorize: bool | None = None,
        jit: bool = False,
        prototype_seed: int = 0,
    ) -> None:
        super().__init__(
            model,
            model_args,
            model_kwargs,
            vectorize=vectorize,
            jit=jit,
            prototype_seed=prototype_seed,
        )
        self.fitted_ = True

    def get_config(self) -> dict[str, Any]:
        # A model given as a Python callable cannot be stored as JSON; recipes subclass this
        # class with a no-argument constructor so that save/load rebuilds them.
        raise NotImplementedError(
            "a PyroDensity built from an arbitrary callable cannot be saved; subclass it with "
            "a constructor whose arguments are JSON values (as the models/ recipes do)"
        )

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Same as `unnormalized_log_prob` (the kind is `unnormalized`)."""
        return self.unnormalized_log_prob(x)

    def fit(self, data: Any = None, **options: Any) -> PyroDensity:
        """No-op (a posterior has nothing to fit); returns self."""
        self._mark_fitted()
        return self

    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        num_chains: int = 4,
        warmup: int = 500,
        **options: Any,
    ) -> torch.Tensor:
        """`n` approximate posterior draws (n, dim) in unconstrained space from vectorised MH.

        Draws come from `num_chains` chains after `warmup` adaptation steps (see
        `probgen.samplers.chains.sample_chains`); they are correlated MCMC draws, not
        independent ones.
        """
        per_chain = max(1, math.ceil(n / num_chains))
        # Each process draws its own samples: a distributed run would give them to rank 0 only.
        with single_process():
            samples = sample_chains(
                self,
                "mh",
                num_chains=num_chains,
                num_samples=per_chain,
                warmup=warmup,
                seed=0 if seed is None else seed,
                progress=False,
                **options,
            )
        assert samples is not None
        flat = torch.as_tensor(samples.unconstrained, dtype=self._value_dtype)
        # Interleave chains so that the first n draws come from every chain.
        return flat.transpose(0, 1).reshape(-1, self.dim)[:n]

