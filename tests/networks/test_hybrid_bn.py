"""HybridBayesianNetwork: oracles are torch's MultivariateNormal, pgmpy's
LinearGaussianBayesianNetwork, per-configuration hand computations, quadrature and least
squares."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import probgen
from probgen.core.errors import DataError, NotFittedError
from probgen.core.testing import check_density
from probgen.networks.hybrid import HybridBayesianNetwork

NAN = float("nan")


def gaussian_chain():
    # a -> b -> c, a -> c: x_a = 1 + e, x_b = -2 + 0.5 a + e, x_c = 0.3 - a + 2 b + e
    return HybridBayesianNetwork(
        None, ["a", "b", "c"], [("a", "b"), ("a", "c"), ("b", "c")],
        linear_gaussians={"a": ([1.0], 2.0), "b": ([-2.0, 0.5], 0.5),
                          "c": ([0.3, -1.0, 2.0], 1.5)},
    )


def chain_oracle():
    """Mean and covariance of (a, b, c) by propagating moments one variable at a time."""
    mean_a, var_a = 1.0, 2.0
    mean_b = -2.0 + 0.5 * mean_a
    cov_ab = 0.5 * var_a
    var_b = 0.25 * var_a + 0.5
    mean_c = 0.3 - mean_a + 2 * mean_b
    cov_ac = -var_a + 2 * cov_ab
    cov_bc = -cov_ab + 2 * var_b
    var_c = var_a + 4 * var_b - 4 * cov_ab + 1.5
    mean = torch.tensor([mean_a, mean_b, mean_c], dtype=torch.float64)
    cov = torch.tensor([[var_a, cov_ab, cov_ac], [cov_ab, var_b, cov_bc],
                        [cov_ac, cov_bc, var_c]], dtype=torch.float64)
    return mean, cov


def test_linear_gaussian_network_equals_the_multivariate_normal():
    net = gaussian_chain()
    mean, cov = chain_oracle()
    rows = torch.tensor([[0.5, -1.0, 1.0], [2.0, 0.0, -3.0], [NAN, -1.5, 0.0], [NAN, NAN, 2.0]],
                        dtype=torch.float64)
    got = net.log_prob(rows)
    full = torch.distributions.MultivariateNormal(mean, cov)
    assert torch.allclose(got[:2], full.log_prob(rows[:2]), atol=1e-10)
    bc = torch.distributions.MultivariateNormal(mean[1:], cov[1:, 1:])
    assert float(got[2]) == pytest.approx(float(bc.log_prob(rows[2, 1:])), abs=1e-10)
    c_only = stats.norm(float(mean[2]), math.sqrt(float(cov[2, 2]))).logpdf(2.0)
    assert float(got[3]) == pytest.approx(c_only, abs=1e-10)


def test_conditional_gaussian_equals_the_textbook_formula_and_pgmpy_predict():
    from pgmpy.factors.continuous import LinearGaussianCPD
    from pgmpy.models import LinearGaussianBayesianNetwork

    net = gaussian_chain()
    mean, cov = chain_oracle()
    rows = torch.tensor([[NAN, 0.5, -1.0], [1.0, NAN, 4.0]], dtype=torch.float64)
    got_mean, got_cov = net.continuous_posterior(rows)
    for row in range(2):
        seen = ~torch.isnan(rows[row])
        gain = cov[~seen][:, seen] @ torch.linalg.inv(cov[seen][:, seen])
        expected = mean[~seen] + gain @ (rows[row, seen] - mean[seen])
        expected_cov = cov[~seen][:, ~seen] - gain @ cov[seen][:, ~seen]
        assert torch.allclose(got_mean[row, ~seen], expected, atol=1e-10)
        assert torch.allclose(got_cov[row][~seen][:, ~seen], expected_cov, atol=1e-10)
        assert torch.equal(got_mean[row, seen], rows[row, seen])

    reference = LinearGaussianBayesianNetwork([("a", "b"), ("a", "c"), ("b", "c")])
    reference.add_cpds(LinearGaussianCPD("a", [1.0], math.sqrt(2.0)),
                       LinearGaussianCPD("b", [-2.0, 0.5], math.sqrt(0.5), ["a"]),
                       LinearGaussianCPD("c", [0.3, -1.0, 2.0], math.sqrt(1.5), ["a", "b"]))
    frame = pd.DataFrame({"b": [0.5, -1.0], "c": [-1.0, 2.5]})
    predicted = reference.predict(frame)
    ours = net.predict(frame)
    assert np.allclose(ours[:, 0].numpy(), np.asarray(predicted["a"], dtype=float), atol=1e-8)


def hybrid():
    # d (2 states) -> e (3 states); d -> x; x -> y, d -> y, e -> y
    return HybridBayesianNetwork(
        {"d": ["lo", "hi"], "e": 3}, ["x", "y"],
        [("d", "e"), ("d", "x"), ("x", "y"), ("d", "y"), ("e", "y")],
        tables={"d": [0.3, 0.7], "e": [[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]},
        linear_gaussians={
            "x": ([[0.0], [3.0]], [1.0, 0.5]),
            "y": ([[[1.0, 0.5], [0.0, -1.0], [2.0, 0.0]], [[-1.0, 1.5], [0.5, 0.2],
                                                          [0.0, 1.0]]],
                  [[0.4, 1.0, 2.0], [0.3, 0.6, 0.9]]),
        },
    )


def hand_joint(net, d, e, x=None, y=None):
    """P(d, e) times the densities of the given x, y, one scalar normal at a time; with x
    missing, y's marginal given (d, e) is the normal with propagated mean and variance."""
    p = float(net.table("d")[d] * net.table("e")[d, e])
    cx, vx = net.linear_gaussian("x")
    cy, vy = net.linear_gaussian("y")
    bx, sx = float(cx[d, 0]), float(vx[d])
    by, wy, sy = float(cy[d, e, 0]), float(cy[d, e, 1]), float(vy[d, e])
    if x is not None:
        p *= stats.norm(bx, math.sqrt(sx)).pdf(x)
        if y is not None:
            p *= stats.norm(by + wy * x, math.sqrt(sy)).pdf(y)
    elif y is not None:
        p *= stats.norm(by + wy * bx, math.sqrt(sy + wy**2 * sx)).pdf(y)
    return p


def test_hybrid_log_prob_and_discrete_posterior_match_enumeration():
    net = hybrid()
    rows = torch.tensor([[1, 2, 2.5, 4.0], [NAN, 0, 0.3, -1.0], [NAN, NAN, NAN, 1.2],
                         [0, NAN, 1.0, NAN], [NAN, NAN, NAN, NAN]], dtype=torch.float64)
    got = net.log_prob(rows)
    posterior = net.discrete_posterior(rows)
    for index, row in enumerate(rows.tolist()):
        d_values = [int(row[0])] if not math.isnan(row[0]) else [0, 1]
        e_values = [int(row[1])] if not math.isnan(row[1]) else [0, 1, 2]
        x = None if math.isnan(row[2]) else row[2]
        y = None if math.isnan(row[3]) else row[3]
        joint = {(d, e): hand_joint(net, d, e, x, y) for d in d_values for e in e_values}
        total = sum(joint.values())
        assert float(got[index]) == pytest.approx(math.log(total), abs=1e-10)
        for d in (0, 1):
            expected = sum(p for (dd, _), p in joint.items() if dd == d) / total
            assert float(posterior["d"][index, d]) == pytest.approx(expected, abs=1e-10)


def test_hybrid_conditional_moments_match_quadrature():
    # x given y alone: a mixture over (d, e); its mean and variance by a fine grid
    net = hybrid()
    grid = np.linspace(-12, 15, 200001)
    step = grid[1] - grid[0]
    y = 2.0
    density = np.zeros_like(grid)
    for d in (0, 1):
        for e in (0, 1, 2):
            density += np.array(hand_joint(net, d, e, grid, y))
    density /= density.sum() * step
    mean = (grid * density).sum() * step
    variance = ((grid - mean) ** 2 * density).sum() * step
    got_mean, got_cov = net.continuous_posterior(torch.tensor([[NAN, NAN, NAN, y]]))
    assert float(got_mean[0, 0]) == pytest.approx(mean, abs=1e-6)
    assert float(got_cov[0, 0, 0]) == pytest.approx(variance, abs=1e-5)
    assert float(got_mean[0, 1]) == y and float(got_cov[0, 1, 1]) == 0.0


def test_density_integrates_to_one_over_a_hybrid_pair():
    net = HybridBayesianNetwork({"d": 2}, ["x"], [("d", "x")], tables={"d": [0.25, 0.75]},
                                linear_gaussians={"x": ([[-1.0], [2.0]], [0.5, 2.0])})
    grid = torch.linspace(-15, 18, 40001, dtype=torch.float64)
    total = 0.0
    for d in (0, 1):
        rows = torch.stack([torch.full_like(grid, d), grid], dim=1)
        total += float(torch.trapezoid(net.log_prob(rows).exp(), grid))
    assert total == pytest.approx(1.0, abs=1e-8)


def test_fit_is_least_squares_per_discrete_configuration():
    truth = hybrid()
    rows = truth.sample(3000, seed=0)
    model = HybridBayesianNetwork(truth.discrete, truth.continuous, truth.edges).fit(rows)
    data = rows.numpy()
    for d in (0, 1):
        for e in (0, 1, 2):
            chosen = data[(data[:, 0] == d) & (data[:, 1] == e)]
            design = np.stack([np.ones(len(chosen)), chosen[:, 2]], axis=1)
            solution, *_ = np.linalg.lstsq(design, chosen[:, 3], rcond=None)
            coefficients, variance = model.linear_gaussian("y")
            assert np.allclose(coefficients[d, e].numpy(), solution, atol=1e-8)
            residual = chosen[:, 3] - design @ solution
            assert float(variance[d, e]) == pytest.approx((residual**2).mean(), rel=1e-8)
    counts = np.bincount(data[:, 0].astype(int), minlength=2)
    assert np.allclose(model.table("d").numpy(), counts / counts.sum())
    # and the estimate is near the truth (3000 rows)
    for v in ("x", "y"):
        assert torch.allclose(model.linear_gaussian(v)[0], truth.linear_gaussian(v)[0],
                              atol=0.25)
    smoothed = HybridBayesianNetwork(truth.discrete, truth.continuous, truth.edges,
                                     pseudocount=100.0).fit(rows)
    expected = (counts + 100.0) / (counts.sum() + 200.0)
    assert np.allclose(smoothed.table("d").numpy(), expected)


def test_samples_follow_the_mixture_moments():
    net = hybrid()
    rows = net.sample(40000, seed=1)
    # y's exact mean: sum over (d, e) of P(d, e) (b_y + w_y b_x)
    cx, _ = net.linear_gaussian("x")
    cy, _ = net.linear_gaussian("y")
    expected = sum(
        float(net.table("d")[d] * net.table("e")[d, e])
        * float(cy[d, e, 0] + cy[d, e, 1] * cx[d, 0])
        for d in (0, 1) for e in (0, 1, 2)
    )
    standard_error = float(rows[:, 3].std()) / math.sqrt(rows.shape[0])
    assert abs(float(rows[:, 3].mean()) - expected) < 4 * standard_error
    assert abs(float(rows[:, 0].mean()) - 0.7) < 4 * math.sqrt(0.21 / rows.shape[0])


def test_contract_save_load_and_device():
    truth = hybrid()
    rows = truth.sample(500, seed=0)
    model = HybridBayesianNetwork(truth.discrete, truth.continuous, truth.edges)
    check_density(model, rows, check_normalization=False)


def test_data_frames_with_state_names(tmp_path):
    net = hybrid()
    frame = pd.DataFrame({"d": ["hi", None], "y": [1.0, 2.0]})
    codes = torch.tensor([[1, NAN, NAN, 1.0], [NAN, NAN, NAN, 2.0]], dtype=torch.float64)
    assert torch.allclose(net.log_prob(frame), net.log_prob(codes))
    net.save(tmp_path / "hybrid.probgen")
    assert torch.equal(probgen.load(tmp_path / "hybrid.probgen").log_prob(codes),
                       net.log_prob(codes))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: HybridBayesianNetwork({"d": 2}, ["x"], [("x", "d")]), "continuous parent"),
        (lambda: HybridBayesianNetwork({"d": 2}, ["x"], [("d", "z")]), "unknown variable"),
        (lambda: HybridBayesianNetwork({"d": 2}, ["x"], [("d", "x")],
                                       linear_gaussians={"x": ([1.0, 2.0], [1.0, 1.0])}),
         "shape"),
        (lambda: HybridBayesianNetwork({}, ["x"], linear_gaussians={"x": ([1.0], -1.0)}),
         "> 0"),
        (lambda: HybridBayesianNetwork({"d": 2}, tables={"d": [0.5, 0.7]}), "sum to one"),
    ],
)
def test_bad_networks_raise(build, message):
    with pytest.raises(DataError, match=message):
        build()


def test_bad_data_raise():
    net = hybrid()
    with pytest.raises(DataError, match="'e'"):
        net.log_prob(torch.tensor([[0.0, 5.0, 0.0, 0.0]]))
    with pytest.raises(DataError, match="4"):
        net.log_prob(torch.zeros(2, 3))
    empty = HybridBayesianNetwork(net.discrete, net.continuous, net.edges)
    with pytest.raises(NotFittedError):
        empty.log_prob(torch.zeros(1, 4))
    with pytest.raises(DataError, match="complete rows"):
        empty.fit(torch.tensor([[0.0, 1.0, NAN, 0.0]]))
    with pytest.raises(DataError, match="max_discrete_states"):
        HybridBayesianNetwork({"d": 2, "e": 3}, max_discrete_states=4,
                              tables={"d": [0.5, 0.5], "e": [0.2, 0.3, 0.5]}).log_prob(
            torch.zeros(1, 2))


def test_predict_fills_discrete_by_posterior_mode_and_continuous_by_mean():
    net = hybrid()
    rows = torch.tensor([[NAN, NAN, 3.2, NAN], [NAN, 1, -0.5, 0.0]], dtype=torch.float64)
    filled = net.predict(rows)
    posterior = net.discrete_posterior(rows)
    mean, _ = net.continuous_posterior(rows)
    assert torch.equal(filled[:, 0], posterior["d"].argmax(1).double())
    assert torch.equal(filled[:, 1], torch.tensor([float(posterior["e"][0].argmax()), 1.0],
                                                  dtype=torch.float64))
    assert torch.equal(filled[:, 2:], mean)


def test_min_variance_floors_an_exact_linear_fit():
    x = torch.linspace(-1, 1, 50, dtype=torch.float64)
    rows = torch.stack([x, 2 * x + 1], dim=1)
    for floor in (1e-6, 0.5):
        model = HybridBayesianNetwork({}, ["x", "y"], [("x", "y")], min_variance=floor).fit(rows)
        coefficients, variance = model.linear_gaussian("y")
        assert torch.allclose(coefficients, torch.tensor([1.0, 2.0], dtype=torch.float64))
        assert float(variance) == pytest.approx(floor)
