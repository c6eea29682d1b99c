"""PixelRNN (Row LSTM, Diagonal BiLSTM) beside the gated PixelCNN on binarized MNIST, at one
stated CPU wall-clock budget per model.

Each model (recipes pixelrnn_mnist with layer="row" and layer="diagonal", and pixelcnn_mnist;
7 layers each, batch 32, Adam at 1e-3) is trained on the 50,000 training images for the same
wall-clock budget (`--budget-seconds`: a few steps are timed on a throwaway copy, then a fresh
model runs the number of steps that fits the budget), and scored exactly on the first
`--n-test` test images in nats (mean, standard error) and bits per pixel. The paper's figures
(van den Oord et al., 2016, Table 4: 80.54 Row LSTM, 79.20 Diagonal BiLSTM, 81.30 PixelCNN)
come from days of GPU training; a few minutes of CPU land far above them, so the comparison
here is between the three models at equal budget, not with the paper.

Usage:
    python benchmarks/pixelrnn_mnist.py [--quick] [--budget-seconds S] [--n-test N]
        [--threads N] [--only row,diagonal,pixelcnn] [--out PATH]

The figures are quality after a budget, not time ratios to a reference library, so there is no
`--load` option. Torch runs on `--threads` threads (default 1: the recorded run shared a
2-core machine with other jobs, where one thread is the faster setting for these loops of
small ops). Writes benchmarks/results/pixelrnn_mnist.json (`--quick`: a seconds-long smoke run
with the recipes' SMOKE sizes, written to /tmp/pixelrnn_mnist_quick.json unless `--out`).
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

from probgen.recipes import pixelcnn_mnist, pixelrnn_mnist  # noqa: E402
from probgen.recipes._shared_data import SharedDataMissing  # noqa: E402

PAPER_NLL_NATS = {"row": 80.54, "diagonal": 79.20, "pixelcnn": 81.30}
BATCH_SIZE = 32


def _machine() -> dict[str, Any]:
    import probgen

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "probgen": probgen.__version__,
        "note": "a shared CPU machine (other jobs running): timings and so the steps that fit "
        "the budget are noisy",
    }


def _builders(quick: bool) -> dict[str, Any]:
    rnn_small = pixelrnn_mnist.SMOKE["build"] if quick else {}
    cnn_small = pixelcnn_mnist.SMOKE["build"] if quick else {}
    return {
        "row": lambda: pixelrnn_mnist.build(layer="row", **rnn_small),
        "diagonal": lambda: pixelrnn_mnist.build(layer="diagonal", **rnn_small),
        "pixelcnn": lambda: pixelcnn_mnist.build(**cnn_small),
    }


def _describe(model: Any) -> str:
    n_parameters = sum(p.numel() for p in model.parameters())
    if type(model).__name__ == "PixelRNN":
        kind = "Row LSTM" if model.layer == "row" else "Diagonal BiLSTM"
        return (
            f"PixelRNN {kind}: {model.first_kernel_size}x{model.first_kernel_size} mask A, "
            f"{model.n_layers} layers of h={model.n_hidden}, {n_parameters} parameters"
        )
    return (
        f"gated PixelCNN: {model.n_layers} layers of {model.n_filters} filters, "
        f"{n_parameters} parameters"
    )


def _budgeted_fit(build: Any, train: torch.Tensor, budget: float, probe_steps: int):
    """Time `probe_steps` steps on a throwaway copy (after one untimed warm-up step), then fit
    a fresh model for the steps that fit the budget."""
    build().fit(train[:BATCH_SIZE], n_epochs=1, max_steps=1)  # warm-up, not timed
    probe = build()
    started = time.perf_counter()
    probe.fit(train[:2000], n_epochs=1, max_steps=probe_steps, batch_size=BATCH_SIZE)
    step_seconds = (time.perf_counter() - started) / probe_steps
    max_steps = max(1, int(budget / step_seconds))
    model = build()
    started = time.perf_counter()
    model.fit(train, n_epochs=100_000, max_steps=max_steps, batch_size=BATCH_SIZE)
    seconds = time.perf_counter() - started
    return model, {
        "probe_seconds_per_step": step_seconds,
        "training_steps": max_steps,
        "training_seconds": seconds,
        "epochs_equivalent": max_steps * BATCH_SIZE / len(train),
        "batch_size": BATCH_SIZE,
        "final_train_loss_nats_per_pixel": model.history_[-1]["train_loss"],
    }


@torch.no_grad()
def _score(model: Any, test: torch.Tensor) -> dict[str, float]:
    started = time.perf_counter()
    values = torch.cat([model.log_prob(chunk) for chunk in test.split(100)]).double()
    nll = -float(values.mean())
    return {
        "test_nll_nats": nll,
        "standard_error": float(values.std() / math.sqrt(len(values))),
        "bits_per_pixel": nll / (784 * math.log(2)),
        "evaluation_seconds": time.perf_counter() - started,
    }


def run(quick: bool, budget: float, n_test: int, only: list[str]) -> dict[str, Any]:
    try:
        train = pixelrnn_mnist.data("train", n=2000 if quick else None)
        test = pixelrnn_mnist.data("test", n=n_test)
    except SharedDataMissing as error:
        return {"status": "missing", "reason": str(error)}
    rows: dict[str, Any] = {}
    for name, build in _builders(quick).items():
        if name not in only:
            continue
        print(f"  {name} ...", flush=True)
        model, info = _budgeted_fit(build, train, budget, probe_steps=2 if quick else 3)
        rows[name] = {
            "model": _describe(model),
            **info,
            **_score(model, test),
            "paper_test_nll_nats": PAPER_NLL_NATS[name],
        }
        print(
            f"    {rows[name]['test_nll_nats']:.2f} nats after {info['training_steps']} steps "
            f"({info['training_seconds']:.0f} s; paper {PAPER_NLL_NATS[name]})",
            flush=True,
        )
    return {
        "status": "ok",
        "n_train": len(train),
        "n_test": len(test),
        "test_subset": f"the first {len(test)} images of binarized_mnist_test.amat"
        + (" (all of them)" if len(test) == 10_000 else ""),
        "budget_seconds_per_model": budget,
        "models": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--budget-seconds", type=float, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="row,diagonal,pixelcnn")
    parser.add_argument("--out", default=None)
    arguments = parser.parse_args()

    torch.set_num_threads(arguments.threads)
    quick = arguments.quick
    budget = arguments.budget_seconds or (2.0 if quick else 240.0)
    n_test = arguments.n_test or (20 if quick else 1000)
    only = [name.strip() for name in arguments.only.split(",")]
    default_out = "/tmp/pixelrnn_mnist_quick.json" if quick else ROOT / "benchmarks" / (
        "results/pixelrnn_mnist.json"
    )
    out = Path(arguments.out or default_out)

    started = time.perf_counter()
    results = {
        "benchmark": "pixelrnn_mnist",
        "command": "python benchmarks/pixelrnn_mnist.py " + " ".join(sys.argv[1:]),
        "quick": quick,
        "machine": _machine(),
        "binarized_mnist": run(quick, budget, n_test, only),
        "paper": {
            "source": "van den Oord, Kalchbrenner, Kavukcuoglu (2016), Pixel Recurrent Neural "
            "Networks, Table 4",
            "test_nll_nats": PAPER_NLL_NATS,
        },
    }
    results["total_seconds"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
