"""Diffusion likelihood bounds beside probgen's other likelihood models, at a stated budget.

1. Binarized MNIST (`../shared/data/binarized_mnist`): `Diffusion` (recipe diffusion_mnist: a
   U-Net, T = 1000 cosine steps, hybrid loss with learned variances, binary discretised
   decoder), MADE (one hidden layer of 500), the VAE (784-200-200-50, scored by IWAE) and the
   gated PixelCNN (recipe pixelcnn_mnist), each trained for the same wall-clock budget
   (`--budget-seconds`: a few steps are timed, then the step count that fits the budget is
   run) and scored on the first `--n-test` test images in nats. The diffusion figure is the
   negative of its variational bound estimated without bias from sampled steps (with its
   standard error), plus the bound over all T steps on a smaller subset; MADE and PixelCNN are
   exact; the VAE's IWAE is an estimate whose expectation is a lower bound.
2. 2-D toy (recipe diffusion_gaussians, known density): held-out mean bound over all T steps, the
   probability-flow ODE estimate, and the true mean log-density, for T = 20 and T = 100.

Usage:
    python benchmarks/diffusion_likelihood.py [--quick] [--device cpu|cuda]
        [--budget-seconds S] [--n-test N] [--n-test-diffusion N] [--all-steps-images N]
        [--out PATH]

The diffusion bound costs one U-Net pass per image and step (tens of milliseconds each on a
shared CPU), so it is scored on the first `--n-test-diffusion` test images (default 100) and
the bound over all T steps on the first `--all-steps-images` (default 2); the exact models
and the VAE on all `--n-test`. The machine's load averages are recorded at start and end.

Timings come from whatever machine runs it (the recorded run: a shared 2-core CPU machine, so
they are noisy). Writes benchmarks/results/diffusion_likelihood.json (`--quick` writes to
/tmp/diffusion_likelihood_quick.json unless `--out` is given).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.recipes import (  # noqa: E402
    diffusion_gaussians,
    diffusion_mnist,
    pixelcnn_mnist,
    vae_mnist,  # noqa: E402
)
from probgen.recipes._shared_data import SharedDataMissing  # noqa: E402

from probgen.deep.made import MADE  # noqa: E402


def _machine(device: str) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "note": "timings from a shared machine (other jobs running): noisy",
        "load_average_1_5_15_min_at_start": _load_average(),
    }


def _load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (other jobs share its cores)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def _budgeted_fit(build, data: torch.Tensor, budget: float, device: str, batch_size: int):
    """Time 5 steps on a throwaway copy, then fit a fresh model for the steps that fit."""
    probe = build().to(device)
    # One untimed step first: the first step also pays for lazy initialisation.
    probe.fit(data[:2000], n_epochs=1, max_steps=1, batch_size=batch_size)
    started = time.perf_counter()
    probe.fit(data[:2000], n_epochs=1, max_steps=5, batch_size=batch_size)
    step_seconds = (time.perf_counter() - started) / 5
    max_steps = max(1, int(budget / step_seconds))
    model = build().to(device)
    started = time.perf_counter()
    model.fit(data, n_epochs=100_000, max_steps=max_steps, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return model, {
        "training_seconds": seconds,
        "training_steps": max_steps,
        "epochs_equivalent": max_steps * batch_size / len(data),
        "batch_size": batch_size,
    }


def _nll(values: torch.Tensor) -> dict[str, float]:
    values = values.double().cpu()
    return {
        "test_nll_nats": -float(values.mean()),
        "standard_error": float(values.std() / math.sqrt(len(values))),
    }


@torch.no_grad()
def _score(function, *args, **kwargs):
    return function(*args, **kwargs)


def mnist(
    budget: float, n_test: int, device: str, quick: bool, n_diffusion: int, n_all: int
) -> dict[str, Any]:
    try:
        train = diffusion_mnist.data("train")
        test = diffusion_mnist.data("test")[:n_test]
    except SharedDataMissing as error:
        return {"status": "missing", "reason": str(error)}
    flat_train, flat_test = train.reshape(-1, 784), test.reshape(-1, 784)
    rows: dict[str, Any] = {}
    bound_steps = 10 if quick else 50
    # A U-Net pass per image and step is the cost on a CPU: the diffusion bound is scored on
    # the first n_diffusion test images (the exact models on all n_test of them).
    n_diffusion, n_all = min(n_diffusion, n_test), min(n_all, n_diffusion, n_test)

    print("  diffusion ...", flush=True)
    model, info = _budgeted_fit(diffusion_mnist.build, train, budget, device, 64)
    started = time.perf_counter()
    estimate = model.variational_bound(test[:n_diffusion].to(device), steps=bound_steps, seed=0)
    sampled_seconds = time.perf_counter() - started
    started = time.perf_counter()
    exact = model.variational_bound(test[:n_all].to(device), steps="all", seed=0)
    all_seconds = time.perf_counter() - started
    rows["diffusion"] = {
        **info,
        **_nll(estimate),
        "what": f"negative variational bound, unbiased estimate from {bound_steps} sampled "
        "steps per image (kind 'estimate'); an upper bound on the NLL in expectation",
        "n_test_images": n_diffusion,
        "model": "U-Net (32, 64), T=1000 cosine, hybrid loss, learned variances, binary "
        "discretised decoder",
        "evaluation_seconds": sampled_seconds,
        "all_steps_subset": {
            "n_images": n_all,
            **_nll(exact),
            "sampled_estimate_same_images": -float(estimate[:n_all].double().mean()),
            "seconds": all_seconds,
        },
        "bits_per_dim": -float(estimate.double().mean()) / (784 * math.log(2)),
    }
    print(f"    {rows['diffusion']['test_nll_nats']:.2f} nats", flush=True)

    print("  made ...", flush=True)
    made, info = _budgeted_fit(
        lambda: MADE(784, hidden_dims=(500,), n_epochs=1, seed=0), flat_train, budget, device, 100
    )
    rows["made"] = {
        **info,
        **_nll(_score(made.log_prob, flat_test.to(device))),
        "what": "exact NLL",
        "model": "MADE, one hidden layer of 500, one mask",
    }
    print(f"    {rows['made']['test_nll_nats']:.2f} nats", flush=True)

    print("  vae ...", flush=True)
    k = 100 if quick else 1000
    vae, info = _budgeted_fit(vae_mnist.build, flat_train, budget, device, 100)
    rows["vae"] = {**info, **_nll(vae.iwae(flat_test.to(device), k=k)),
                   "what": f"IWAE estimate, k={k} (its expectation is a lower bound)",
                   "model": "VAE 784-200-200-50, Bernoulli decoder, ELBO training"}
    print(f"    {rows['vae']['test_nll_nats']:.2f} nats", flush=True)

    print("  pixelcnn ...", flush=True)
    pixel, info = _budgeted_fit(pixelcnn_mnist.build, train.long(), budget, device, 32)
    rows["pixelcnn"] = {**info, **_nll(_score(pixel.log_prob, test.long().to(device))),
                        "what": "exact NLL", "model": "gated PixelCNN, 7 layers of 64"}
    print(f"    {rows['pixelcnn']['test_nll_nats']:.2f} nats", flush=True)
    return {
        "status": "ok",
        "training_budget_seconds_each": budget,
        "test_subset": f"first {n_test} of the 10000 test images",
        "reference_nll_nats": {"pixelcnn_paper": 81.30, "row_lstm_paper": 80.54,
                               "iwae_paper": 86.76},
        "models": rows,
    }


def toy(budget: float, device: str, quick: bool) -> dict[str, Any]:
    train = diffusion_gaussians.data("train")
    test = diffusion_gaussians.data("test", n=500 if quick else 2000)
    true = float(diffusion_gaussians.true_log_prob(test).mean())
    rows = []
    for n_steps in (20, 100):
        model, info = _budgeted_fit(
            lambda n_steps=n_steps: diffusion_gaussians.build(n_steps=n_steps), train,
            budget / 2, device, 256,
        )
        bound = model.log_prob(test.to(device)).double().cpu()
        ode = model.ode_log_likelihood(test[:200].to(device), n_steps=100).double().cpu()
        rows.append({
            "n_steps": n_steps,
            **info,
            "mean_bound": float(bound.mean()),
            "bound_standard_error": float(bound.std() / math.sqrt(len(bound))),
            "mean_ode_estimate_first_200": float(ode.mean()),
            "true_mean_log_density": true,
            "true_mean_log_density_first_200": float(
                diffusion_gaussians.true_log_prob(test[:200]).mean()
            ),
            "gap_true_minus_bound": true - float(bound.mean()),
        })
        print(f"  toy T={n_steps}: bound {bound.mean():.3f}, ode {ode.mean():.3f}, "
              f"true {true:.3f}", flush=True)
    return {"status": "ok", "training_budget_seconds_each": budget / 2, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget-seconds", type=float, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--n-test-diffusion", type=int, default=None,
                        help="test images for the diffusion bound (default: min(n-test, 100))")
    parser.add_argument("--all-steps-images", type=int, default=None,
                        help="images scored by the bound over all T steps (default 2)")
    args = parser.parse_args()
    budget = args.budget_seconds or (5.0 if args.quick else 120.0)
    n_test = args.n_test or (50 if args.quick else 500)
    out = Path(args.out) if args.out else (
        Path("/tmp/diffusion_likelihood_quick.json") if args.quick
        else ROOT / "benchmarks" / "results" / "diffusion_likelihood.json"
    )
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "diffusion_likelihood",
        "quick": args.quick,
        "machine": _machine(args.device),
    }
    print("2-D toy", flush=True)
    results["toy_2d"] = toy(budget, args.device, args.quick)
    print("binarized MNIST", flush=True)
    n_diffusion = args.n_test_diffusion or min(n_test, 100)
    results["binarized_mnist"] = mnist(
        budget, n_test, args.device, args.quick, n_diffusion, args.all_steps_images or 2
    )
    results["total_seconds"] = time.perf_counter() - started
    results["machine"]["load_average_1_5_15_min_at_end"] = _load_average()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
