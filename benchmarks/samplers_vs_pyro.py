"""Our vectorised MH and our NUTS wrapper against Pyro's own MCMC on the posteriordb recipes.

For each recipe, in one run on the same posterior: probgen `sample_chains(..., "mh")` (many
chains in one batch: 32 long chains, and 256 x 2,000 as row "probgen_mh_256"), probgen
`sample_chains(..., "nuts")` (Pyro's NUTS kernel through our `potential_fn`, 4 chains), Pyro's
`MCMC(NUTS(model), num_chains=4)` and Pyro's `MCMC(RandomWalkKernel(model), num_chains=4)`.
Figures: wall time (warmup included), minimum bulk ESS over the latent sites, ESS per second,
maximum R-hat (both computed by `probgen.samplers.diagnostics`, ArviZ's definitions, on every
method's draws), divergences.
Every recipe runs quiet and beside a CPU-burning process (`--load`, default both: the quiet
row under the recipe's name, the loaded one under "<name> [loaded]"). Torch's thread count is
left at its default so the library's thread policy is measured (`--threads N` overrides it).
Writes benchmarks/results/samplers_vs_pyro.json (or `--out`) and prints a table.

Usage:
    python benchmarks/samplers_vs_pyro.py            # every recipe
    python benchmarks/samplers_vs_pyro.py --quick --out /tmp/s.json   # eight schools, short
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import torch
from _load import add_options, apply_threads, load_modes, under
from pyro.infer import MCMC, NUTS, RandomWalkKernel
from pyro.infer.autoguide import init_to_value
from pyro.infer.mcmc.util import initialize_model

import probgen
from probgen.samplers import diagnostics
from probgen.samplers.chains import sample_chains

RECIPES = ["eight_schools", "kidiq_momiq", "ark", "gauss_mix", "hmm_example"]


def settings(quick: bool, recipe: str) -> dict[str, dict[str, int]]:
    """Run lengths. NUTS runs are shorter on the recipes other than eight schools, where one
    gradient costs milliseconds and full-length runs of both NUTS implementations would take
    most of an hour on two cores."""
    if quick:
        return {
            "probgen_mh": dict(chains=32, draws=4000, warmup=1000),
            "probgen_mh_256": dict(chains=256, draws=2000, warmup=2000),
            "probgen_nuts": dict(chains=4, draws=300, warmup=300),
            "pyro_nuts": dict(chains=4, draws=300, warmup=300),
            "pyro_rw": dict(chains=4, draws=1000, warmup=500),
        }
    nuts = dict(chains=4, draws=1000, warmup=1000)
    if recipe != "eight_schools":
        nuts = dict(chains=4, draws=300, warmup=300)
    if recipe == "hmm_example":
        # Its NUTS trees run to depth 5-6 (about 50 gradients a draw) at about 2 ms a gradient
        # (a 100-step forward pass); 500 + 500 draws keep both NUTS runs to minutes.
        nuts = dict(chains=4, draws=500, warmup=500)
    return {
        "probgen_mh": dict(chains=32, draws=8000, warmup=2000),
        # many short chains (issue 11): must reach max R-hat <= 1.01 too
        "probgen_mh_256": dict(chains=256, draws=2000, warmup=2000),
        "probgen_nuts": nuts,
        "pyro_nuts": nuts,
        "pyro_rw": dict(chains=4, draws=2000, warmup=1000),
    }


def figures(draws: dict[str, np.ndarray], seconds: float, divergences: int) -> dict[str, float]:
    ess = min(float(np.nanmin(np.atleast_1d(diagnostics.ess_bulk(v)))) for v in draws.values())
    rhat = max(float(np.nanmax(np.atleast_1d(diagnostics.rhat(v)))) for v in draws.values())
    return {
        "time_s": seconds,
        "min_ess_bulk": ess,
        "ess_per_s": ess / seconds,
        "max_r_hat": rhat,
        "divergences": divergences,
    }


def run_probgen(posterior, method: str, config: dict[str, int], seed: int) -> dict[str, float]:
    started = time.perf_counter()
    samples = sample_chains(
        posterior,
        method,
        num_chains=config["chains"],
        num_samples=config["draws"],
        warmup=config["warmup"],
        seed=seed,
        progress=False,
        **{k: v for k, v in config.items() if k == "max_tree_depth"},
    )
    seconds = time.perf_counter() - started
    latent = {name: samples[name] for name in posterior.site_names}
    return figures(latent, seconds, samples.num_divergences)


class _RandomWalkFromValues(RandomWalkKernel):
    """Pyro's RandomWalkKernel started from given values: its own `setup` initialises by
    sampling the prior, which improper (flat, ordered) priors cannot do."""

    def __init__(self, model, init_strategy, max_plate_nesting, **options):
        super().__init__(model, **options)
        self._init_strategy = init_strategy
        self._max_plate_nesting = max_plate_nesting

    def setup(self, warmup_steps, *args, **kwargs):
        self._warmup_steps = warmup_steps
        (
            self._initial_params,
            self.potential_fn,
            self.transforms,
            self._prototype_trace,
        ) = initialize_model(
            self.model,
            model_args=args,
            model_kwargs=kwargs,
            init_strategy=self._init_strategy,
            initial_params=self._initial_params,
            max_plate_nesting=self._max_plate_nesting,
        )
        self._energy_last = self.potential_fn(self._initial_params)


def _starting_points(posterior, chains: int, seed: int):
    """The same kind of start as ours (Uniform(-2, 2) in unconstrained space), per chain."""
    z = posterior.initial_points(chains, generator=torch.Generator().manual_seed(seed))
    constrained = posterior.constrain(z)
    strategy = init_to_value(values={name: value[0] for name, value in constrained.items()})
    initial = {
        site.name: z[:, site.offset : site.offset + site.size].reshape(
            (chains,) + tuple(site.unconstrained_shape)
        )
        for site in posterior.sites
    }
    return strategy, initial


def run_pyro(posterior, kernel_name: str, config: dict[str, int], seed: int) -> dict[str, float]:
    model = posterior.model
    kwargs = posterior.model_kwargs
    # An explicit bound: Pyro would otherwise guess it by sampling the (improper) prior.
    nesting = max(1, posterior.max_plate_nesting)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyro.set_rng_seed(seed)
        strategy, initial = _starting_points(posterior, config["chains"], seed)
        if kernel_name == "nuts":
            depth = config.get("max_tree_depth", 10)
            kernel = NUTS(
                model, init_strategy=strategy, max_plate_nesting=nesting, max_tree_depth=depth
            )
        else:
            kernel = _RandomWalkFromValues(model, strategy, nesting)
        mcmc = MCMC(
            kernel,
            num_samples=config["draws"],
            warmup_steps=config["warmup"],
            num_chains=config["chains"],
            disable_progbar=True,
            mp_context=None,
            initial_params=initial,
        )
        started = time.perf_counter()
        mcmc.run(**kwargs)
        seconds = time.perf_counter() - started
    grouped = mcmc.get_samples(group_by_chain=True)
    draws = {name: grouped[name].double().numpy() for name in posterior.site_names}
    divergences = 0
    if kernel_name == "nuts":
        divergences = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    return figures(draws, seconds, divergences)


def write_document(path: Path, quick: bool, results: dict) -> None:
    """Write the results file (called after every recipe, so a long run keeps its figures)."""
    document = {
        "benchmark": "samplers_vs_pyro",
        "quick": quick,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "probgen": probgen.__version__,
            "torch": torch.__version__,
            "pyro": pyro.__version__,
            "numpy": np.__version__,
        },
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="eight schools only, short runs")
    parser.add_argument("--recipes", nargs="*", default=None)
    add_options(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "samplers_vs_pyro.json")
    )
    args = parser.parse_args()
    apply_threads(args.threads)
    recipes = args.recipes or (["eight_schools"] if args.quick else RECIPES)
    results: dict[str, dict] = {}
    out = Path(args.out)
    if args.recipes and out.exists():
        # A run of some recipes updates their rows and keeps the others' (each row is one
        # side-by-side run, stamped with its date).
        previous = json.loads(out.read_text())
        if previous.get("quick") == args.quick:
            results = previous["results"]
    runs = [(name, mode) for name in recipes for mode in load_modes(args.load)]
    for recipe, mode in runs:
        name = recipe if mode == "quiet" else f"{recipe} [{mode}]"
        module = importlib.import_module(f"probgen.recipes.{recipe}")
        posterior = module.build()
        plan = settings(args.quick, recipe)
        with under(mode):
            row = {
                "run_at": time.strftime("%Y-%m-%d %H:%M"),
                "load": mode,
                "settings": plan,
                "probgen_mh": run_probgen(posterior, "mh", plan["probgen_mh"], args.seed),
                "probgen_mh_256": run_probgen(
                    posterior, "mh", plan["probgen_mh_256"], args.seed
                ),
                "probgen_nuts": run_probgen(posterior, "nuts", plan["probgen_nuts"], args.seed),
                "pyro_nuts": run_pyro(posterior, "nuts", plan["pyro_nuts"], args.seed),
                "pyro_rw": run_pyro(posterior, "rw", plan["pyro_rw"], args.seed),
            }
        row["ratios"] = {
            "ess_per_s_probgen_mh_over_pyro_nuts": row["probgen_mh"]["ess_per_s"]
            / row["pyro_nuts"]["ess_per_s"],
            "ess_per_s_probgen_mh_256_over_pyro_nuts": row["probgen_mh_256"]["ess_per_s"]
            / row["pyro_nuts"]["ess_per_s"],
            "ess_per_s_probgen_nuts_over_pyro_nuts": row["probgen_nuts"]["ess_per_s"]
            / row["pyro_nuts"]["ess_per_s"],
            "ess_per_s_probgen_mh_over_pyro_rw": row["probgen_mh"]["ess_per_s"]
            / row["pyro_rw"]["ess_per_s"],
            "time_probgen_nuts_over_pyro_nuts": row["probgen_nuts"]["time_s"]
            / row["pyro_nuts"]["time_s"],
        }
        results[name] = row
        print(f"\n{name}")
        print(
            f"{'sampler':14s} {'time_s':>8s} {'min_ess':>9s} {'ess/s':>9s} {'max_rhat':>9s}"
            f" {'div':>4s}"
        )
        for sampler in ("probgen_mh", "probgen_mh_256", "probgen_nuts", "pyro_nuts", "pyro_rw"):
            f = row[sampler]
            print(
                f"{sampler:14s} {f['time_s']:8.1f} {f['min_ess_bulk']:9.0f} "
                f"{f['ess_per_s']:9.1f} {f['max_r_hat']:9.3f} {f['divergences']:4d}"
            )
        print("ratios:", {k: round(v, 2) for k, v in row["ratios"].items()})
        write_document(out, args.quick, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
