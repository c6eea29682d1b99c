"""probgen's RBM side by side with scikit-learn's BernoulliRBM, in one run.

1. Binarised digits (scikit-learn's 8x8 digits > 7), 256 hidden units, batch 64, learning rate
   0.05, PCD-1, the same number of epochs for both: seconds per epoch (median of repeats, the
   two libraries alternating; probgen with its default `monitor="auto"`, and also timed with
   monitoring off to give the default monitoring's share of an epoch) and, at equal epochs,
   the exact pseudo-log-likelihood of both seed-0 models (computed by one function),
   scikit-learn's own stochastic pseudo-likelihood (`score_samples`), and an AIS
   log-likelihood. Run at 1792 rows (a multiple of 64) and at
   all 1797 rows (short last batch: both libraries average each update over its rows).
2. Binarized MNIST, 500 hidden units, PCD-1 for a stated number of epochs (CPU time stated):
   test log-likelihood by AIS (100 runs, 14,500 inverse temperatures) next to Salakhutdinov and
   Murray (2008): CD1 -125.53 and CD25 -86.34 nats.
3. DEBD sets (nltcs, mushrooms, dna, nips): RBMs with 20 hidden units, test log-likelihood
   exact (enumerating the 16 visible units of nltcs, or the 20 hidden units), probgen and
   scikit-learn trained with the same settings and scored by the same exact function.

Usage:
    python benchmarks/rbm_vs_sklearn.py [--quick] [--threads N] [--load both] [--repeats N]
        [--skip-mnist] [--out PATH]

Part 1's timings (the headline ratio) run quiet and beside a CPU-burning process (`--load`,
default both; each digits row carries "load"; the quality figures come from the quiet run).

`--skip-mnist` leaves out part 2 (minutes of training and AIS) and keeps the MNIST entry of the
existing results file, marked ``"carried_over_from_previous_run": true``.

Writes benchmarks/results/rbm_vs_sklearn.json (or `--out`) and prints a table. Threads: by
default neither torch nor the BLAS under numpy/scikit-learn is limited, so each library runs
as a user gets it (probgen applies its own thread policy); `--threads N` limits both.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _load import add_options, apply_threads, cpu_model, load_modes, under

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.recipes._shared_data import SharedDataMissing  # noqa: E402

from probgen.boltzmann import RBM  # noqa: E402

SALAKHUTDINOV_MURRAY_2008 = {"CD1": -125.53, "CD25": -86.34}
MADE_TEST_NLL = {"dna": 83.63, "mushrooms": 9.68, "nips": 280.25}  # models/made_debd.py


def _sklearn_rbm(n_hidden: int, learning_rate: float, batch_size: int, epochs: int, seed: int):
    from sklearn.neural_network import BernoulliRBM

    return BernoulliRBM(
        n_components=n_hidden,
        learning_rate=learning_rate,
        batch_size=batch_size,
        n_iter=epochs,
        random_state=seed,
    )


def _as_probgen(sklearn_model: Any, n_visible: int) -> RBM:
    """The scikit-learn model's parameters in a probgen RBM (float64), for equal scoring."""
    n_hidden = sklearn_model.components_.shape[0]
    rbm = RBM(n_visible, n_hidden).double()
    return rbm.set_parameters(
        weights=torch.tensor(sklearn_model.components_.T, dtype=torch.float64),
        visible_bias=torch.tensor(sklearn_model.intercept_visible_, dtype=torch.float64),
        hidden_bias=torch.tensor(sklearn_model.intercept_hidden_, dtype=torch.float64),
    )


def _sklearn_score(sklearn_model: Any, data: np.ndarray, repeats: int = 20) -> float:
    """scikit-learn's stochastic pseudo-likelihood (one random bit per row), averaged."""
    return float(np.mean([sklearn_model.score_samples(data).mean() for _ in range(repeats)]))


def _with_our_parameters(template: Any, ours: RBM) -> Any:
    import copy

    clone = copy.deepcopy(template)
    clone.components_ = ours.weights.detach().double().numpy().T.copy()
    clone.intercept_visible_ = ours.visible_bias.detach().double().numpy().copy()
    clone.intercept_hidden_ = ours.hidden_bias.detach().double().numpy().copy()
    return clone


# ---------------------------------------------------------------------------------------------
# 1. digits: speed and pseudo-likelihood at equal epochs
# ---------------------------------------------------------------------------------------------
def digits_comparison(epochs: int, repeats: int, ais_betas: int) -> list[dict[str, Any]]:
    from sklearn.datasets import load_digits

    full = (load_digits().data > 7).astype(np.float32)
    rows = []
    for n_rows in (1792, 1797):
        data = full[:n_rows]
        tensor = torch.from_numpy(data)
        ours_seconds, theirs_seconds, ours_cpu, theirs_cpu = [], [], [], []
        unmonitored_seconds: list[float] = []
        fitted: list[tuple[RBM, Any]] = []
        for repeat in range(repeats):
            # probgen's defaults (monitor="auto"), as a new user runs it; the same fit with
            # monitoring off gives the cost of the default monitoring.
            settings = dict(
                learning_rate=0.05, batch_size=64, n_epochs=epochs, method="pcd", cd_steps=1
            )
            bare = RBM(64, 256, monitor=(), seed=repeat, **settings)
            started = time.perf_counter()
            bare.fit(tensor)
            unmonitored_seconds.append((time.perf_counter() - started) / epochs)
            ours = RBM(64, 256, seed=repeat, **settings)
            started, cpu_started = time.perf_counter(), time.process_time()
            ours.fit(tensor)
            ours_seconds.append((time.perf_counter() - started) / epochs)
            ours_cpu.append((time.process_time() - cpu_started) / epochs)
            theirs = _sklearn_rbm(256, 0.05, 64, epochs, repeat)
            started, cpu_started = time.perf_counter(), time.process_time()
            theirs.fit(data)
            theirs_seconds.append((time.perf_counter() - started) / epochs)
            theirs_cpu.append((time.process_time() - cpu_started) / epochs)
            fitted.append((ours, theirs))
        # The quality figures belong to the seed-0 models, whatever the number of repeats.
        ours_model, theirs_model = fitted[0]
        theirs_as_ours = _as_probgen(theirs_model, 64)
        data64 = tensor.double()
        ours64 = (
            RBM(64, 256)
            .double()
            .set_parameters(
                weights=ours_model.weights.double(),
                visible_bias=ours_model.visible_bias.double(),
                hidden_bias=ours_model.hidden_bias.double(),
            )
        )
        row: dict[str, Any] = {
            "rows": n_rows,
            "short_last_batch": n_rows % 64,
            "epochs": epochs,
            "repeats": repeats,
            "quality_figures_seed": 0,
            "sklearn_dtype": str(theirs_model.components_.dtype),
            "probgen_dtype": str(ours_model.dtype).replace("torch.", ""),
            "seconds_per_epoch": {
                "probgen": statistics.median(ours_seconds),
                "sklearn": statistics.median(theirs_seconds),
            },
            "probgen_monitor": "auto (default)",
            "probgen_seconds_per_epoch_monitor_off": statistics.median(unmonitored_seconds),
            "probgen_default_monitoring_fraction_of_epoch": (
                statistics.median(ours_seconds) / statistics.median(unmonitored_seconds) - 1.0
            ),
            "cpu_seconds_per_epoch": {
                "probgen": statistics.median(ours_cpu),
                "sklearn": statistics.median(theirs_cpu),
            },
            "exact_pseudo_log_likelihood": {
                "probgen": float(ours64.pseudo_log_likelihood(data64).mean()),
                "sklearn": float(theirs_as_ours.pseudo_log_likelihood(data64).mean()),
            },
            "sklearn_score_samples_mean": {
                "probgen": _sklearn_score(_with_our_parameters(theirs_model, ours_model), data),
                "sklearn": _sklearn_score(theirs_model, data),
            },
        }
        if ais_betas:
            log_likelihood = {}
            for name, model in (("probgen", ours64), ("sklearn", theirs_as_ours)):
                log_z = model.log_partition("ais", n_runs=100, n_betas=ais_betas, seed=0)
                mean = float((-model.free_energy(data64)).mean()) - log_z.estimate
                log_likelihood[name] = {"mean": mean, "log_z_stderr": log_z.stderr}
            row["ais_log_likelihood"] = log_likelihood
            row["ais_settings"] = {"runs": 100, "betas": ais_betas}
        seconds = row["seconds_per_epoch"]
        row["ratio_seconds_per_epoch_ours_over_theirs"] = seconds["probgen"] / seconds["sklearn"]
        row["speedup_theirs_over_ours"] = seconds["sklearn"] / seconds["probgen"]
        cpu = row["cpu_seconds_per_epoch"]
        row["cpu_speedup_theirs_over_ours"] = cpu["sklearn"] / cpu["probgen"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# 2. binarized MNIST, 500 hidden units, AIS
# ---------------------------------------------------------------------------------------------
def mnist_ais(epochs: int, n_train: int | None, ais_betas: int, ais_dtype: str) -> dict[str, Any]:
    from probgen.recipes import rbm_mnist

    try:
        train = rbm_mnist.data("train", n=n_train)
        test = rbm_mnist.data("test")
    except SharedDataMissing as error:
        return {"status": "missing", "reason": str(error)}
    rbm = rbm_mnist.build(
        n_epochs=epochs,
        learning_rate=0.05,
        batch_size=100,
        monitor=(),
        seed=0,
        learning_rate_schedule="linear",
    )
    started = time.perf_counter()
    cpu_started = time.process_time()
    rbm.fit(train)
    train_seconds = time.perf_counter() - started
    train_cpu = time.process_time() - cpu_started
    dtype = getattr(torch, ais_dtype)
    started = time.perf_counter()
    log_z = rbm.log_partition("ais", n_runs=100, n_betas=ais_betas, seed=0, dtype=dtype)
    ais_seconds = time.perf_counter() - started
    params = rbm.params(torch.float64)
    from probgen.boltzmann.rbm_functions import free_energy

    test_ll = float((-free_energy(params, test.double())).mean()) - log_z.estimate
    train_ll = float((-free_energy(params, train[:10000].double())).mean()) - log_z.estimate
    return {
        "status": "ok",
        "model": "RBM(784, 500), PCD-1, batch 100, lr 0.05 decaying linearly",
        "train_rows": int(train.shape[0]),
        "epochs": epochs,
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu,
        "ais": {
            "runs": 100,
            "betas": ais_betas,
            "schedule": "piecewise",
            "dtype": ais_dtype,
            "seconds": ais_seconds,
            "log_z": log_z.estimate,
            "log_z_stderr": log_z.stderr,
        },
        "test_log_likelihood": test_ll,
        "train_log_likelihood_first_10000": train_ll,
        "published": {
            "salakhutdinov_murray_2008": SALAKHUTDINOV_MURRAY_2008,
            "note": "their RBMs trained for far longer (CD25: number of steps increased "
            "from 1 to 25 during training)",
        },
    }


# ---------------------------------------------------------------------------------------------
# 3. DEBD sets: exact test log-likelihood with 20 hidden units
# ---------------------------------------------------------------------------------------------
def debd_exact(names: list[str], epochs: dict[str, int]) -> dict[str, Any]:
    from probgen.recipes._shared_data import debd

    results: dict[str, Any] = {}
    for name in names:
        try:
            train = debd(name, "train").astype(np.float32)
            test = debd(name, "test").astype(np.float64)
        except SharedDataMissing as error:
            results[name] = {"status": "missing", "reason": str(error)}
            continue
        n_visible = train.shape[1]
        ours = RBM(
            n_visible,
            20,
            learning_rate=0.05,
            batch_size=16,
            n_epochs=epochs[name],
            method="pcd",
            monitor=(),
            seed=0,
        )
        started = time.perf_counter()
        ours.fit(train)
        ours_seconds = time.perf_counter() - started
        theirs = _sklearn_rbm(20, 0.05, 16, epochs[name], 0)
        started = time.perf_counter()
        theirs.fit(train)
        theirs_seconds = time.perf_counter() - started
        test_tensor = torch.from_numpy(test)
        ours64 = (
            RBM(n_visible, 20)
            .double()
            .set_parameters(
                weights=ours.weights.double(),
                visible_bias=ours.visible_bias.double(),
                hidden_bias=ours.hidden_bias.double(),
            )
        )
        theirs64 = _as_probgen(theirs, n_visible)
        results[name] = {
            "status": "ok",
            "n_visible": n_visible,
            "n_hidden": 20,
            "epochs": epochs[name],
            "settings": "PCD-1, batch 16, lr 0.05 (both)",
            "exact_test_log_likelihood": {
                "probgen": float(ours64.log_prob(test_tensor).mean()),
                "sklearn": float(theirs64.log_prob(test_tensor).mean()),
            },
            "train_seconds": {"probgen": ours_seconds, "sklearn": theirs_seconds},
            "ratio_train_seconds_ours_over_theirs": ours_seconds / theirs_seconds,
            "made_test_nll_for_context": MADE_TEST_NLL.get(name),
        }
    return results


def machine(threads: int) -> dict[str, Any]:
    import sklearn

    import probgen

    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "cpu_count": __import__("os").cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "blas_threads_limit": threads,
        "versions": {
            "probgen": probgen.__version__,
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    add_options(parser)
    parser.add_argument("--out", type=Path, default=None, help="results file")
    parser.add_argument("--repeats", type=int, default=None, help="digits fits per library")
    parser.add_argument(
        "--skip-mnist",
        action="store_true",
        help="skip part 2 and keep the MNIST entry of the existing results file",
    )
    parser.add_argument("--mnist-epochs", type=int, default=None)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    apply_threads(args.threads)
    quick = args.quick
    report: dict[str, Any] = {"benchmark": "rbm_vs_sklearn", "quick": quick}
    out = args.out or ROOT / "benchmarks" / "results" / "rbm_vs_sklearn.json"
    with threadpool_limits(limits=args.threads):
        report["machine"] = machine(args.threads)
        report["machine"]["load_modes"] = load_modes(args.load)
        repeats = args.repeats or (2 if quick else 3)
        report["digits"] = []
        for mode in load_modes(args.load):
            with under(mode):
                rows = digits_comparison(
                    epochs=5 if quick else 20,
                    repeats=repeats,
                    ais_betas=(500 if quick else 3000) if mode == "quiet" else 0,
                )
            report["digits"] += [{**row, "load": mode} for row in rows]
        if args.skip_mnist:
            report["mnist"] = _previous_mnist(out)
        else:
            epochs = args.mnist_epochs or (1 if quick else 6)
            report["mnist"] = mnist_ais(
                epochs=epochs,
                n_train=5000 if quick else None,
                ais_betas=1000 if quick else 14500,
                ais_dtype="float32",
            )
        names = ["nltcs"] if quick else ["nltcs", "mushrooms", "dna", "nips"]
        epochs = {"nltcs": 2 if quick else 10, "mushrooms": 30, "dna": 30, "nips": 50}
        report["debd"] = debd_exact(names, epochs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    _print_table(report)
    print(f"\nwrote {out}")


def _previous_mnist(path: Path) -> dict[str, Any]:
    """The MNIST entry of an earlier full run, marked as such (or a plain "skipped")."""
    try:
        previous = json.loads(path.read_text()).get("mnist", {})
    except (OSError, ValueError):
        previous = {}
    if previous.get("status") != "ok":
        return {"status": "skipped"}
    return {**previous, "carried_over_from_previous_run": True}


def _print_table(report: dict[str, Any]) -> None:
    print(f"threads: {report['machine']['torch_threads']} (torch and BLAS)")
    print("\ndigits, 256 hidden, batch 64, lr 0.05, PCD-1")
    header = f"{'load':>6} {'rows':>5} {'s/epoch ours':>13} {'s/epoch sk':>11} "
    header += f"{'speedup':>8} {'cpu':>6} "
    header += f"{'PL ours':>9} {'PL sk':>9} {'AIS LL ours':>12} {'AIS LL sk':>10}"
    print(header)
    for row in report["digits"]:
        seconds, pseudo = row["seconds_per_epoch"], row["exact_pseudo_log_likelihood"]
        ais = row.get("ais_log_likelihood", {})
        print(
            f"{row['load']:>6} {row['rows']:>5} {seconds['probgen']:>13.4f} "
            f"{seconds['sklearn']:>11.4f} "
            f"{row['speedup_theirs_over_ours']:>7.2f}x "
            f"{row['cpu_speedup_theirs_over_ours']:>5.2f}x "
            f"{pseudo['probgen']:>9.3f} "
            f"{pseudo['sklearn']:>9.3f} {ais.get('probgen', {}).get('mean', float('nan')):>12.3f} "
            f"{ais.get('sklearn', {}).get('mean', float('nan')):>10.3f}"
        )
    mnist = report["mnist"]
    if mnist.get("status") == "ok":
        print(
            f"\nMNIST RBM(784, 500): {mnist['epochs']} epochs in {mnist['train_seconds']:.0f} s; "
            f"AIS ({mnist['ais']['betas']} betas, {mnist['ais']['seconds']:.0f} s) test LL "
            f"{mnist['test_log_likelihood']:.2f} nats (S&M 2008: CD1 -125.53, CD25 -86.34)"
            + (" [previous run]" if mnist.get("carried_over_from_previous_run") else "")
        )
    else:
        print(f"\nMNIST: {mnist.get('status')} {mnist.get('reason', '')}")
    print("\nDEBD exact test log-likelihood, 20 hidden units")
    for name, row in report["debd"].items():
        if row.get("status") != "ok":
            print(f"{name:>10}: {row.get('status')}")
            continue
        values = row["exact_test_log_likelihood"]
        print(
            f"{name:>10}: probgen {values['probgen']:9.3f}  sklearn {values['sklearn']:9.3f}  "
            f"train time ratio ours/theirs {row['ratio_train_seconds_ours_over_theirs']:.2f}"
        )


if __name__ == "__main__":
    main()
