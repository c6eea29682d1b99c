"""The rational-quadratic spline: Pyro's spline values, log-determinants and gradients (inside
the square, on its bin edges and in the identity tails), inversion, the autograd Jacobian, and
finite-difference gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pyro.distributions.transforms.spline import _calculate_knots, _monotonic_rational_spline

from probgen.deep.splines import rational_quadratic_spline, spline_parameter_count

BOUND = 3.0
N_BINS = 5
TOLERANCES = {torch.float32: 1e-6, torch.float64: 1e-12}


def _params(shape, dtype, seed=0, scale=2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    count = spline_parameter_count(N_BINS)
    return scale * torch.randn(*shape, count, generator=generator, dtype=dtype)


def _pyro(inputs, params, inverse):
    """Pyro's spline on the same unconstrained parameters (Pyro normalises them first).

    Softplus is taken over a contiguous block, as in `rational_quadratic_spline`: over a
    strided slice torch's CPU kernel rounds some values differently in the last bit, and at
    the knots of steep float32 splines Pyro's log-determinant (a difference of logarithms
    that nearly cancel) turns that last bit into a few 1e-6.
    """
    widths = F.softmax(params[..., :N_BINS], dim=-1)
    heights = F.softmax(params[..., N_BINS : 2 * N_BINS], dim=-1)
    derivatives = F.softplus(params[..., 2 * N_BINS :].contiguous())
    return _monotonic_rational_spline(
        inputs, widths, heights, derivatives, None, inverse=inverse, bound=BOUND
    )


def _knots(params, inverse):
    """Pyro's knots along the searched axis (x for the forward map, y for the inverse)."""
    logits = params[..., N_BINS : 2 * N_BINS] if inverse else params[..., :N_BINS]
    sizes = 1e-3 + (1.0 - 1e-3 * N_BINS) * F.softmax(logits, dim=-1)
    return _calculate_knots(sizes, -BOUND, BOUND)[1]


def _points(params, inverse, seed=1) -> torch.Tensor:
    """(rows, n_points, dim) points for params (n_points?, dim, K): random points inside and
    outside the square, every knot, the two edges and points just past them."""
    generator = torch.Generator().manual_seed(seed)
    dim = params.shape[-2]
    dtype = params.dtype
    uniform = (torch.rand(64, dim, generator=generator, dtype=dtype) * 2 - 1) * 1.4 * BOUND
    knots = _knots(params, inverse)  # (dim, K + 1) or (n, dim, K + 1)
    knots = knots.movedim(-1, 0).reshape(-1, dim) if knots.dim() == 2 else knots[..., 0]
    edges = torch.tensor([-BOUND, BOUND, -BOUND - 1e-3, BOUND + 1e-3, -7.0, 9.0], dtype=dtype)
    return torch.cat((uniform, knots, edges[:, None].expand(-1, dim)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_values_and_log_det_equal_pyros_spline(dtype, inverse):
    tolerance = TOLERANCES[dtype]
    # Shared parameters broadcast over a batch of points, including Pyro's own knots.
    params = _params((4,), dtype)
    points = _points(params, inverse)
    expected = _pyro(points, params, inverse)
    claimed = rational_quadratic_spline(points, params, bound=BOUND, inverse=inverse)
    for value, reference in zip(claimed, expected):
        torch.testing.assert_close(value, reference, rtol=tolerance, atol=tolerance)
    # One spline per point, as an autoregressive layer gives, with each point on its own knot.
    # (Steeper splines in float32 make Pyro's own inverse fail its discriminant check at some
    # knots.)
    params = _params((256, 3), dtype, seed=2, scale=1.0 if dtype == torch.float32 else 2.0)
    generator = torch.Generator().manual_seed(3)
    points = (torch.rand(256, 3, generator=generator, dtype=dtype) * 2 - 1) * 1.4 * BOUND
    on_knot = torch.randint(0, N_BINS + 1, (128, 3, 1), generator=generator)
    points[:128] = _knots(params[:128], inverse).gather(-1, on_knot)[..., 0]
    expected = _pyro(points, params, inverse)
    claimed = rational_quadratic_spline(points, params, bound=BOUND, inverse=inverse)
    for value, reference in zip(claimed, expected):
        torch.testing.assert_close(value, reference, rtol=tolerance, atol=tolerance)


def test_tails_are_the_identity():
    params = _params((2,), torch.float64)
    points = torch.tensor([[-8.0, 3.5], [BOUND + 1e-9, -BOUND - 1e-9]], dtype=torch.float64)
    for inverse in (False, True):
        outputs, log_det = rational_quadratic_spline(points, params, bound=BOUND, inverse=inverse)
        assert torch.equal(outputs, points)
        assert torch.equal(log_det, torch.zeros_like(points))


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_gradients_equal_pyros(inverse):
    params = _params((32, 3), torch.float64, seed=4)
    generator = torch.Generator().manual_seed(5)
    points = (torch.rand(32, 3, generator=generator, dtype=torch.float64) * 2 - 1) * 1.4 * BOUND
    weights = torch.randn(2, 32, 3, generator=generator, dtype=torch.float64)
    gradients = []
    for spline in (
        _pyro,
        lambda x, p, inv: rational_quadratic_spline(x, p, bound=BOUND, inverse=inv),
    ):
        x = points.clone().requires_grad_()
        p = params.clone().requires_grad_()
        outputs, log_det = spline(x, p, inverse)
        (weights[0] * outputs + weights[1] * log_det).sum().backward()
        gradients.append((x.grad, p.grad))
    for claimed, expected in zip(gradients[1], gradients[0]):
        torch.testing.assert_close(claimed, expected, rtol=1e-10, atol=1e-10)
    outside = points.abs() > BOUND
    assert outside.any() and torch.equal(gradients[1][0][outside], weights[0][outside])


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_gradcheck(inverse):
    params = _params((3, 2), torch.float64, seed=6, scale=1.0).requires_grad_()
    # Away from the edges of the square, where the slope jumps from 1 - 1e-3 to 1.
    points = torch.tensor(
        [[-2.5, 0.3], [1.1, -1.7], [2.2, 4.0]], dtype=torch.float64, requires_grad=True
    )

    def spline(x, p):
        return rational_quadratic_spline(x, p, bound=BOUND, inverse=inverse)

    assert torch.autograd.gradcheck(spline, (points, params))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_inverts_the_forward_map_and_negates_its_log_det(dtype):
    # Float32 inverses of steep splines lose digits (Pyro's as much), so milder ones there.
    params = _params((64, 2), dtype, seed=7, scale=1.0 if dtype == torch.float32 else 2.0)
    generator = torch.Generator().manual_seed(8)
    x = (torch.rand(64, 2, generator=generator, dtype=dtype) * 2 - 1) * 1.4 * BOUND
    y, log_det = rational_quadratic_spline(x, params, bound=BOUND)
    x_back, inverse_log_det = rational_quadratic_spline(y, params, bound=BOUND, inverse=True)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(x_back, x, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_log_det_is_the_log_of_the_autograd_derivative(inverse):
    params = _params((40,), torch.float64, seed=9)
    generator = torch.Generator().manual_seed(10)
    points = (torch.rand(40, generator=generator, dtype=torch.float64) * 2 - 1) * 1.4 * BOUND
    points.requires_grad_()
    outputs, log_det = rational_quadratic_spline(points, params, bound=BOUND, inverse=inverse)
    # Elementwise, so the Jacobian is diagonal and the gradient of the sum is its diagonal.
    (derivative,) = torch.autograd.grad(outputs.sum(), points)
    assert (derivative > 0).all()
    torch.testing.assert_close(log_det, derivative.log(), rtol=1e-12, atol=1e-12)


def test_monotone_and_onto_the_square():
    params = _params((1,), torch.float64, seed=11)
    grid = torch.linspace(-BOUND, BOUND, 2001, dtype=torch.float64)
    outputs, _ = rational_quadratic_spline(grid, params, bound=BOUND)
    assert (outputs.diff() > 0).all()
    assert outputs[0].item() == -BOUND and abs(outputs[-1].item() - BOUND) < 1e-12


def test_bad_parameter_count_raises():
    with pytest.raises(ValueError, match="3 K - 1"):
        rational_quadratic_spline(torch.zeros(3), torch.zeros(3, 7), bound=1.0)
    with pytest.raises(ValueError, match="min_bin_size"):
        rational_quadratic_spline(torch.zeros(3), torch.zeros(3, 8), bound=1.0, min_bin_size=0.5)
