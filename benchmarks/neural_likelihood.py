"""Neural likelihood models side by side with the references, in one run.

1. Flows against zuko with the same architecture (layers, hidden sizes, bins), trained with the
   same data, batch size, epochs and Adam settings: time per training step and held-out
   log-likelihood on scikit-learn's two moons and on the ring of 8 Gaussians (whose exact
   density gives the best achievable figure).
2. Pyro SVI overhead: time per step of the VAE's Pyro `Trace_ELBO` loss against the same
   estimator written in plain torch (DESIGN.md's bar: within 1.3x), timed in alternating
   blocks because the machine is shared.
3. VAE on binarized MNIST: test NLL by the IWAE estimate (k=5000 on a stated test subset)
   after a stated CPU training budget, next to the IWAE paper's 86.76 nats.
4. MADE on debd sets and a character model on tiny shakespeare, from
   `benchmarks/_neural_autoregressive.py` (recorded as "missing" when that file is absent).

Usage:
    python benchmarks/neural_likelihood.py [--quick] [--threads N] [--load both]
        [--only SECTION ...] [--out PATH]

The headline ratios (sections 1 and 2, flows_vs_zuko and svi_overhead) run quiet and beside a
CPU-burning process (`--load`, default both; the loaded results are under
"flows_vs_zuko_loaded" and "svi_overhead_loaded"); the budgeted training runs (3 and 4) run
once, quiet. Torch's thread count is left at its default so the library's thread policy is
measured (`--threads N` overrides it).

`--only SECTION` (e.g. `--only flows_vs_zuko`) re-runs that section alone and rewrites just
its key in the results file.

Writes benchmarks/results/neural_likelihood.json and prints a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _load import add_options, apply_threads, load_modes, under

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.recipes import flow_gaussians, flow_moons  # noqa: E402
from probgen.recipes._shared_data import SharedDataMissing  # noqa: E402

from probgen.deep.flows import Flow  # noqa: E402
from probgen.deep.vae import VAE  # noqa: E402
from probgen.fitting import fit_model  # noqa: E402

IWAE_PAPER_NLL = 86.76


# ---------------------------------------------------------------------------------------------
# Flows against zuko
# ---------------------------------------------------------------------------------------------
def _zuko_flow(kind: str, n_layers: int, hidden: tuple[int, ...], bins: int, bound: float):
    import zuko

    if kind == "maf":
        return zuko.flows.MAF(2, transforms=n_layers, hidden_features=hidden)
    if kind == "nsf":
        # zuko's rational-quadratic splines live on [-5, 5], like ours with bound=5.
        assert bound == 5.0
        return zuko.flows.NSF(2, transforms=n_layers, bins=bins, hidden_features=hidden)
    return zuko.flows.RealNVP(2, transforms=n_layers, hidden_features=hidden)


def _fit_zuko(
    flow: Any,
    train: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_steps: int | None = None,
) -> float:
    """The usual zuko training loop (Adam, shuffled minibatches); returns seconds per step."""
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    steps = 0
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), batch_size):
            batch = train[order[start : start + batch_size]]
            loss = -flow().log_prob(batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                return (time.perf_counter() - started) / steps
    return (time.perf_counter() - started) / steps


def _alternating_step_times(
    blocks: dict[str, Any], rounds: int, steps_per_block: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per step of each engine, timed in alternating blocks of steps.

    `blocks[name](round_index)` runs `steps_per_block` training steps. Each round runs every
    engine once, in an order that flips from round to round, so that the load of a shared
    machine falls on both alike; wall and CPU (process) seconds per step are kept per block.
    """
    names = list(blocks)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            started, started_cpu = time.perf_counter(), time.process_time()
            blocks[name](round_index)
            wall[name].append((time.perf_counter() - started) / steps_per_block)
            cpu[name].append((time.process_time() - started_cpu) / steps_per_block)
    return {"wall": wall, "cpu": cpu}


def flows_vs_zuko(quick: bool) -> dict[str, Any]:
    """Held-out log-likelihood and time per training step of `Flow` and of zuko's flows.

    Each pair is first fitted (same data, epochs, batch size and Adam settings) for the
    held-out figures. The step times then come from further training of both fitted flows in
    alternating blocks of `steps_per_block` steps (the order flips each round): a probgen block
    is a `Flow.fit` call (its whole `fit_model` path: checks, shuffling, loss checks, history)
    and a zuko block is the usual zuko loop, each with a fresh Adam optimiser per block. The
    figure is the median of the per-round ratios, next to the ratios of median and of least
    block times.
    """
    n_train = 2000 if quick else 10_000
    n_test = 2000 if quick else 5000
    epochs = 4 if quick else 25
    rounds = 3 if quick else 15
    batch_size, lr, n_layers, hidden, bins, bound = 256, 2e-3, 4, (64, 64), 8, 5.0
    steps_per_block = math.ceil(n_train / batch_size)  # one epoch
    rows = []
    datasets = {
        "moons": (flow_moons.data("train", n=n_train), flow_moons.data("test", n=n_test), None),
        "ring": (
            flow_gaussians.data("train", n=n_train),
            flow_gaussians.data("test", n=n_test),
            flow_gaussians.true_log_prob,
        ),
    }
    for dataset, (train, test, true_log_prob) in datasets.items():
        for kind in ("realnvp", "maf", "nsf"):
            settings = dict(n_layers=n_layers, hidden_dims=hidden, count_bins=bins, bound=bound)
            # Untimed warm-up of both libraries (lazy initialisation, allocator).
            Flow(2, kind=kind, seed=0, **settings).fit(
                train[:512], n_epochs=1, batch_size=batch_size
            )
            _fit_zuko(
                _zuko_flow(kind, n_layers, hidden, bins, bound), train[:512], 1, batch_size, lr, 0
            )
            torch.manual_seed(0)
            ours = Flow(2, kind=kind, seed=0, **settings)
            started = time.perf_counter()
            ours.fit(train, n_epochs=epochs, batch_size=batch_size, learning_rate=lr)
            our_sequential = (time.perf_counter() - started) / ours.history_[-1]["steps"]
            our_ll = float(ours.log_prob(test).double().mean())

            torch.manual_seed(0)
            theirs = _zuko_flow(kind, n_layers, hidden, bins, bound)
            their_sequential = _fit_zuko(theirs, train, epochs, batch_size, lr, seed=0)
            with torch.no_grad():
                their_ll = float(theirs().log_prob(test).double().mean())

            times = _alternating_step_times(
                {
                    "probgen": lambda r, flow=ours, data=train: flow.fit(
                        data, n_epochs=1, batch_size=batch_size, learning_rate=lr, seed=r
                    ),
                    "zuko": lambda r, flow=theirs, data=train: _fit_zuko(
                        flow, data, 1, batch_size, lr, seed=r, max_steps=steps_per_block
                    ),
                },
                rounds,
                steps_per_block,
            )
            wall, cpu = times["wall"], times["cpu"]
            ratios = [p / z for p, z in zip(wall["probgen"], wall["zuko"])]
            cpu_ratios = [p / z for p, z in zip(cpu["probgen"], cpu["zuko"])]
            row = {
                "dataset": dataset,
                "kind": kind,
                "n_parameters": sum(p.numel() for p in ours.parameters()),
                "zuko_n_parameters": sum(p.numel() for p in theirs.parameters()),
                "n_layers": n_layers,
                "hidden_dims": list(hidden),
                "batch_size": batch_size,
                "epochs": epochs,
                "n_train": n_train,
                "n_test": n_test,
                "rounds": rounds,
                "steps_per_block": steps_per_block,
                "probgen_seconds_per_step": statistics.median(wall["probgen"]),
                "zuko_seconds_per_step": statistics.median(wall["zuko"]),
                "time_ratio_probgen_over_zuko": statistics.median(ratios),
                "ratio_of_median_times": statistics.median(wall["probgen"])
                / statistics.median(wall["zuko"]),
                "ratio_of_min_times": min(wall["probgen"]) / min(wall["zuko"]),
                "ratio_per_round": ratios,
                "cpu_time_ratio_probgen_over_zuko": statistics.median(cpu_ratios),
                "sequential_fit_seconds_per_step": {
                    "probgen": our_sequential,
                    "zuko": their_sequential,
                },
                "probgen_test_log_prob": our_ll,
                "zuko_test_log_prob": their_ll,
                "log_prob_difference_probgen_minus_zuko": our_ll - their_ll,
            }
            if true_log_prob is not None:
                row["true_density_test_log_prob"] = float(true_log_prob(test).mean())
            rows.append(row)
            print(
                f"  flow {dataset:5s} {kind:7s} ours {our_ll:7.3f} zuko {their_ll:7.3f} "
                f"step {row['probgen_seconds_per_step'] * 1e3:6.2f} ms vs "
                f"{row['zuko_seconds_per_step'] * 1e3:6.2f} ms, ratio "
                f"{row['time_ratio_probgen_over_zuko']:5.2f} (cpu "
                f"{row['cpu_time_ratio_probgen_over_zuko']:5.2f})",
                flush=True,
            )
    return {"machine": machine(torch.get_num_threads()), "quick": quick, "rows": rows}


# ---------------------------------------------------------------------------------------------
# Pyro SVI overhead
# ---------------------------------------------------------------------------------------------
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
ENGINES = ("pyro", "torch")


def _plain_torch_elbo_loss(model: VAE, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The VAE's negative ELBO per example, Trace_ELBO's estimator written in plain torch.

    The VAE's own encoder and decoder networks, one reparameterised draw z = loc + scale * eps
    per example (the same global random stream as Pyro's `rsample`), and the log-densities
    log p(x | z) + log p(z) - log q(z | x) summed over features and averaged over the batch:
    what a hand-written VAE step computes, with nothing from Pyro.
    """
    x = batch[0]
    loc, scale = model.encoder(x, None)
    z = loc + scale * torch.randn_like(loc)
    logits = model.decoder(z, None)
    log_likelihood = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    log_prior = (-0.5 * z.pow(2) - _HALF_LOG_2PI).sum(-1)
    log_q = torch.distributions.Normal(loc, scale, validate_args=False).log_prob(z).sum(-1)
    return -(log_likelihood + log_prior - log_q).mean()


def _same_batch_loss_difference(vae: VAE, x: torch.Tensor) -> float:
    """Relative difference of the two losses on one batch with the same seed (float64)."""
    model = VAE(**vae.get_config()).double().train()
    model.load_state_dict(vae.state_dict())
    batch = (x.double(),)
    values = []
    for loss in (model._make_loss(), _plain_torch_elbo_loss):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            values.append(float(loss(model, batch).detach()))
    return abs(values[0] - values[1]) / abs(values[1])


def svi_overhead(quick: bool) -> dict[str, Any]:
    """Time per training step of the VAE's Pyro Trace_ELBO loss and of plain torch.

    Both go through the same `fit_model` loop (same batches, Adam, checks). The machine is
    shared, so the two are timed in alternating blocks of steps (the order flips each round)
    and each round gives a ratio of neighbouring blocks; the figure is the median of those
    ratios, next to the ratios of median and of least times (the least-disturbed blocks).
    Wall and CPU (process) time are both kept. The plain-torch step is
    `_plain_torch_elbo_loss`; `same_batch_loss_relative_difference` checks on one batch, in
    float64 and with the same seed, that both compute the same ELBO.
    """
    rounds = 3 if quick else 15
    block_steps = 20 if quick else 40
    rows = []
    for name, width, hidden, latent, batch in (
        ("digits-size", 64, (128, 64), 8, 100),
        ("mnist-size", 784, (200, 200), 50, 100),
    ):
        generator = torch.Generator().manual_seed(0)
        x = torch.bernoulli(torch.full((batch * 20, width), 0.3), generator=generator)
        vaes = {engine: VAE((width,), latent, hidden_dims=hidden, seed=0) for engine in ENGINES}
        losses = {"pyro": vaes["pyro"]._make_loss(), "torch": _plain_torch_elbo_loss}
        for engine in ENGINES:  # warm up (allocator, lazy initialisation)
            fit_model(vaes[engine], (x,), loss=losses[engine], n_epochs=1, batch_size=batch, seed=0)
        wall: dict[str, list[float]] = {engine: [] for engine in ENGINES}
        cpu: dict[str, list[float]] = {engine: [] for engine in ENGINES}
        for round_index in range(rounds):
            order = ENGINES if round_index % 2 == 0 else ENGINES[::-1]
            for engine in order:
                started, started_cpu = time.perf_counter(), time.process_time()
                fit_model(
                    vaes[engine],
                    (x,),
                    loss=losses[engine],
                    n_epochs=10_000,
                    batch_size=batch,
                    seed=round_index,
                    max_steps=block_steps,
                )
                wall[engine].append((time.perf_counter() - started) / block_steps)
                cpu[engine].append((time.process_time() - started_cpu) / block_steps)
        wall_ratios = [p / t for p, t in zip(wall["pyro"], wall["torch"])]
        cpu_ratios = [p / t for p, t in zip(cpu["pyro"], cpu["torch"])]
        row = {
            "model": name,
            "architecture": f"{width}-{'-'.join(map(str, hidden))}-{latent} MLP, Bernoulli",
            "batch_size": batch,
            "rounds": rounds,
            "steps_per_block": block_steps,
            "pyro_trace_elbo_seconds_per_step": statistics.median(wall["pyro"]),
            "plain_torch_seconds_per_step": statistics.median(wall["torch"]),
            "ratio_pyro_over_torch": statistics.median(wall_ratios),
            "ratio_of_median_times": statistics.median(wall["pyro"])
            / statistics.median(wall["torch"]),
            "ratio_of_min_times": min(wall["pyro"]) / min(wall["torch"]),
            "ratio_per_round": wall_ratios,
            "pyro_cpu_seconds_per_step": statistics.median(cpu["pyro"]),
            "plain_torch_cpu_seconds_per_step": statistics.median(cpu["torch"]),
            "cpu_ratio_pyro_over_torch": statistics.median(cpu_ratios),
            "same_batch_loss_relative_difference": _same_batch_loss_difference(
                vaes["pyro"], x[:batch]
            ),
        }
        rows.append(row)
        print(
            f"  svi {name}: pyro {row['pyro_trace_elbo_seconds_per_step'] * 1e3:.2f} ms, "
            f"torch {row['plain_torch_seconds_per_step'] * 1e3:.2f} ms per step; ratio "
            f"{row['ratio_pyro_over_torch']:.2f} (wall), "
            f"{row['cpu_ratio_pyro_over_torch']:.2f} (cpu)",
            flush=True,
        )
    return {"machine": machine(torch.get_num_threads()), "quick": quick, "rows": rows}


# ---------------------------------------------------------------------------------------------
# VAE on binarized MNIST
# ---------------------------------------------------------------------------------------------
def vae_mnist(quick: bool) -> dict[str, Any]:
    from probgen.recipes import vae_mnist as recipe

    budget = 20.0 if quick else 240.0
    n_eval = 50 if quick else 500
    k = 5000
    try:
        train = recipe.data("train")
        test = recipe.data("test")[:n_eval]
    except SharedDataMissing as error:
        return {"status": "missing", "reason": str(error)}
    vae = recipe.build()
    batch_size = 100
    # Time a few steps, then train for the step count that fits the budget.
    probe = fit_model(
        vae,
        (train[:2000],),
        loss=vae._make_loss(),
        n_epochs=1,
        batch_size=batch_size,
        seed=0,
        max_steps=10,
    )
    step_seconds = probe[-1]["seconds"] / probe[-1]["steps"]
    max_steps = max(1, int(budget / step_seconds))
    started = time.perf_counter()
    vae.fit(train, n_epochs=10_000, batch_size=batch_size, max_steps=max_steps, learning_rate=1e-3)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    iwae = vae.iwae(test, k=k)
    eval_seconds = time.perf_counter() - started
    elbo = vae.elbo(test, n_samples=100)
    nll = -float(iwae.double().mean())
    result = {
        "status": "ok",
        "architecture": "784-200-200-50 MLP (ReLU), Bernoulli decoder",
        "objective": "ELBO (Pyro Trace_ELBO, one particle), Adam lr 1e-3, batch 100",
        "training_budget_seconds": budget,
        "training_seconds": train_seconds,
        "training_steps": vae.history_[-1]["steps"],
        "epochs_equivalent": vae.history_[-1]["steps"] * batch_size / len(train),
        "test_subset": f"first {n_eval} of the 10000 test images",
        "iwae_k": k,
        "test_nll_iwae_nats": nll,
        "test_nll_iwae_standard_error": float(iwae.double().std() / math.sqrt(n_eval)),
        "test_negative_elbo_nats": -float(elbo.double().mean()),
        "evaluation_seconds": eval_seconds,
        "reference_nll_nats": IWAE_PAPER_NLL,
        "reference": "Burda et al. 2016 (IWAE, k=50 training, 3280 passes, 1 stochastic layer)",
        "ratio_probgen_over_reference": nll / IWAE_PAPER_NLL,
    }
    print(
        f"  vae mnist: IWAE-{k} NLL {nll:.2f} nats after {train_seconds:.0f}s "
        f"(paper {IWAE_PAPER_NLL})",
        flush=True,
    )
    return result


# ---------------------------------------------------------------------------------------------
# Part B: MADE and the character model
# ---------------------------------------------------------------------------------------------
def autoregressive(quick: bool) -> dict[str, Any]:
    path = Path(__file__).with_name("_neural_autoregressive.py")
    if not path.exists():
        return {"made": "missing", "charlm": "missing"}
    spec = importlib.util.spec_from_file_location("_neural_autoregressive", path)
    module = importlib.util.module_from_spec(spec)
    results: dict[str, Any] = {}
    try:
        spec.loader.exec_module(module)
    except Exception:
        return {"made": "error", "charlm": "error", "error": traceback.format_exc()}
    for key, name in (("made", "run_made_benchmark"), ("charlm", "run_charlm_benchmark")):
        function = getattr(module, name, None)
        if function is None:
            results[key] = "missing"
            continue
        try:
            results[key] = function(quick)
        except Exception:
            results[key] = {"status": "error", "error": traceback.format_exc()}
    return results


# ---------------------------------------------------------------------------------------------
def machine(threads: int) -> dict[str, Any]:
    import os

    import pyro
    import zuko

    import probgen

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "probgen": probgen.__version__,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "zuko": getattr(zuko, "__version__", "unknown"),
        "cuda": torch.cuda.is_available(),
    }


SECTIONS = ("flows_vs_zuko", "svi_overhead", "vae_mnist", "autoregressive")
# The side-by-side ratios, measured quiet and loaded (`--load`).
LOADED_SECTIONS = ("flows_vs_zuko", "svi_overhead")
_SKIP_NAMES = {"flows": "flows_vs_zuko", "svi": "svi_overhead", "vae": "vae_mnist"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    add_options(parser)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["flows", "svi", "vae", "autoregressive"]
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        help="run only these sections and update just their keys in an existing --output "
        "(the other sections' results stay as they are)",
    )
    parser.add_argument(
        "--output",
        "--out",
        default=str(ROOT / "benchmarks" / "results" / "neural_likelihood.json"),
    )
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    output = Path(args.output)
    skipped = {_SKIP_NAMES.get(name, name) for name in args.skip}
    sections = [s for s in (args.only or SECTIONS) if s not in skipped]
    if args.only and output.exists():
        report: dict[str, Any] = json.loads(output.read_text())
    else:
        report = {"benchmark": "neural_likelihood", "quick": args.quick}
        report["machine"] = machine(torch.get_num_threads())
    report["machine"]["threads_option"] = args.threads
    report["machine"]["load_modes"] = load_modes(args.load)
    runners = {
        "flows_vs_zuko": ("flows vs zuko", flows_vs_zuko),
        "svi_overhead": ("pyro svi overhead", svi_overhead),
        "vae_mnist": ("vae on binarized mnist", vae_mnist),
        "autoregressive": ("made and character model (part B)", autoregressive),
    }
    started = time.perf_counter()
    for section in sections:
        title, runner = runners[section]
        modes = load_modes(args.load) if section in LOADED_SECTIONS else ["quiet"]
        for mode in modes:
            print(f"{title} [{mode}]", flush=True)
            with under(mode):
                result = runner(args.quick)
            report[section if mode == "quiet" else f"{section}_{mode}"] = result
    if not args.only:
        report["total_seconds"] = time.perf_counter() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str))
    _print_table(report)
    print(f"wrote {output}")
    return report


def _print_table(report: dict[str, Any]) -> None:
    print()
    print(f"threads={report['machine']['torch_threads']} cpus={report['machine']['cpu_count']}")
    flows = report.get("flows_vs_zuko", [])
    rows = flows["rows"] if isinstance(flows, dict) else flows
    if rows:
        print(
            f"{'data':6s} {'kind':8s} {'ours LL':>8s} {'zuko LL':>8s} {'true LL':>8s} "
            f"{'time ours/zuko':>15s}"
        )
        for row in rows:
            true = row.get("true_density_test_log_prob")
            true_text = f"{true:8.3f}" if true is not None else f"{'-':>8s}"
            print(
                f"{row['dataset']:6s} {row['kind']:8s} {row['probgen_test_log_prob']:8.3f} "
                f"{row['zuko_test_log_prob']:8.3f} {true_text} "
                f"{row['time_ratio_probgen_over_zuko']:15.2f}"
            )
    svi = report.get("svi_overhead", [])
    for row in svi["rows"] if isinstance(svi, dict) else svi:
        cpu = row.get("cpu_ratio_pyro_over_torch")
        print(
            f"SVI {row['model']}: Pyro Trace_ELBO / plain torch step = "
            f"{row['ratio_pyro_over_torch']:.2f}"
            + (f" (cpu time {cpu:.2f})" if cpu is not None else "")
        )
    vae = report.get("vae_mnist")
    if vae and vae.get("status") == "ok":
        print(
            f"VAE MNIST: IWAE k={vae['iwae_k']} test NLL {vae['test_nll_iwae_nats']:.2f} "
            f"+- {vae['test_nll_iwae_standard_error']:.2f} nats ({vae['test_subset']}) after "
            f"{vae['training_seconds']:.0f}s CPU; paper {vae['reference_nll_nats']}"
        )
    elif vae:
        print(f"VAE MNIST: {vae.get('status')}: {vae.get('reason', '')}")
    auto = report.get("autoregressive", {})
    for key in ("made", "charlm"):
        value = auto.get(key)
        if isinstance(value, dict):
            print(f"{key}: {json.dumps(value, default=str)[:300]}")
        elif value is not None:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
