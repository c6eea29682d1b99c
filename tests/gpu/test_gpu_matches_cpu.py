"""On CUDA, HMMs, Bayesian networks, RBMs and the samplers give the CPU's results.

Marker `gpu`: skipped without CUDA (tests/conftest.py), run where a device is lent. Each test
fits or builds on the CPU, moves a copy to CUDA and compares the numbers the two compute from
the same parameters and data; random draws come from different generators on the two devices,
so sampled results are compared as distributions, within their Monte Carlo error.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import probgen

pytestmark = pytest.mark.gpu


def _rolls(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4, size=60) for _ in range(8)]


def _to_cpu(value):
    return value.detach().cpu() if torch.is_tensor(value) else value


@pytest.mark.parametrize("emission", ["categorical", "gaussian"])
def test_hmm_scores_and_paths_match_cpu(emission):
    if emission == "categorical":
        data = _rolls()
        model = probgen.HMM(3, "categorical", n_symbols=4, max_iter=10, seed=0)
    else:
        rng = np.random.default_rng(1)
        data = [rng.normal(size=(50, 2)) + rng.integers(0, 2) * 3 for _ in range(6)]
        model = probgen.HMM(2, "gaussian", n_features=2, max_iter=10, seed=0)
    model.fit(data)
    gpu = copy.deepcopy(model).to("cuda")
    cpu_scores = model.log_prob(data)
    gpu_scores = gpu.log_prob(data)
    assert gpu_scores.device.type == "cuda"
    torch.testing.assert_close(_to_cpu(gpu_scores), cpu_scores, rtol=1e-4, atol=1e-3)
    cpu_paths, cpu_best = model.viterbi(data)
    gpu_paths, gpu_best = gpu.viterbi(data)
    torch.testing.assert_close(_to_cpu(gpu_best), cpu_best, rtol=1e-4, atol=1e-3)
    assert torch.equal(_to_cpu(gpu_paths), cpu_paths)


def test_hmm_fit_on_cuda_matches_cpu_fit():
    data = _rolls(2)
    cpu = probgen.HMM(2, "categorical", n_symbols=4, max_iter=20, tol=0.0, seed=3).fit(data)
    gpu = probgen.HMM(2, "categorical", n_symbols=4, max_iter=20, tol=0.0, seed=3).to("cuda")
    gpu.fit(data)
    # Same seeded start (drawn on the CPU generator or not, the likelihood reached must agree).
    torch.testing.assert_close(
        _to_cpu(gpu.log_prob(data)).sum(), cpu.log_prob(data).sum(), rtol=1e-3, atol=0.5
    )


def _asia_frame(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    smoke = rng.random(n) < 0.5
    cancer = rng.random(n) < np.where(smoke, 0.2, 0.05)
    xray = rng.random(n) < np.where(cancer, 0.9, 0.1)
    as_text = {True: "yes", False: "no"}
    return pd.DataFrame(
        {
            "smoke": [as_text[v] for v in smoke],
            "cancer": [as_text[v] for v in cancer],
            "xray": [as_text[v] for v in xray],
        }
    )


def test_bayesian_network_queries_match_cpu():
    frame = _asia_frame()
    model = probgen.BayesianNetwork([("smoke", "cancer"), ("cancer", "xray")]).fit(frame)
    gpu = copy.deepcopy(model).to("cuda")
    torch.testing.assert_close(_to_cpu(gpu.log_prob(frame)), model.log_prob(frame))
    evidence = frame[["xray"]].iloc[:50]
    cpu_table = model.query(["cancer"], evidence=evidence)
    gpu_table = gpu.query(["cancer"], evidence=evidence)
    torch.testing.assert_close(
        _to_cpu(torch.as_tensor(gpu_table.values)),
        torch.as_tensor(cpu_table.values),
        rtol=1e-5,
        atol=1e-6,
    )
    draws = gpu.sample(4000, seed=0, as_frame=True)
    # P(smoke = yes) from the fitted table, against the GPU draws' frequency (4 binomial SEs).
    p = float(model.query(["smoke"]).values[list(model.states["smoke"]).index("yes")])
    frequency = float((draws["smoke"] == "yes").mean())
    assert abs(frequency - p) < 4 * np.sqrt(p * (1 - p) / 4000)


def test_rbm_free_energy_and_exact_log_prob_match_cpu():
    rng = np.random.default_rng(0)
    data = (rng.random((256, 8)) < 0.3).astype(np.float32)
    model = probgen.RBM(8, 6, n_epochs=3, seed=0)
    model.fit(data)
    gpu = copy.deepcopy(model).to("cuda")
    torch.testing.assert_close(
        _to_cpu(gpu.log_prob(data)), model.log_prob(data), rtol=1e-4, atol=1e-4
    )
    # Gibbs draws on the GPU follow the same model: mean activations agree with the CPU's.
    cpu_mean = model.sample(4000, seed=0).float().mean(0)
    gpu_mean = _to_cpu(gpu.sample(4000, seed=0)).float().mean(0)
    assert float((cpu_mean - gpu_mean).abs().max()) < 4 * np.sqrt(0.25 / 4000) * np.sqrt(2) * 2


def _gaussian_target(device: str):
    loc = torch.tensor([1.0, -1.0], dtype=torch.float64, device=device)
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64, device=device)

    def log_density(x: torch.Tensor) -> torch.Tensor:
        assert x.device.type == device
        return torch.distributions.Normal(loc, scale).log_prob(x).sum(-1)

    return log_density, torch.zeros(2, dtype=torch.float64, device=device)


@pytest.mark.parametrize("method", ["mh", "nuts"])
def test_samplers_on_a_cuda_target_match_cpu(method):
    from probgen.samplers.diagnostics import mcse_mean

    settings = dict(num_chains=8, num_samples=400, warmup=300, seed=0, progress=False)
    results = {}
    for device in ("cpu", "cuda"):
        target, initial = _gaussian_target(device)
        results[device] = probgen.sample_chains(target, method, initial=initial, **settings)
    cpu, gpu = np.asarray(results["cpu"]["x"]), np.asarray(results["cuda"]["x"])
    # Both estimate the same mean (1, -1); allow four Monte Carlo standard errors.
    error = np.hypot(mcse_mean(cpu), mcse_mean(gpu))
    difference = np.abs(cpu.reshape(-1, 2).mean(0) - gpu.reshape(-1, 2).mean(0))
    assert np.all(difference < 4 * error + 1e-3), (difference, error)
    np.testing.assert_allclose(gpu.reshape(-1, 2).std(0), [1.0, 2.0], rtol=0.15)
    np.testing.assert_allclose(cpu.reshape(-1, 2).std(0), [1.0, 2.0], rtol=0.15)
