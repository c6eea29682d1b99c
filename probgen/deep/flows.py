"""Normalizing flows built from `pyro.distributions.transforms`: `Flow`.

A flow maps a standard normal base variable through invertible layers to the data space and
scores data exactly with the change-of-variables formula. Layers come from Pyro:

- ``"realnvp"``: affine coupling layers (`affine_coupling`), reversing the features between
  layers;
- ``"maf"``: masked affine autoregressive layers. Pyro's `AffineAutoregressive` is fast in the
  sampling direction (an IAF); a density estimator needs the fast direction for scoring, so
  each layer is used through `.inv` (a MAF: one network pass per `log_prob`, `dim` passes per
  sample);
- ``"nsf"``: rational-quadratic spline autoregressive layers (neural spline flow), also through
  `.inv`; Pyro's `SplineAutoregressive` with its spline arithmetic replaced by the leaner
  `probgen.deep.splines.rational_quadratic_spline` (same values to rounding);
  ``"nsf_coupling"`` uses Pyro's (rational-linear) spline coupling layers instead;
- optional batch normalisation between layers.

Conditional flows (`context_dim`) use Pyro's conditional transforms. For image or integer data
(`n_levels` set) the flow adds uniform dequantisation noise while fitting and can model the
data in logit space (`preprocessing="logit"`); `log_prob` then returns the dequantised bound
E_u[log p(x + u)] <= log P(x), reported as `LogProbKind.LOWER_BOUND`. Otherwise `log_prob` is
exact (`LogProbKind.EXACT`).

Example:
    >>> import torch
    >>> from probgen.deep.flows import Flow
    >>> x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    >>> flow = Flow(2, kind="realnvp", n_layers=2, hidden_dims=(16,), n_epochs=2, seed=0).fit(x)
    >>> flow.log_prob(x[:3]).shape, flow.sample(5, seed=0).shape
    (torch.Size([3]), torch.Size([5, 2]))
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.conditional import ConditionalTransform
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn
from torch.distributions import transforms as torch_transforms

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.deep.flow_layers import (
    _ConditionalInverse,
    _ConditionalQuadraticSplineAutoregressive,
    _Flip,
    _QuadraticSplineAutoregressive,
    _scoring_direction,
)
from probgen.fitting.loop import fit_with_model_settings
from probgen.fitting.settings import RenamedSettings, renamed_arguments

__all__ = ["Flow"]

_KINDS = ("realnvp", "maf", "nsf", "nsf_coupling")
_PREPROCESSING = (None, "logit")
# Pyro clips affine log-scales to [-5, 3]; a layer then cannot sharpen a density by more than
# e^3 = 20 in the scoring direction (thin structures such as two moons need more). These
# bounds match zuko's soft limit of +-log(1000).
_LOG_SCALE_CLIPS = {"log_scale_min_clip": -7.0, "log_scale_max_clip": 7.0}


class Flow(RenamedSettings, Model):
    """A normalizing flow density estimator (optionally conditional) from Pyro transforms.

    Args:
        dim: number of features.
        kind: "realnvp", "maf", "nsf" (spline autoregressive) or "nsf_coupling".
        n_layers: number of flow layers.
        hidden_dims: hidden sizes of each layer's conditioner network.
        context_dim: size of the conditioning vector for a conditional flow p(x | context).
        batch_norm: insert a batch-normalisation transform between layers.
        count_bins: spline bins (nsf kinds).
        bound: spline interval [-bound, bound] (nsf kinds); identity outside.
        spline_order: "quadratic" (rational-quadratic splines, as in the NSF paper and zuko)
            or "linear" (Pyro's default rational-linear splines), for kind "nsf".
        n_levels: data are integers 0..n_levels-1 (pixels, counts): fit on dequantised
            x + u, u ~ U[0, 1), and report the dequantised lower bound.
        preprocessing: None or "logit": model logit(alpha + (1 - 2 alpha) x / n_levels)
            (needs `n_levels`, or data in (0, 1) when `n_levels` is None); its log-determinant
            is included, so densities stay in data space.
        alpha: the logit squeeze.
        log_prob_samples: dequantisation draws averaged by `log_prob` (integer data only).
        n_epochs, batch_size, learning_rate: training settings (overridable in `fit`).
        seed: seed of the initial weights and of training.

    Example:
        >>> import torch
        >>> flow = Flow(2, kind="maf", n_layers=2, hidden_dims=(16,), seed=0)
        >>> flow.fit(torch.randn(128, 2), n_epochs=1).log_prob_kind.value
        'exact'
    """

    fitted_attributes = ("history_",)
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    def __init__(
        self,
        dim: int,
        kind: str = "realnvp",
        n_layers: int = 5,
        hidden_dims: tuple[int, ...] | list[int] = (64, 64),
        context_dim: int | None = None,
        batch_norm: bool = False,
        count_bins: int = 8,
        bound: float = 5.0,
        spline_order: str = "quadratic",
        n_levels: int | None = None,
        preprocessing: str | None = None,
        alpha: float = 1e-3,
        log_prob_samples: int = 8,
        n_epochs: int = 50,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        seed: int | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        n_epochs, learning_rate = renamed_arguments(
            type(self).__name__, deprecated, n_epochs=n_epochs, learning_rate=learning_rate
        ).values()
        self.dim = check_positive_int(dim, "dim")
        self.kind = check_choice(kind, "kind", _KINDS)
        if self.kind in ("realnvp", "nsf_coupling") and self.dim < 2:
            raise DataError(f"kind={kind!r} needs dim >= 2 (coupling layers split the features)")
        self.n_layers = check_positive_int(n_layers, "n_layers")
        self.hidden_dims = tuple(
            check_positive_int(d, f"hidden_dims[{i}]") for i, d in enumerate(hidden_dims)
        )
        self.context_dim = (
            None if context_dim is None else check_positive_int(context_dim, "context_dim")
        )
        if self.context_dim is not None and self.kind == "nsf_coupling":
            raise DataError("kind='nsf_coupling' has no conditional form; use kind='nsf'")
        self.batch_norm = bool(batch_norm)
        self.count_bins = check_positive_int(count_bins, "count_bins", minimum=2)
        self.bound = float(bound)
        self.spline_order = check_choice(spline_order, "spline_order", ("quadratic", "linear"))
        self.n_levels = (
            None if n_levels is None else check_positive_int(n_levels, "n_levels", minimum=2)
        )
        self.preprocessing = check_choice(preprocessing, "preprocessing", _PREPROCESSING)
        if not 0 <= alpha < 0.5:
            raise DataError(f"alpha must lie in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)
        self.log_prob_samples = check_positive_int(log_prob_samples, "log_prob_samples")
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        self.seed = seed
        self.event_shape = torch.Size([self.dim])

        self.register_buffer("base_loc", torch.zeros(self.dim))
        self.register_buffer("base_scale", torch.ones(self.dim))
        with seeded_initialisation(seed):
            self.layers, self._transforms = self._build_layers()
        # Which transforms act elementwise (their log-determinants are summed over the
        # features when scoring); conditional layers act on whole vectors.
        self._elementwise = [
            not isinstance(transform, ConditionalTransform) and transform.domain.event_dim == 0
            for transform in self._transforms
        ]
        # Batch normalisation layers use their running statistics outside fit.
        self.eval()

    # ---- construction ----------------------------------------------------------------------
    def _build_layers(self) -> tuple[nn.ModuleList, list[Any]]:
        modules: list[nn.Module] = []
        transforms: list[Any] = []
        hidden = list(self.hidden_dims)
        for index in range(self.n_layers):
            layer = self._make_layer(hidden)
            modules.append(layer)
            # MAF and NSF are autoregressive in the scoring direction: use the inverse of
            # Pyro's (sampling-direction) autoregressive transform.
            if self.kind in ("maf", "nsf"):
                inverse = (
                    _scoring_direction(layer)
                    if self.context_dim is None
                    else _ConditionalInverse(layer)
                )
                transforms.append(inverse)
            else:
                transforms.append(layer)
            if index < self.n_layers - 1:
                if self.batch_norm:
                    norm = T.batchnorm(self.dim)
                    modules.append(norm)
                    transforms.append(norm)
                transforms.append(_Flip())
        return nn.ModuleList(modules), transforms

    def _make_layer(self, hidden: list[int]) -> nn.Module:
        context = self.context_dim
        if self.kind == "realnvp":
            if context is None:
                return T.affine_coupling(self.dim, hidden_dims=hidden, **_LOG_SCALE_CLIPS)
            return T.conditional_affine_coupling(
                self.dim, context, hidden_dims=hidden, **_LOG_SCALE_CLIPS
            )
        if self.kind == "maf":
            network = self._autoregressive_network(hidden, [1, 1])
            if context is None:
                return T.AffineAutoregressive(network, **_LOG_SCALE_CLIPS)
            return T.ConditionalAffineAutoregressive(network, **_LOG_SCALE_CLIPS)
        if self.kind == "nsf":
            return self._spline_autoregressive(hidden)
        return T.spline_coupling(
            self.dim, hidden_dims=hidden, count_bins=self.count_bins, bound=self.bound
        )

    def _spline_autoregressive(self, hidden: list[int]) -> nn.Module:
        # Built here rather than with Pyro's helpers, which size the network for
        # rational-linear splines whatever `order` says.
        bins = self.count_bins
        param_dims = [bins, bins, bins - 1]
        if self.spline_order == "linear":
            param_dims.append(bins)
        network = self._autoregressive_network(hidden, param_dims)
        if self.spline_order == "linear":
            options = dict(count_bins=bins, bound=self.bound, order="linear")
            if self.context_dim is None:
                return T.SplineAutoregressive(self.dim, network, **options)
            return T.ConditionalSplineAutoregressive(self.dim, network, **options)
        if self.context_dim is None:
            return _QuadraticSplineAutoregressive(self.dim, network, bins, self.bound)
        return _ConditionalQuadraticSplineAutoregressive(
            self.dim, network, count_bins=bins, bound=self.bound
        )

    def _autoregressive_network(self, hidden: list[int], param_dims: list[int]) -> nn.Module:
        # The natural feature order in every layer (Pyro would draw a random one): with the
        # reversal between layers, the orders alternate as in MAF, so that no feature is left
        # with an affine-only marginal (in two dimensions a random draw often does that).
        order = torch.arange(self.dim)
        if self.context_dim is None:
            return AutoRegressiveNN(self.dim, hidden, param_dims=param_dims, permutation=order)
        return ConditionalAutoRegressiveNN(
            self.dim, self.context_dim, hidden, param_dims=param_dims, permutation=order
        )

    def _preprocessing_transforms(self) -> list[Any]:
        """Fixed transforms from the flow's space to data space (the logit preprocessing)."""
        if self.preprocessing != "logit":
            return []
        squeeze = 1.0 - 2.0 * self.alpha
        scale = float(self.n_levels) if self.n_levels is not None else 1.0
        # y = logit(alpha + squeeze * x / scale)  <=>  x = scale * (sigmoid(y) - alpha) / squeeze
        return [
            torch_transforms.SigmoidTransform(),
            torch_transforms.AffineTransform(-self.alpha * scale / squeeze, scale / squeeze),
        ]

    # ---- configuration ---------------------------------------------------------------------
    @property
    def log_prob_kind(self) -> LogProbKind:  # type: ignore[override]
        """`exact` for continuous data; `lower_bound` for dequantised integer data."""
        return LogProbKind.LOWER_BOUND if self.n_levels is not None else LogProbKind.EXACT

    @property
    def transforms(self) -> list[Any]:
        """The transforms from the base variable to data space, in order."""
        return [*self._transforms, *self._preprocessing_transforms()]

    def distribution(self, context: torch.Tensor | None = None) -> dist.TransformedDistribution:
        """The flow as a Pyro distribution over (dequantised) data, given `context` if any."""
        base = dist.Normal(self.base_loc, self.base_scale, validate_args=False).to_event(1)
        if self.context_dim is None:
            return dist.TransformedDistribution(base, self.transforms, validate_args=False)
        conditional = dist.ConditionalTransformedDistribution(base, self.transforms)
        return conditional.condition(context)

    # ---- input checking --------------------------------------------------------------------
    def _check_x(self, x: Any, name: str = "x") -> tuple[torch.Tensor, torch.Size]:
        if self.n_levels is not None:
            tensor = as_tensor(
                x,
                name,
                event_shape=(self.dim,),
                integer=True,
                min_value=0,
                max_value=self.n_levels - 1,
            )
        else:
            tensor = as_tensor(x, name, event_shape=(self.dim,))
            if self.preprocessing == "logit" and bool(((tensor <= 0) | (tensor >= 1)).any()):
                raise DataError(
                    f"{name} must lie strictly inside (0, 1) for preprocessing='logit' without "
                    f"n_levels"
                )
        if tensor.dim() == 1:
            raise DataError(
                f"{name} has shape {tuple(tensor.shape)}; give a batch of shape (n, {self.dim})"
            )
        batch_shape = tensor.shape[:-1]
        converted = tensor.reshape(-1, self.dim).to(self.device, self.dtype)
        if converted.is_floating_point() and bool(torch.isinf(converted).any()):
            raise DataError(f"{name} has values too large for the model's dtype {self.dtype}")
        return converted, batch_shape

    def _check_context(self, context: Any, n: int, name: str = "context") -> torch.Tensor | None:
        if self.context_dim is None:
            if context is not None:
                raise DataError(f"{name} given, but the flow has no context_dim (not conditional)")
            return None
        if context is None:
            raise DataError(f"{name} is required: the flow is conditional (context_dim set)")
        tensor = as_tensor(context, name, event_shape=(self.context_dim,))
        tensor = tensor.reshape(-1, self.context_dim).to(self.device, self.dtype)
        if tensor.shape[0] == 1 and n > 1:
            tensor = tensor.expand(n, self.context_dim)
        if tensor.shape[0] != n:
            raise DataError(f"{name} has {tensor.shape[0]} rows for {n} examples")
        return tensor

    @staticmethod
    def _split(data: Any, context: Any) -> tuple[Any, Any]:
        if isinstance(data, tuple) and len(data) == 2 and context is None:
            return data
        return data, context

    # ---- densities -------------------------------------------------------------------------
    def _log_density(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """log p(x [+ u]) for checked x (n, dim); integer data get dequantisation noise u."""
        if self.n_levels is not None:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + noise
        return self._flow_log_prob(x, context)

    def _flow_log_prob(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """`self.distribution(context).log_prob(x)`, computed without building the distribution.

        The same transforms are called in the same order with the same arithmetic as
        `TransformedDistribution.log_prob`, so values and gradients are identical bit for bit.
        What is skipped is per-call bookkeeping that is fixed for a flow: building the
        distribution and its composed transform, and reading each transform's domain and
        codomain (Pyro builds new constraint objects on each read) to know which log-determinants
        to sum. Here that is read once, at construction (`_elementwise`): the log-determinants
        of elementwise transforms (batch normalisation, the logit preprocessing) are summed
        over the features; those of the flow layers already are. No transform changes the
        event rank, so the distribution's event stays one vector throughout.
        """
        preprocessing = self._preprocessing_transforms()
        steps = [
            *zip(self._transforms, self._elementwise),
            *((transform, transform.domain.event_dim == 0) for transform in preprocessing),
        ]
        log_prob: torch.Tensor | float = 0.0
        value = x
        for transform, elementwise in reversed(steps):
            if context is not None and isinstance(transform, ConditionalTransform):
                transform = transform.condition(context)
            previous = transform.inv(value)
            log_det = transform.log_abs_det_jacobian(previous, value)
            log_prob = log_prob - (log_det.sum(-1) if elementwise else log_det)
            value = previous
        base = dist.Normal(self.base_loc, self.base_scale, validate_args=False)
        return log_prob + base.log_prob(value).sum(-1)

    def _loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, context = batch if isinstance(batch, tuple) and len(batch) == 2 else (batch[0], None)
        return -self._log_density(x, context).mean()

    @torch.no_grad()
    def log_prob(self, x: Any, context: Any = None, *, seed: int | None = None) -> torch.Tensor:
        """Log-density of x (exact), or the dequantised lower bound for integer data.

        Args:
            x: points (*batch, dim), or a tuple (x, context).
            context: conditioning vectors (*batch, context_dim) for a conditional flow.
            seed: seed of the dequantisation draws (0 when None, so calls agree).

        Returns:
            Tensor (*batch) in nats.
        """
        self.check_fitted("log_prob")
        x, context = self._split(x, context)
        flat, batch_shape = self._check_x(x)
        condition = self._check_context(context, flat.shape[0])
        was_training = self.training
        self.eval()
        try:
            if self.n_levels is None:
                return self._log_density(flat, condition).reshape(batch_shape)
            generator = self.make_generator(0 if seed is None else seed)
            total = torch.zeros(flat.shape[0], device=flat.device, dtype=flat.dtype)
            for _ in range(self.log_prob_samples):
                total += self._log_density(flat, condition, generator)
            return (total / self.log_prob_samples).reshape(batch_shape)
        finally:
            self.train(was_training)

    # ---- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        context: Any = None,
        *,
        validation_data: Any = None,
        validation_context: Any = None,
        **options: Any,
    ) -> Flow:
        """Fit by maximum likelihood (Adam on the mean negative log-density).

        Args:
            data: points (n, dim), or a tuple (x, context) for a conditional flow.
            context: conditioning vectors (n, context_dim).
            validation_data: held-out points; their mean log-density is recorded each epoch
                (and drives `early_stopping_patience`).
            validation_context: context of the held-out points.
            **options: settings for `probgen.fitting.fit_model`.

        Returns:
            self, with `history_`.
        """
        training = self._examples(data, context, "data", "context")
        validation = (
            None
            if validation_data is None
            else self._examples(
                validation_data, validation_context, "validation_data", "validation_context"
            )
        )
        fit_with_model_settings(
            self,
            training,
            loss=self._loss,
            validation_data=validation,
            validation_log_prob=lambda model, batch: (
                model._log_density(*batch)
                if len(batch) == 2
                else model._log_density(batch[0], None)
            ),
            options=options,
        )
        return self

    def _examples(
        self, data: Any, context: Any, name: str, context_name: str
    ) -> tuple[torch.Tensor, ...]:
        """Checked training examples: (x,), or (x, context) for a conditional flow."""
        data, context = self._split(data, context)
        x, _ = self._check_x(data, name)
        condition = self._check_context(context, x.shape[0], context_name)
        return (x,) if condition is None else (x, condition)

    # ---- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, seed: int | None = None, context: Any = None) -> torch.Tensor:
        """Draw n points: z ~ N(0, I) pushed through the flow (integer data: floored codes).

        Args:
            n: number of draws.
            seed: seed of the draws.
            context: one context vector or n of them for a conditional flow.

        Returns:
            Tensor (n, dim).
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        condition = self._check_context(context, n)
        base = torch.randn((n, self.dim), generator=generator, device=self.device, dtype=self.dtype)
        value = self._push_forward(base, condition)
        if self.n_levels is not None:
            value = value.floor().clamp(0, self.n_levels - 1)
        return value

    def _push_forward(self, value: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            for transform in self.transforms:
                if condition is not None and hasattr(transform, "condition"):
                    transform = transform.condition(condition)
                value = transform(value)
        finally:
            self.train(was_training)
        return value

    # ---- extras ----------------------------------------------------------------------------
    def transform_to_base(self, x: Any, context: Any = None) -> torch.Tensor:
        """Map data points to the base space (the inverse flow): (*batch, dim).

        Differentiable (no `no_grad`), so Jacobians can be taken through it.
        """
        self.check_fitted("transform_to_base")
        x, context = self._split(x, context)
        flat, batch_shape = self._check_x(x)
        if isinstance(x, torch.Tensor) and x.requires_grad:
            flat = x.reshape(-1, self.dim)
        condition = self._check_context(context, flat.shape[0])
        value = flat
        was_training = self.training
        self.eval()
        try:
            for transform in reversed(self.transforms):
                if condition is not None and hasattr(transform, "condition"):
                    transform = transform.condition(condition)
                value = transform.inv(value)
        finally:
            self.train(was_training)
        return value.reshape(*batch_shape, self.dim)

    def transform_from_base(self, z: Any, context: Any = None) -> torch.Tensor:
        """Map base-space points z (*batch, dim) to data space (the flow's forward map)."""
        self.check_fitted("transform_from_base")
        points = as_tensor(z, "z", event_shape=(self.dim,))
        if isinstance(z, torch.Tensor) and z.requires_grad:
            points = z
        flat = points.reshape(-1, self.dim).to(self.device, self.dtype)
        condition = self._check_context(context, flat.shape[0])
        return self._push_forward(flat, condition).reshape(*points.shape[:-1], self.dim)

    def bits_per_dim(self, x: Any, context: Any = None) -> torch.Tensor:
        """-log_prob / (dim log 2) per example (for integer data, on the data's own scale)."""
        return -self.log_prob(x, context) / (self.dim * math.log(2.0))
