"""The invertible layers of `Flow`: a feature flip, MAF steps, rational-quadratic splines.

Pyro's transforms are used as they are where they fit; these classes change only the
direction (MAF scoring rather than IAF), the dtype handling of the inversion, and the spline
arithmetic (`probgen.deep.splines.rational_quadratic_spline`), keeping Pyro's module names so
that state dicts match Pyro's own layers.

Example:
    >>> import torch
    >>> from probgen.deep.flow_layers import _Flip
    >>> _Flip()(torch.tensor([1.0, 2.0, 3.0])).tolist()
    [3.0, 2.0, 1.0]
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pyro.distributions.transforms as T
import torch
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.transforms.spline import ConditionalSpline, ConditionedSpline
from torch.distributions import transforms as torch_transforms

from probgen.deep.splines import rational_quadratic_spline


class _Flip(torch_transforms.Transform):
    """Reverse the feature order (a permutation with unit Jacobian), so that every feature is
    transformed by the next coupling layer and autoregressive orders alternate."""

    bijective = True
    volume_preserving = True
    domain = torch.distributions.constraints.real_vector
    codomain = torch.distributions.constraints.real_vector

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Flip)

    def __hash__(self) -> int:
        return hash(_Flip)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[:-1])


class _MaskedAffineStep(torch_transforms.Transform):
    """One MAF layer: the inverse of Pyro's `AffineAutoregressive` (an IAF layer).

    Scoring (`_inverse`) is the IAF's fast forward pass. Sampling (`_call`) inverts it one
    feature at a time; it is written here rather than taken from `layer.inv` because Pyro's
    own inversion builds its buffers in the default dtype and fails in float64.
    """

    bijective = True
    domain = torch.distributions.constraints.real_vector
    codomain = torch.distributions.constraints.real_vector

    def __init__(self, layer: Any) -> None:
        super().__init__(cache_size=0)
        self.layer = layer

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        columns = [torch.zeros_like(z[..., 0])] * z.shape[-1]
        for index in layer.arn.permutation.tolist():
            mean, log_scale = layer.arn(torch.stack(columns, dim=-1))
            log_scale = log_scale[..., index].clamp(
                layer.log_scale_min_clip, layer.log_scale_max_clip
            )
            columns[index] = (z[..., index] - mean[..., index]) * torch.exp(-log_scale)
        return torch.stack(columns, dim=-1)

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def log_abs_det_jacobian(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.layer.log_abs_det_jacobian(x, z)


def _scoring_direction(layer: Any) -> Any:
    """The density-estimation direction of a Pyro autoregressive layer (MAF, not IAF)."""
    if isinstance(layer, T.AffineAutoregressive):
        return _MaskedAffineStep(layer)
    return layer.inv


class _ConditionalInverse(ConditionalTransform):
    """The scoring direction of a conditional autoregressive layer, once conditioned."""

    def __init__(self, layer: ConditionalTransform) -> None:
        self.layer = layer

    def condition(self, context: torch.Tensor) -> torch_transforms.Transform:
        return _scoring_direction(self.layer.condition(context))


class _QuadraticSpline(ConditionedSpline):
    """Pyro's conditioned spline, with `rational_quadratic_spline` doing the arithmetic.

    `_params` gives the packed unconstrained parameters (*batch, dim, 3 K - 1); Pyro's
    caching and log-determinant bookkeeping are inherited unchanged.
    """

    def __init__(self, params: Any, bound: float) -> None:
        super().__init__(params, bound=bound, order="quadratic")

    def spline_op(self, x: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, ...]:
        params = self._params() if callable(self._params) else self._params
        return rational_quadratic_spline(x, params, bound=self.bound, inverse=inverse)


class _ConditionalQuadraticSpline(ConditionalSpline):
    """Pyro's `ConditionalSpline` fed by an autoregressive network, for rational-quadratic
    splines: the network's (widths, heights, derivatives), each (*batch, n, dim), are packed
    once into a contiguous (*batch, dim, 3 K - 1) block (Pyro normalises transposed views)."""

    def _packed_params(self, context: torch.Tensor) -> torch.Tensor:
        widths, heights, derivatives = self.nn(context)
        return torch.cat((widths.mT, heights.mT, derivatives.mT), dim=-1)

    def condition(self, context: torch.Tensor) -> _QuadraticSpline:
        return _QuadraticSpline(partial(self._packed_params, context), bound=self.bound)


class _QuadraticSplineAutoregressive(T.SplineAutoregressive):
    """Pyro's `SplineAutoregressive` (order "quadratic") with the leaner spline arithmetic.

    The modules and their names are Pyro's (`arn`, `spline.nn`), so state dicts are
    interchangeable with `T.SplineAutoregressive`.
    """

    def __init__(self, input_dim: int, autoregressive_nn: Any, count_bins: int, bound: float):
        super().__init__(
            input_dim, autoregressive_nn, count_bins=count_bins, bound=bound, order="quadratic"
        )
        self.spline = _ConditionalQuadraticSpline(
            autoregressive_nn, input_dim, count_bins, bound, "quadratic"
        )


class _ConditionalQuadraticSplineAutoregressive(T.ConditionalSplineAutoregressive):
    """Pyro's `ConditionalSplineAutoregressive` (order "quadratic") whose conditioned layers
    use the leaner spline arithmetic."""

    def condition(self, context: torch.Tensor) -> _QuadraticSplineAutoregressive:
        # As Pyro's `condition`, returning the leaner layer.
        network = partial(self.nn, context=context)
        network.permutation = network.func.permutation  # type: ignore[attr-defined]
        network.get_permutation = network.func.get_permutation  # type: ignore[attr-defined]
        return _QuadraticSplineAutoregressive(
            self.input_dim, network, self.kwargs["count_bins"], self.kwargs["bound"]
        )
