"""Monotonic rational-quadratic splines (Durkan et al., 2019) as a pure tensor function.

`rational_quadratic_spline` maps inputs through an elementwise monotonic spline on
[-bound, bound] (the identity outside, as in Pyro's `Spline` transforms) and returns the
log-derivative, in either direction. It follows Pyro's parameterisation exactly (softmax bin
sizes with a floor, softplus knot derivatives with a floor, the same bin search), so that it
can replace `pyro.distributions.transforms.spline._monotonic_rational_spline` for
`order="quadratic"`; it is leaner: one bin search, one gather of a stacked table of the bin
quantities, `torch.where` for the tails, no in-place masked writes.

Example:
    >>> import torch
    >>> from probgen.deep.splines import rational_quadratic_spline
    >>> params = torch.randn(3, 2 * 4 + 3, generator=torch.Generator().manual_seed(0))
    >>> x = torch.tensor([-6.0, 0.5, 2.0])
    >>> y, log_det = rational_quadratic_spline(x, params, bound=5.0)
    >>> x_back, _ = rational_quadratic_spline(y, params, bound=5.0, inverse=True)
    >>> bool(torch.allclose(x_back, x, atol=1e-5)), y[0].item()
    (True, -6.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["rational_quadratic_spline", "spline_parameter_count"]


def spline_parameter_count(n_bins: int) -> int:
    """Unconstrained parameters of one spline with `n_bins` bins: widths, heights and the
    derivatives at the `n_bins - 1` interior knots.

    Example:
        >>> spline_parameter_count(8)
        23
    """
    return 3 * n_bins - 1


def rational_quadratic_spline(
    inputs: torch.Tensor,
    params: torch.Tensor,
    *,
    bound: float,
    inverse: bool = False,
    min_bin_size: float = 1e-3,
    min_derivative: float = 1e-3,
    boundary_derivative: float = 1.0 - 1e-3,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An elementwise monotonic rational-quadratic spline on [-bound, bound], or its inverse.

    Args:
        inputs: points (*batch); the identity applies outside [-bound, bound].
        params: unconstrained spline parameters (*batch, 3 K - 1) for K bins, broadcastable
            against `inputs` in the batch dimensions: K width logits, K height logits, then
            K - 1 pre-softplus derivatives at the interior knots.
        bound: half-width of the spline's square [-bound, bound]^2.
        inverse: map outputs back to inputs instead.
        min_bin_size: the least bin width and height, as a fraction of the interval.
        min_derivative: the least derivative at the interior knots.
        boundary_derivative: the derivative at the two outer knots. Pyro uses
            1 - min_derivative (not 1), so that is the default here.
        eps: an input less than `eps` above a knot is placed in the bin to the knot's left
            (Pyro's bin search; the spline is continuous there).

    Returns:
        (outputs, log_abs_det): both (*batch); log |d outputs / d inputs| elementwise, so the
        inverse's log-determinant is minus the forward one at matching points.
    """
    n_params = params.shape[-1]
    if n_params < 5 or n_params % 3 != 2:
        raise ValueError(f"params must have 3 K - 1 entries (K >= 2 bins) last, got {n_params}")
    n_bins = (n_params + 1) // 3
    if min_bin_size * n_bins > 1.0:
        raise ValueError(f"min_bin_size={min_bin_size} is too large for {n_bins} bins")
    batch_shape = torch.broadcast_shapes(inputs.shape, params.shape[:-1])
    size_logits, derivative_logits = params.split((2 * n_bins, n_bins - 1), dim=-1)

    # Widths (row 0) and heights (row 1) together: one softmax, one cumulative sum. (It is
    # Pyro's very arithmetic: a bin's size is a difference of neighbouring knots, so a one-ulp
    # change in a knot moves a small bin's slope far more than the rest of the rounding.)
    sizes = torch.softmax(size_logits.unflatten(-1, (2, n_bins)), dim=-1)
    sizes = min_bin_size + (1.0 - min_bin_size * n_bins) * sizes
    cumulative = torch.cumsum(sizes[..., :-1], dim=-1)
    # The outer knots are exactly -bound and bound (the last bin absorbs the cumulative sum's
    # rounding), as in Pyro.
    edge_shape = (*cumulative.shape[:-1], 1)
    fractions = torch.cat(
        (cumulative.new_zeros(edge_shape), cumulative, cumulative.new_ones(edge_shape)), dim=-1
    )
    knots = (2.0 * bound) * fractions - bound
    # Elementwise functions are much slower on CPU over a strided slice than over a block.
    derivatives = min_derivative + F.softplus(derivative_logits.contiguous())
    boundary = derivatives.new_full((*derivatives.shape[:-1], 1), boundary_derivative)
    derivatives = torch.cat((boundary, derivatives, boundary), dim=-1)
    # Rows: knots along the input axis, along the output axis, derivatives at the knots.
    table = torch.cat((knots, derivatives.unsqueeze(-2)), dim=-2)

    # Points outside the square are spline-evaluated at the edge (so that nothing there can
    # be infinite or NaN, even in the gradient) and then replaced by the identity.
    clamped = inputs.clamp(-bound, bound)
    inside = clamped == inputs
    search_row = 1 if inverse else 0
    boundaries = knots.detach()[..., search_row, 1:-1] + eps
    if boundaries.shape[:-1] != batch_shape:
        boundaries = boundaries.expand(*batch_shape, n_bins - 1).contiguous()
    points = clamped.detach().expand(batch_shape).unsqueeze(-1)
    bins = torch.searchsorted(boundaries, points, right=True)
    # Each point's bin k picks columns k and k + 1 of every row: one gather.
    index = torch.cat((bins, bins + 1), dim=-1).unsqueeze(-2).expand(*batch_shape, 3, 2)
    table = table.expand(*batch_shape, 3, n_bins + 1)
    (left_x, right_x), (left_y, right_y), (slope_left, slope_right) = (
        row.unbind(-1) for row in table.gather(-1, index).unbind(-2)
    )
    width = right_x - left_x
    height = right_y - left_y

    # Durkan et al. (2019), eqs. 4-6 and 14, in Pyro's order of operations: at some points
    # (knots of steep splines, a nearly cancelling discriminant) the results are
    # ill-conditioned, and only the same arithmetic gives the same last digits.
    delta = height / width
    two_delta = 2.0 * delta
    slope_excess = slope_left + slope_right - two_delta
    if inverse:
        # theta solves a theta^2 + b theta + c = 0 in [0, 1]; this form of the root avoids
        # cancellation.
        offset = clamped - left_y
        offset_excess = offset * slope_excess
        a = offset_excess + height * (delta - slope_left)
        b = height * slope_left - offset_excess
        c = -delta * offset
        # The discriminant is non-negative in exact arithmetic; rounding can push it just
        # below zero at the knots of steep float32 splines, where the root is then theta = 0/1.
        discriminant = (b.pow(2) - 4.0 * a * c).clamp_min(0.0)
        theta = (2.0 * c) / (-b - torch.sqrt(discriminant))
        outputs = theta * width + left_x
    else:
        theta = (clamped - left_x) / width
    one_minus_theta = 1.0 - theta
    theta_one_minus_theta = theta * one_minus_theta
    theta_squared = theta.pow(2)
    denominator = delta + slope_excess * theta_one_minus_theta
    if not inverse:
        numerator = height * (delta * theta_squared + slope_left * theta_one_minus_theta)
        outputs = left_y + numerator / denominator
    derivative_numerator = delta.pow(2) * (
        slope_right * theta_squared
        + two_delta * theta_one_minus_theta
        + slope_left * one_minus_theta.pow(2)
    )
    log_det = torch.log(derivative_numerator) - 2.0 * torch.log(denominator)
    if inverse:
        log_det = -log_det
    return torch.where(inside, outputs, inputs), torch.where(inside, log_det, 0.0)
