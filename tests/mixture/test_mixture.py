"""GaussianMixture: EM against scikit-learn, exact density, and Gibbs against closed forms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from probgen.recipes import gmm_blobs
from scipy import stats
from sklearn.mixture import GaussianMixture as SklearnMixture

import probgen
from probgen.core.errors import ConvergenceWarning, DataError, FitError, NotFittedError
from probgen.core.testing import check_density
from probgen.mixture.model import GaussianMixture
from probgen.samplers import diagnostics


def three_blobs(n_samples: int = 300, seed: int = 0) -> np.ndarray:
    """Overlapping 2-D blobs (EM needs several iterations on them)."""
    rng = np.random.default_rng(seed)
    sizes = (n_samples // 2, n_samples // 3, n_samples - n_samples // 2 - n_samples // 3)
    return np.concatenate(
        [
            rng.normal([-2.0, 0.0], [1.0, 0.5], (sizes[0], 2)),
            rng.normal([1.5, 1.0], [0.7, 1.2], (sizes[1], 2)),
            rng.normal([0.0, 3.0], [0.6, 0.6], (sizes[2], 2)),
        ]
    )


def starting_point(covariance: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """A deliberately rough start: three data points as means, unit covariances."""
    covariances = {
        "full": np.stack([np.array([[1.0, 0.3], [0.3, 1.0]])] * 3),
        "diag": np.ones((3, 2)),
        "spherical": np.ones(3),
    }[covariance]
    return {
        "weights": np.array([0.2, 0.3, 0.5]),
        "means": x[[0, 170, 290]],
        "covariances": covariances,
    }


# ---------------------------------------------------------------------------------------------
# EM and density
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("covariance", ["diag", "full", "spherical"])
def test_em_matches_sklearn_from_the_same_start(covariance):
    x = three_blobs()
    start = starting_point(covariance, x)
    ours = GaussianMixture(3, covariance=covariance, max_iter=40, tol=1e-9).double()
    ours.set_parameters(**start)
    precisions = (
        np.linalg.inv(start["covariances"]) if covariance == "full" else 1 / start["covariances"]
    )
    theirs = SklearnMixture(
        3,
        covariance_type=covariance,
        weights_init=start["weights"],
        means_init=start["means"],
        precisions_init=precisions,
        max_iter=40,
        tol=1e-9,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(x, warm_start=True)
        theirs.fit(x)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.converged_ == theirs.converged_
    assert ours.history_[-1]["mean_log_likelihood"] == pytest.approx(
        theirs.lower_bound_, abs=1e-9
    )
    assert ours.score(x) == pytest.approx(theirs.score(x), abs=1e-6)
    np.testing.assert_allclose(ours.weights.numpy(), theirs.weights_, atol=1e-6)
    np.testing.assert_allclose(ours.means.numpy(), theirs.means_, atol=1e-6)
    np.testing.assert_allclose(ours.covariances.numpy(), theirs.covariances_, atol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(x).numpy(), theirs.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(ours.precisions.numpy(), theirs.precisions_, rtol=1e-6)


@pytest.mark.parametrize("covariance", ["diag", "full", "spherical"])
def test_em_matches_sklearn_on_blocks_of_rows_far_from_the_origin(covariance):
    # 5,000 points with K * D = 32 span two row blocks of the full E- and M-steps; the offset
    # checks that the centred density features keep their precision.
    rng = np.random.default_rng(4)
    centres = rng.normal(0.0, 3.0, (4, 8))
    labels = rng.integers(4, size=5000)
    x = 50.0 + centres[labels] + rng.normal(0.0, 1.0, (5000, 8)) * rng.uniform(0.5, 1.5, 8)
    means = x[[0, 1, 2, 3]]
    variances = x.var(0)
    covariances = {
        "full": np.stack([np.diag(variances)] * 4),
        "diag": np.tile(variances, (4, 1)),
        "spherical": np.full(4, variances.mean()),
    }[covariance]
    ours = GaussianMixture(4, covariance=covariance, max_iter=15, tol=0.0).double()
    ours.set_parameters(weights=np.full(4, 0.25), means=means, covariances=covariances)
    theirs = SklearnMixture(
        4,
        covariance_type=covariance,
        weights_init=np.full(4, 0.25),
        means_init=means,
        precisions_init=np.linalg.inv(covariances) if covariance == "full" else 1 / covariances,
        max_iter=15,
        tol=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(x, warm_start=True)
        theirs.fit(x)
    assert ours.n_iter_ == theirs.n_iter_ == 15
    assert ours.history_[-1]["mean_log_likelihood"] == pytest.approx(
        theirs.lower_bound_, abs=1e-9
    )
    np.testing.assert_allclose(ours.weights.numpy(), theirs.weights_, atol=1e-8)
    np.testing.assert_allclose(ours.means.numpy(), theirs.means_, atol=1e-7)
    np.testing.assert_allclose(ours.covariances.numpy(), theirs.covariances_, rtol=1e-7)


@pytest.mark.parametrize("covariance", ["diag", "full", "spherical"])
def test_em_log_densities_match_the_reference_density(covariance):
    # The fast E-step (features @ matrix, two row blocks for "full") against gaussian_log_probs,
    # itself checked against scipy in test_log_prob_is_the_sum_of_component_densities.
    from probgen.mixture.inference import em_features, em_weighted_log_probs, gaussian_log_probs

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5000, 6, generator=generator, dtype=torch.float64) * 2 + 10
    means = torch.randn(7, 6, generator=generator, dtype=torch.float64) + 10
    if covariance == "full":
        factors = torch.randn(7, 6, 6, generator=generator, dtype=torch.float64)
        covariances = factors @ factors.mT + torch.eye(6, dtype=torch.float64)
    elif covariance == "diag":
        covariances = torch.rand(7, 6, generator=generator, dtype=torch.float64) + 0.5
    else:
        covariances = torch.rand(7, generator=generator, dtype=torch.float64) + 0.5
    weights = torch.softmax(torch.randn(7, generator=generator, dtype=torch.float64), 0)
    fast = em_weighted_log_probs(em_features(x, covariance), weights, means, covariances)
    reference = gaussian_log_probs(x, means, covariances, covariance) + weights.log()
    torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-10)


def test_draw_categorical_matches_sample_categorical():
    from probgen.mixture.conjugate import draw_categorical
    from probgen.samplers.gibbs import sample_categorical

    logits = torch.randn(8, 500, 3, generator=torch.Generator().manual_seed(1)) * 3
    logits = logits.double()
    ours = draw_categorical(logits, torch.Generator().manual_seed(2))
    reference = sample_categorical(logits, torch.Generator().manual_seed(2))
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("covariance", ["diag", "full", "spherical"])
def test_log_prob_is_the_sum_of_component_densities(covariance):
    x = three_blobs(60, seed=3)
    start = starting_point(covariance, three_blobs())
    model = GaussianMixture(3, covariance=covariance).double().set_parameters(**start)
    covariances = start["covariances"]
    if covariance == "diag":
        covariances = np.stack([np.diag(v) for v in covariances])
    elif covariance == "spherical":
        covariances = np.stack([v * np.eye(2) for v in covariances])
    density = sum(
        w * stats.multivariate_normal(m, c).pdf(x)
        for w, m, c in zip(start["weights"], start["means"], covariances)
    )
    np.testing.assert_allclose(model.log_prob(x).numpy(), np.log(density), rtol=1e-12)
    batched = model.log_prob(torch.as_tensor(x).reshape(3, 20, 2))
    assert batched.shape == (3, 20)
    np.testing.assert_allclose(batched.reshape(-1).numpy(), np.log(density), rtol=1e-12)
    responsibilities = model.predict_proba(x)
    torch.testing.assert_close(responsibilities.sum(-1), torch.ones(60, dtype=torch.float64))
    assert torch.equal(model.predict(x), responsibilities.argmax(-1))


def test_fit_recovers_well_separated_components():
    truth = gmm_blobs.true_model()
    x = gmm_blobs.data(n_samples=3000, seed=1)
    model = gmm_blobs.build(n_init=2).fit(x)
    assert model.converged_
    order = [int(torch.cdist(mean[None], model.means).argmin()) for mean in truth.means]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(model.weights[order], truth.weights, atol=0.03, rtol=0)
    torch.testing.assert_close(model.means[order], truth.means, atol=0.1, rtol=0)
    torch.testing.assert_close(model.covariances[order], truth.covariances, atol=0.12, rtol=0)
    # EM's average log-likelihood never decreases.
    values = [record["mean_log_likelihood"] for record in model.history_]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))


def test_samples_follow_the_mixture():
    model = gmm_blobs.true_model()
    draws = model.sample(20000, seed=3)
    assert torch.equal(draws, model.sample(20000, seed=3))
    weights, means, covariances = model.weights, model.means, model.covariances
    mean = weights @ means
    second = (weights[:, None, None] * (covariances + means[:, :, None] * means[:, None])).sum(0)
    covariance = second - mean[:, None] * mean
    standard_error = (covariance.diagonal() / 20000).sqrt()
    assert ((draws.mean(0) - mean).abs() < 4 * standard_error).all()
    torch.testing.assert_close(torch.cov(draws.T), covariance, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("n_features", [1, 2])
def test_density_contract(n_features):
    x = gmm_blobs.data(n_samples=300)[:, :n_features]
    covariance = "full" if n_features == 2 else "diag"
    model = GaussianMixture(3, covariance=covariance, seed=0).double()
    report = check_density(model, x, fit_options={}, check_normalization=True)
    assert abs(report["grid_integral"] - 1) < 0.01
    assert report["save_round_trip"]


def test_float32_model_and_unfitted_errors():
    with pytest.raises(NotFittedError):
        GaussianMixture(2).log_prob(torch.zeros(3, 2))
    x = gmm_blobs.data(n_samples=400)
    single = GaussianMixture(3, seed=0).fit(x.float())
    double = GaussianMixture(3, seed=0).double().fit(x)
    assert single.dtype == torch.float32 and single.log_prob(x).dtype == torch.float32
    assert single.score(x) == pytest.approx(double.score(x), abs=1e-3)


def test_diverging_fit_raises_and_keeps_last_good_parameters():
    # Two tight clusters of identical points: without reg_covar the m-step variances are 0.
    x = torch.tensor([[0.0]] * 4 + [[5.0]] * 4, dtype=torch.float64)
    model = GaussianMixture(2, covariance="diag", reg_covar=0.0).double()
    good = {"weights": [0.5, 0.5], "means": [[1.0], [4.0]], "covariances": [[1.0], [1.0]]}
    model.set_parameters(**good)
    with pytest.raises(FitError, match="iteration 2 .* keeps its last good parameters"):
        model.fit(x, warm_start=True)
    # The kept parameters are EM's last valid iterate: the same as a one-iteration fit.
    one_step = GaussianMixture(2, covariance="diag", reg_covar=0.0, max_iter=1).double()
    with pytest.warns(ConvergenceWarning):
        one_step.set_parameters(**good).fit(x, warm_start=True)
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(model, name), getattr(one_step, name))
    assert (model.covariances > 0).all() and torch.isfinite(model.log_prob(x)).all()


def test_convergence_warning():
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        model = GaussianMixture(3, max_iter=2, seed=0).double().fit(three_blobs())
    assert not model.converged_ and model.n_iter_ == 2 and len(model.history_) == 2


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: GaussianMixture(0), "n_components"),
        (lambda: GaussianMixture(2, covariance="banana"), "covariance"),
        (lambda: GaussianMixture(2, init="best"), "init"),
        (lambda: GaussianMixture(2, reg_covar=-1.0), "reg_covar"),
        (lambda: GaussianMixture(2, prior={"shape": 1.0}), "prior"),
        (lambda: GaussianMixture(2, mean_precision=0.0), "mean_precision"),
        (lambda: GaussianMixture(2, variance_scale=[1.0, -1.0]), "variance_scale"),
    ],
)
def test_bad_settings_name_the_argument(build, match):
    with pytest.raises(DataError, match=match):
        build()


def test_bad_data_names_the_argument():
    model = GaussianMixture(2).double()
    with pytest.raises(DataError, match="data contains NaN"):
        model.fit(np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 2.0]]))
    with pytest.raises(DataError, match="data must have shape"):
        model.fit(np.arange(10.0))
    with pytest.raises(DataError, match="at least n_components"):
        model.fit(np.zeros((1, 2)))
    model.fit(three_blobs())
    with pytest.raises(DataError, match="x has shape"):
        model.log_prob(np.zeros((3, 5)))
    with pytest.raises(DataError, match="weights must be non-negative"):
        model.set_parameters(weights=[0.9, 0.9])
    with pytest.raises(DataError, match="covariances must be positive"):
        model.set_parameters(covariances=-np.stack([np.eye(2)] * 2))


# ---------------------------------------------------------------------------------------------
# Gibbs for the Bayesian mixture
# ---------------------------------------------------------------------------------------------
PRIOR = {
    "weight_concentration": 2.0,
    "mean_prior": [1.0, -1.0],
    "mean_precision": 0.5,
    "variance_shape": 3.0,
    "variance_scale": 2.0,
}


def gibbs(model, data, *, num_chains=8, num_samples=500, warmup=20, seed=0):
    return probgen.sample_chains(
        model,
        "gibbs",
        num_chains=num_chains,
        num_samples=num_samples,
        warmup=warmup,
        seed=seed,
        evidence=data,
        progress=False,
    )


def normal_inverse_gamma_posterior(x: np.ndarray, spherical: bool) -> dict[str, np.ndarray]:
    """Exact posterior means and sds of (mean, variance) of one Gaussian under PRIOR."""
    n, n_features = x.shape
    m0, kappa0 = np.array(PRIOR["mean_prior"]), PRIOR["mean_precision"]
    a0, b0 = PRIOR["variance_shape"], PRIOR["variance_scale"]
    kappa = kappa0 + n
    mean = (kappa0 * m0 + x.sum(0)) / kappa
    spread = ((x - x.mean(0)) ** 2).sum(0) + kappa0 * n * (x.mean(0) - m0) ** 2 / kappa
    if spherical:
        a, b = a0 + n * n_features / 2, np.full(n_features, b0 + spread.sum() / 2)
    else:
        a, b = a0 + n / 2, b0 + spread / 2
    variance = stats.invgamma(a, scale=b)
    # The mean's marginal posterior is Student-t with 2a degrees of freedom.
    mean_marginal = stats.t(2 * a, loc=mean, scale=np.sqrt(b / (a * kappa)))
    return {
        "mean": mean,
        "mean_sd": mean_marginal.std(),
        "variance": variance.mean(),
        "variance_sd": variance.std(),
    }


def assert_matches(draws: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> None:
    """Posterior mean within 4 MCSE, sd within 10%."""
    mcse = diagnostics.mcse_mean(draws)
    flat = draws.reshape(-1, *draws.shape[2:])
    assert np.all(np.abs(flat.mean(0) - mean) < 4 * mcse), (flat.mean(0), mean, mcse)
    np.testing.assert_allclose(flat.std(0), sd, rtol=0.1)


@pytest.mark.parametrize("covariance", ["diag", "spherical"])
def test_gibbs_one_component_matches_normal_inverse_gamma(covariance):
    rng = np.random.default_rng(1)
    x = rng.normal([2.0, -0.5], [1.5, 0.6], size=(40, 2))
    samples = gibbs(GaussianMixture(1, covariance=covariance, prior=PRIOR), x)
    exact = normal_inverse_gamma_posterior(x, spherical=covariance == "spherical")
    assert set(samples) == {"weights", "means", "variances", "assignments"}
    assert samples["means"].shape == (8, 500, 1, 2)
    assert samples["assignments"].shape == (8, 500, 40)
    np.testing.assert_array_equal(samples["weights"], 1.0)
    assert_matches(samples["means"][:, :, 0], exact["mean"], exact["mean_sd"])
    assert_matches(samples["variances"][:, :, 0], exact["variance"], exact["variance_sd"])
    if covariance == "spherical":
        np.testing.assert_array_equal(samples["variances"][..., 0], samples["variances"][..., 1])


def test_gibbs_assignments_follow_exact_responsibilities():
    x = torch.as_tensor(three_blobs(30, seed=5))
    start = starting_point("diag", three_blobs())
    model = GaussianMixture(3, covariance="diag", sort_components=False).double()
    model.set_parameters(**start)
    exact = model.predict_proba(x)  # (30, 3)
    num_chains = 4000
    state = {
        "weights": model.weights.expand(num_chains, 3),
        "means": model.means.expand(num_chains, 3, 2),
        "variances": model.covariances.expand(num_chains, 3, 2),
        "assignments": torch.zeros(num_chains, 30, dtype=torch.long),
    }
    generator = torch.Generator().manual_seed(0)
    new = model.gibbs_step(state, generator=generator, evidence=x)
    frequencies = torch.nn.functional.one_hot(new["assignments"], 3).double().mean(0)
    standard_error = (exact * (1 - exact) / num_chains).sqrt()
    assert ((frequencies - exact).abs() <= 4 * standard_error + 1e-12).all()
    # Chi-square over all points: sum of (observed - expected)^2 / expected, 2 df per point.
    expected = exact * num_chains
    counts = frequencies * num_chains
    keep = expected > 5
    statistic = float(((counts - expected)[keep] ** 2 / expected[keep]).sum())
    degrees = int(keep.sum()) - 30
    assert stats.chi2(degrees).sf(statistic) > 1e-4


def test_gibbs_two_separated_components_match_conjugate_posterior_given_labels():
    rng = np.random.default_rng(2)
    first = rng.normal([-5.0, 0.0], [1.0, 0.8], size=(60, 2))
    second = rng.normal([5.0, 2.0], [0.7, 1.2], size=(40, 2))
    x = np.concatenate([first, second])
    # The oracle conditions on the true labels. That is honest only if the posterior puts
    # practically all its mass on them: under the generating parameters every point's other
    # component is at least e^-30 less likely, so a relabelled point never appears in the run.
    truth = GaussianMixture(2, covariance="diag").double()
    truth.set_parameters(
        weights=[0.6, 0.4], means=[[-5.0, 0.0], [5.0, 2.0]], covariances=[[1.0, 0.64], [0.49, 1.44]]
    )
    log_odds = truth.predict_proba(x).clamp_min(1e-300).log()
    labels = np.repeat([0, 1], [60, 40])
    assert (log_odds[np.arange(100), labels] - log_odds[np.arange(100), 1 - labels] > 30).all()

    samples = gibbs(GaussianMixture(2, covariance="diag", prior=PRIOR), x, warmup=50)
    np.testing.assert_array_equal(samples["assignments"], np.broadcast_to(labels, (8, 500, 100)))
    for component, points in enumerate((first, second)):
        exact = normal_inverse_gamma_posterior(points, spherical=False)
        assert_matches(samples["means"][:, :, component], exact["mean"], exact["mean_sd"])
        assert_matches(
            samples["variances"][:, :, component], exact["variance"], exact["variance_sd"]
        )
    weights = stats.dirichlet([2.0 + 60, 2.0 + 40])
    assert_matches(samples["weights"], weights.mean(), np.sqrt(weights.var()))
    # Components stay ordered by the first feature of their means.
    assert (np.diff(samples["means"][..., 0], axis=-1) > 0).all()
    summary = samples.summary()
    assert summary["r_hat"].dropna().max() < 1.01


@pytest.mark.parametrize(
    ("covariance", "scale_site"), [("diag", "variances"), ("full", "covariances")]
)
def test_gibbs_same_seed_same_draws_and_lp(covariance, scale_site):
    x = gmm_blobs.data(n_samples=80)
    model = GaussianMixture(3, covariance=covariance)
    first = gibbs(model, x, num_chains=3, num_samples=20, warmup=5, seed=4)
    again = gibbs(model, x, num_chains=3, num_samples=20, warmup=5, seed=4)
    other = gibbs(model, x, num_chains=3, num_samples=20, warmup=5, seed=5)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["means"], other["means"])
    assert not np.array_equal(first[scale_site], other[scale_site])
    # The sampler passes the evidence to unnormalized_log_prob, so it reports lp.
    state = {name: torch.as_tensor(first[name][:, -1]) for name in first}
    state["assignments"] = state["assignments"].long()
    expected = model.unnormalized_log_prob(state, evidence=x).numpy()
    np.testing.assert_allclose(first.stats["lp"][:, -1], expected, rtol=1e-10)


@pytest.mark.parametrize("covariance", ["diag", "spherical"])
def test_unnormalized_log_prob_is_the_joint_density(covariance):
    x = three_blobs(12, seed=7)
    model = GaussianMixture(3, covariance=covariance, prior=PRIOR)
    state = model.initial_state(2, generator=torch.Generator().manual_seed(1), evidence=x)
    state = model.gibbs_step(state, generator=torch.Generator().manual_seed(2), evidence=x)
    values = model.unnormalized_log_prob(state, evidence=x).numpy()
    assert values.shape == (2,)
    m0, kappa = np.array(PRIOR["mean_prior"]), PRIOR["mean_precision"]
    a, b = PRIOR["variance_shape"], PRIOR["variance_scale"]
    for chain in range(2):
        w = state["weights"][chain].numpy()
        mu = state["means"][chain].numpy()
        var = state["variances"][chain].numpy()
        z = state["assignments"][chain].numpy()
        expected = stats.dirichlet([PRIOR["weight_concentration"]] * 3).logpdf(w)
        prior_variances = var[:, 0] if covariance == "spherical" else var
        expected += stats.invgamma(a, scale=b).logpdf(prior_variances).sum()
        expected += stats.norm(m0, np.sqrt(var / kappa)).logpdf(mu).sum()
        expected += np.log(w[z]).sum() + stats.norm(mu[z], np.sqrt(var[z])).logpdf(x).sum()
        assert values[chain] == pytest.approx(expected, rel=1e-10)


def test_data_scaled_prior_defaults_are_documented_values():
    x = gmm_blobs.data(n_samples=50)
    prior = GaussianMixture(2, covariance="diag").resolve_prior(x)
    torch.testing.assert_close(prior.mean_prior, x.mean(0))
    torch.testing.assert_close(prior.variance_scale, 0.1 * x.var(0, unbiased=False))
    assert float(prior.mean_precision) == 0.01 and float(prior.variance_shape) == 1.0
    assert float(prior.weight_concentration) == 1.0


def test_gibbs_bad_input_names_the_argument():
    x = three_blobs(20)
    model = GaussianMixture(2, covariance="diag")
    with pytest.raises(DataError, match="evidence must have shape"):
        gibbs(model, x[:, 0], num_samples=2, warmup=0)
    with pytest.raises(DataError, match="evidence contains NaN"):
        gibbs(model, np.where(np.arange(40).reshape(20, 2) == 3, np.nan, x), num_samples=2)
    with pytest.raises(DataError, match="evidence .* is required"):
        model.initial_state(2)
    full_state = GaussianMixture(2, covariance="full").initial_state(
        2, generator=torch.Generator().manual_seed(0), evidence=x
    )
    with pytest.raises(DataError, match="keys .*'covariances'.*covariance='full'"):
        GaussianMixture(2, covariance="full").gibbs_step(
            {**full_state, "variances": full_state["means"]}, evidence=x
        )
    fitted = GaussianMixture(2, covariance="diag", seed=0).double().fit(x)
    with pytest.raises(DataError, match="evidence has 3 features"):
        gibbs(fitted, np.zeros((5, 3)), num_samples=2)
    state = model.initial_state(2, generator=torch.Generator().manual_seed(0), evidence=x)
    with pytest.raises(DataError, match=r"state\['means'\]"):
        model.gibbs_step({**state, "means": state["means"][:, :1]}, evidence=x)


# ---------------------------------------------------------------------------------------------
# Gibbs with full covariances: Normal-Inverse-Wishart prior
# ---------------------------------------------------------------------------------------------
FULL_PRIOR = {
    "weight_concentration": 2.0,
    "mean_prior": [1.0, -1.0],
    "mean_precision": 0.5,
    "covariance_df": 5.0,
    "covariance_scale": [[1.0, 0.2], [0.2, 0.8]],
}


def normal_inverse_wishart_posterior(x: np.ndarray) -> dict[str, np.ndarray]:
    """Exact posterior moments of (mean, covariance) of one Gaussian under FULL_PRIOR."""
    n, n_features = x.shape
    m0, kappa0 = np.array(FULL_PRIOR["mean_prior"]), FULL_PRIOR["mean_precision"]
    nu0, psi0 = FULL_PRIOR["covariance_df"], np.array(FULL_PRIOR["covariance_scale"])
    kappa, nu = kappa0 + n, nu0 + n
    average = x.mean(0)
    mean = (kappa0 * m0 + n * average) / kappa
    scatter = (x - average).T @ (x - average)
    psi = psi0 + scatter + kappa0 * n / kappa * np.outer(average - m0, average - m0)
    # The mean's marginal posterior is multivariate t with nu - D + 1 degrees of freedom and
    # scale matrix psi / (kappa (nu - D + 1)); each component is a scaled Student-t.
    t_df = nu - n_features + 1
    t_scale = psi / (kappa * t_df)
    mean_sd = np.sqrt(np.diag(t_scale) * t_df / (t_df - 2))
    return {
        "mean": mean,
        "mean_sd": mean_sd,
        "covariance": psi / (nu - n_features - 1),
        "covariance_sd": inverse_wishart_sd(nu, psi),
    }


def inverse_wishart_sd(df: float, scale: np.ndarray) -> np.ndarray:
    """Entry-wise sd of InverseWishart(df, scale) (Press 1982, the closed-form variances)."""
    p = scale.shape[0]
    diagonal = np.diag(scale)
    variance = ((df - p + 1) * scale**2 + (df - p - 1) * np.outer(diagonal, diagonal)) / (
        (df - p) * (df - p - 1) ** 2 * (df - p - 3)
    )
    return np.sqrt(variance)


def test_gibbs_one_component_full_matches_normal_inverse_wishart():
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal([2.0, -0.5], [[2.0, 0.6], [0.6, 0.5]], size=40)
    samples = gibbs(GaussianMixture(1, covariance="full", prior=FULL_PRIOR), x)
    exact = normal_inverse_wishart_posterior(x)
    assert set(samples) == {"weights", "means", "covariances", "assignments"}
    assert samples["covariances"].shape == (8, 500, 1, 2, 2)
    np.testing.assert_array_equal(samples["weights"], 1.0)
    assert_matches(samples["means"][:, :, 0], exact["mean"], exact["mean_sd"])
    covariances = samples["covariances"][:, :, 0]
    np.testing.assert_array_equal(covariances, np.swapaxes(covariances, -1, -2))
    assert_matches(covariances, exact["covariance"], exact["covariance_sd"])


def test_inverse_wishart_draws_follow_the_distribution():
    from probgen.mixture.conjugate import draw_inverse_wishart

    scale = torch.tensor([[2.0, 0.5, -0.3], [0.5, 1.0, 0.2], [-0.3, 0.2, 0.7]], dtype=torch.float64)
    df = torch.tensor(9.0, dtype=torch.float64)
    n_draws = 20000
    covariances, factors = draw_inverse_wishart(
        df.expand(n_draws),
        torch.linalg.cholesky(scale).expand(n_draws, 3, 3),
        torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(factors @ factors.mT, covariances)
    draws = covariances.numpy()
    expected = scale.numpy() / (9.0 - 3 - 1)
    standard_error = draws.std(0) / np.sqrt(n_draws)
    assert (np.abs(draws.mean(0) - expected) < 4 * standard_error).all()
    np.testing.assert_allclose(draws.std(0), inverse_wishart_sd(9.0, scale.numpy()), rtol=0.05)
    # Each diagonal entry is InverseGamma((df - D + 1) / 2, scale_dd / 2).
    for feature in range(3):
        marginal = stats.invgamma((9.0 - 3 + 1) / 2, scale=float(scale[feature, feature]) / 2)
        assert stats.kstest(draws[:, feature, feature], marginal.cdf).pvalue > 1e-3
    again, _ = draw_inverse_wishart(
        df.expand(n_draws),
        torch.linalg.cholesky(scale).expand(n_draws, 3, 3),
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(again, covariances)


def test_inverse_wishart_log_prob_matches_scipy():
    from probgen.mixture.conjugate import draw_inverse_wishart, inverse_wishart_log_prob

    scale = torch.tensor([[1.5, 0.4], [0.4, 0.9]], dtype=torch.float64)
    df = torch.tensor(4.5, dtype=torch.float64)
    covariances, _ = draw_inverse_wishart(
        df.expand(5), torch.linalg.cholesky(scale).expand(5, 2, 2), torch.Generator().manual_seed(3)
    )
    ours = inverse_wishart_log_prob(covariances, df, scale).numpy()
    theirs = [stats.invwishart(4.5, scale.numpy()).logpdf(c) for c in covariances.numpy()]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_unnormalized_log_prob_full_is_the_joint_density():
    x = three_blobs(12, seed=7)
    model = GaussianMixture(3, covariance="full", prior=FULL_PRIOR)
    state = model.initial_state(2, generator=torch.Generator().manual_seed(1), evidence=x)
    state = model.gibbs_step(state, generator=torch.Generator().manual_seed(2), evidence=x)
    values = model.unnormalized_log_prob(state, evidence=x).numpy()
    assert values.shape == (2,)
    m0, kappa = np.array(FULL_PRIOR["mean_prior"]), FULL_PRIOR["mean_precision"]
    inverse_wishart = stats.invwishart(
        FULL_PRIOR["covariance_df"], np.array(FULL_PRIOR["covariance_scale"])
    )
    for chain in range(2):
        w = state["weights"][chain].numpy()
        mu = state["means"][chain].numpy()
        cov = state["covariances"][chain].numpy()
        z = state["assignments"][chain].numpy()
        expected = stats.dirichlet([FULL_PRIOR["weight_concentration"]] * 3).logpdf(w)
        for k in range(3):
            expected += inverse_wishart.logpdf(cov[k])
            expected += stats.multivariate_normal(m0, cov[k] / kappa).logpdf(mu[k])
            points = x[z == k]
            if len(points):
                expected += stats.multivariate_normal(mu[k], cov[k]).logpdf(points).sum()
        expected += np.log(w[z]).sum()
        assert values[chain] == pytest.approx(expected, rel=1e-10)


def test_full_prior_defaults_reduce_to_the_diag_prior_in_one_dimension():
    x = three_blobs(30, seed=2)
    prior = GaussianMixture(2, covariance="full").resolve_prior(x)
    x64 = torch.as_tensor(x)
    assert float(prior.covariance_df) == 3.0  # n_features + 1
    torch.testing.assert_close(prior.covariance_scale, 0.2 * torch.cov(x64.T, correction=0))
    torch.testing.assert_close(prior.mean_prior, x64.mean(0))
    # With D = 1 the default InverseWishart(2, 0.2 var) is InverseGamma(1, 0.1 var), the diag
    # default: the two models' joint densities agree on the same state.
    line = x[:, :1]
    full = GaussianMixture(2, covariance="full")
    state = full.initial_state(3, generator=torch.Generator().manual_seed(0), evidence=line)
    state = full.gibbs_step(state, generator=torch.Generator().manual_seed(1), evidence=line)
    diag_state = {**state, "variances": state["covariances"][..., 0]}
    del diag_state["covariances"]
    torch.testing.assert_close(
        full.unnormalized_log_prob(state, evidence=line),
        GaussianMixture(2, covariance="diag").unnormalized_log_prob(diag_state, evidence=line),
        rtol=1e-12,
        atol=1e-12,
    )


def test_gibbs_full_two_separated_components_match_conjugate_posterior_given_labels():
    rng = np.random.default_rng(2)
    first = rng.multivariate_normal([-5.0, 0.0], [[1.0, 0.5], [0.5, 0.8]], size=60)
    second = rng.multivariate_normal([5.0, 2.0], [[0.5, -0.3], [-0.3, 1.2]], size=40)
    x = np.concatenate([first, second])
    labels = np.repeat([0, 1], [60, 40])
    # As in the diag test: the oracle conditions on the true labels, honest only because every
    # point's other component is at least e^-30 less likely under the generating parameters.
    truth = GaussianMixture(2, covariance="full").double()
    truth.set_parameters(
        weights=[0.6, 0.4],
        means=[[-5.0, 0.0], [5.0, 2.0]],
        covariances=[[[1.0, 0.5], [0.5, 0.8]], [[0.5, -0.3], [-0.3, 1.2]]],
    )
    log_odds = truth.predict_proba(x).clamp_min(1e-300).log()
    assert (log_odds[np.arange(100), labels] - log_odds[np.arange(100), 1 - labels] > 30).all()

    samples = gibbs(GaussianMixture(2, covariance="full", prior=FULL_PRIOR), x, warmup=50)
    np.testing.assert_array_equal(samples["assignments"], np.broadcast_to(labels, (8, 500, 100)))
    for component, points in enumerate((first, second)):
        exact = normal_inverse_wishart_posterior(points)
        assert_matches(samples["means"][:, :, component], exact["mean"], exact["mean_sd"])
        assert_matches(
            samples["covariances"][:, :, component], exact["covariance"], exact["covariance_sd"]
        )
    weights = stats.dirichlet([2.0 + 60, 2.0 + 40])
    assert_matches(samples["weights"], weights.mean(), np.sqrt(weights.var()))
    assert (np.diff(samples["means"][..., 0], axis=-1) > 0).all()
    assert samples.summary()["r_hat"].dropna().max() < 1.01


def test_sort_state_permutes_full_covariances_with_their_means():
    from probgen.mixture.conjugate import sort_state

    means = torch.tensor([[[3.0, 0.0], [1.0, 0.0], [2.0, 0.0]]])
    covariances = torch.arange(1.0, 4.0).reshape(1, 3, 1, 1) * torch.eye(2)
    state = {
        "weights": torch.tensor([[0.25, 0.5, 0.25]]),
        "means": means,
        "covariances": covariances,
        "assignments": torch.tensor([[0, 1, 2, 0]]),
    }
    ordered = sort_state(state)
    assert ordered["means"][0, :, 0].tolist() == [1.0, 2.0, 3.0]
    assert ordered["weights"][0].tolist() == [0.5, 0.25, 0.25]
    assert ordered["covariances"][0, :, 0, 0].tolist() == [2.0, 3.0, 1.0]
    assert ordered["assignments"][0].tolist() == [2, 0, 1, 2]


def test_bad_full_prior_values_name_the_argument():
    x = three_blobs(20)
    with pytest.raises(DataError, match="covariance_df must be greater than n_features - 1"):
        GaussianMixture(2, covariance="full", covariance_df=1.0).resolve_prior(x)
    with pytest.raises(DataError, match="covariance_df must be a positive number"):
        GaussianMixture(2, covariance="full", prior={"covariance_df": 0.0})
    with pytest.raises(DataError, match="covariance_scale must be positive definite"):
        GaussianMixture(2, covariance="full", covariance_scale=[[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(DataError, match="covariance_scale must be a symmetric"):
        GaussianMixture(2, covariance="full", covariance_scale=[[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(DataError, match="covariance_scale must be positive"):
        GaussianMixture(2, covariance="full", covariance_scale=-1.0)
    with pytest.raises(DataError, match="covariance_scale has shape"):
        GaussianMixture(2, covariance="full", covariance_scale=np.eye(3)).resolve_prior(x)
    with pytest.raises(DataError, match="unknown key"):
        GaussianMixture(2, covariance="full", prior={"covariance_dof": 3.0})
    # Scalars and per-feature values are multiples of the identity and diagonals; the
    # configuration round-trips through the constructor (JSON-able lists).
    model = GaussianMixture(2, covariance="full", covariance_df=2.5, covariance_scale=[1.0, 2.0])
    torch.testing.assert_close(
        model.resolve_prior(x).covariance_scale, torch.diag(torch.tensor([1.0, 2.0])).double()
    )
    matrix = GaussianMixture(
        2, covariance="full", covariance_scale=np.array([[1.0, 0.1], [0.1, 1.0]])
    )
    assert GaussianMixture(**matrix.get_config()).prior_settings == matrix.prior_settings


@pytest.mark.gpu
def test_cuda_fit_and_gibbs_match_cpu():
    points = gmm_blobs.data(n_samples=300)
    cpu = gmm_blobs.build(n_init=1, max_iter=30).fit(points)
    cuda = gmm_blobs.build(n_init=1, max_iter=30).to("cuda").fit(points.to("cuda"))
    torch.testing.assert_close(cuda.means.cpu(), cpu.means)
    torch.testing.assert_close(cuda.log_prob(points.to("cuda")).cpu(), cpu.log_prob(points))
    assert cuda.sample(5, seed=0).device.type == "cuda"
    draws = probgen.sample_chains(
        GaussianMixture(3, covariance="diag").to("cuda"),
        "gibbs",
        num_chains=2,
        num_samples=20,
        warmup=5,
        seed=0,
        evidence=points.to("cuda"),
        progress=False,
    )
    assert np.isfinite(draws["means"]).all()


def test_fit_seed_is_a_deprecated_alias_that_still_applies():
    x = three_blobs(120)
    reference = GaussianMixture(3, init="random", seed=7).double().fit(x)
    model = GaussianMixture(3, init="random", seed=0).double()
    with pytest.warns(DeprecationWarning, match=r"GaussianMixture\.fit\(seed=.*constructor"):
        model.fit(x, seed=7)
    assert torch.equal(model.means, reference.means)
    assert model.history_ == reference.history_
    assert model.history_[0] == {
        "iteration": 1,
        "mean_log_likelihood": reference.history_[0]["mean_log_likelihood"],
    }
    assert model.seed == 0


def test_old_history_of_bare_averages_loads_as_mean_log_likelihood_records():
    model = GaussianMixture(2, covariance="diag", seed=0).double().fit(three_blobs(60))
    state = model.get_fitted_state()
    state["history_"] = [r["mean_log_likelihood"] for r in model.history_]
    shell = GaussianMixture(2, covariance="diag")
    shell.set_fitted_state(state)
    assert shell.history_ == model.history_
