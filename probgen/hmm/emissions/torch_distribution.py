"""Any torch (or Pyro) distribution batched over the hidden states, fitted by gradient.

Example:
    >>> import torch
    >>> from probgen.hmm.emissions.torch_distribution import TorchDistributionEmission
    >>> template = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    >>> TorchDistributionEmission.from_distribution(template).log_prob(torch.zeros(4)).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn
from torch.distributions import biject_to

from probgen.core.errors import DataError
from probgen.hmm.emissions.base import (
    Emission,
)

_ALLOWED_DISTRIBUTION_MODULES = ("torch.distributions.", "pyro.distributions.")


class TorchDistributionEmission(Emission):
    """Any torch distribution whose batch shape is (n_states,), fitted by gradient ascent.

    The distribution's parameters (those named in its `arg_constraints`) become unconstrained
    `nn.Parameter`s mapped through `torch.distributions.biject_to`, so any optimiser can fit
    them; the distribution is rebuilt from them on every call.

    Example:
        >>> template = torch.distributions.StudentT(4.0, torch.tensor([-1.0, 1.0]), torch.ones(2))
        >>> emission = TorchDistributionEmission.from_distribution(template)
        >>> emission.log_prob(torch.zeros(3)).shape
        torch.Size([3, 2])
    """

    family = "torch"
    supports_em = False

    def __init__(
        self,
        n_states: int,
        distribution_class: str,
        parameter_shapes: dict[str, list[int]],
        event_shape: list[int],
    ) -> None:
        super().__init__(n_states)
        self.distribution_class = distribution_class
        self.parameter_shapes = {k: list(v) for k, v in parameter_shapes.items()}
        self.event_shape = torch.Size(event_shape)
        self._class = _import_distribution_class(distribution_class)
        self.unconstrained = nn.ParameterDict()
        constraints = self._class.arg_constraints
        for name, shape in self.parameter_shapes.items():
            if name not in constraints:
                raise DataError(f"{distribution_class} has no parameter {name!r}")
            self.unconstrained[name] = nn.Parameter(torch.zeros(shape))

    @classmethod
    def from_distribution(
        cls, template: torch.distributions.Distribution
    ) -> TorchDistributionEmission:
        """Wrap `template` (batch shape (n_states,)); its parameter values are the start."""
        if not isinstance(template, torch.distributions.Distribution):
            raise DataError(
                f"emission must be a family name or a torch distribution, got {template!r}"
            )
        if len(template.batch_shape) != 1:
            raise DataError(
                f"emission distribution must have batch shape (n_states,), got "
                f"{tuple(template.batch_shape)}"
            )
        distribution_class = f"{type(template).__module__}.{type(template).__qualname__}"
        values = _distribution_parameters(template)
        unconstrained = {}
        for name, value in values.items():
            constraint = type(template).arg_constraints[name]
            unconstrained[name] = biject_to(constraint).inv(value.detach())
        emission = cls(
            int(template.batch_shape[0]),
            distribution_class,
            {name: list(value.shape) for name, value in unconstrained.items()},
            list(template.event_shape),
        )
        with torch.no_grad():
            for name, value in unconstrained.items():
                emission.unconstrained[name].copy_(value)
        return emission.to(next(iter(values.values())).dtype)

    def constrained_parameters(self) -> dict[str, torch.Tensor]:
        """The distribution's parameters in their natural (constrained) space."""
        constraints = self._class.arg_constraints
        return {
            name: biject_to(constraints[name])(value) for name, value in self.unconstrained.items()
        }

    def distribution(
        self, index: torch.Tensor | None = None, *, library: Any = torch.distributions
    ) -> torch.distributions.Distribution:
        parameters = self.constrained_parameters()
        if index is not None:
            parameters = {
                name: value[index] if value.dim() > 0 else value
                for name, value in parameters.items()
            }
        cls = self._class
        if library is not torch.distributions:
            cls = getattr(library, cls.__name__, cls)
        return cls(**parameters, validate_args=False)

    def log_prob(self, values: torch.Tensor) -> torch.Tensor:
        event_dims = len(self.event_shape)
        expanded = values.unsqueeze(values.dim() - event_dims)
        return self.distribution().log_prob(expanded)

    def statistics(self, values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError("custom emissions are fitted by gradient, not EM")

    def m_step(self, statistics: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError("custom emissions are fitted by gradient, not EM")

    def initialize(self, values: torch.Tensor, generator: torch.Generator) -> None:
        """The template's parameters are the starting point; nothing to do."""

    def perturb(self, generator: torch.Generator, scale: float = 0.1) -> None:
        with torch.no_grad():
            for value in self.unconstrained.values():
                noise = torch.randn(value.shape, generator=generator, device=generator.device)
                value.add_(scale * noise.to(value))

    def n_parameters(self) -> int:
        return sum(int(value.numel()) for value in self.unconstrained.values())

    def config(self) -> dict[str, Any]:
        return {
            "emission": {
                "torch_distribution": self.distribution_class,
                "parameter_shapes": self.parameter_shapes,
                "event_shape": list(self.event_shape),
            }
        }


def _distribution_parameters(
    template: torch.distributions.Distribution,
) -> dict[str, torch.Tensor]:
    """The parameters the template was built with (logits preferred over probs)."""
    present = {
        name: getattr(template, name)
        for name in type(template).arg_constraints
        if name in vars(template) and isinstance(vars(template)[name], torch.Tensor)
    }
    if "logits" in present and "probs" in present:
        present.pop("probs")
    if not present:
        raise DataError(f"could not read the parameters of {type(template).__name__}")
    for name in present:
        constraint = type(template).arg_constraints[name]
        if torch.distributions.constraints.is_dependent(constraint):
            raise DataError(
                f"{type(template).__name__}.{name} has a data-dependent constraint; such "
                "distributions cannot be used as custom emissions"
            )
    batch = tuple(template.batch_shape)
    expanded = {}
    for name, value in present.items():
        rank = _event_rank(template, name)
        event = tuple(value.shape[value.dim() - rank :]) if rank else ()
        expanded[name] = value.expand(*batch, *event)
    return expanded


def _event_rank(template: torch.distributions.Distribution, name: str) -> int:
    constraint = type(template).arg_constraints[name]
    return int(getattr(constraint, "event_dim", 0))


def _import_distribution_class(path: str) -> type:
    if not path.startswith(_ALLOWED_DISTRIBUTION_MODULES):
        raise DataError(
            f"emission distribution {path!r} must come from torch.distributions or "
            "pyro.distributions"
        )
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise DataError(f"cannot import emission distribution {path!r}: {error}") from error
    if not (isinstance(cls, type) and issubclass(cls, torch.distributions.Distribution)):
        raise DataError(f"{path!r} is not a torch distribution class")
    return cls
