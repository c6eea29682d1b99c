"""The `probgen` command: demo, list, fit, sample, score, infer, evaluate.

Example:
    $ probgen demo --out casino_demo
    $ probgen list
    $ probgen fit hmm_casino --out casino.probgen
    $ probgen fit gmm_blobs --nproc 2 --out blobs.probgen
    $ probgen sample casino.probgen -n 5 --length 100 --out rolls.csv
    $ probgen score casino.probgen rolls.csv
    $ probgen infer examples/eight_schools.toml --out runs/eight_schools
    $ probgen evaluate digits_vae.probgen --data vae_digits --out report
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np

from probgen.core.errors import DataError, ProbgenError

_FIT_CONFIG_KEYS = {"recipe", "data", "build", "fit", "smoke", "seed"}
# What `probgen score` prints a model's log_prob to be, by its log_prob_kind.
_SCORE_MEANINGS = {
    "exact": "the log-likelihood log p(x) of each example, in nats",
    "lower_bound": "a lower bound on log p(x) of each example, in nats (the true "
    "log-likelihood is at least this; e.g. an ELBO or a diffusion model's variational bound)",
    "estimate": "an estimate of log p(x) of each example, in nats (e.g. importance sampling, "
    "sampled diffusion steps or an ODE with a stochastic trace)",
    "unnormalized": "log p(x) of each example up to an unknown additive constant",
}
_BITS_MARKS = {"exact": "", "lower_bound": "<= ", "estimate": "~"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `probgen` console script; returns the exit status."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    arguments.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(arguments, "command", None):
        parser.print_help()
        return 2
    try:
        return int(arguments.handler(arguments) or 0)
    except (ProbgenError, FileNotFoundError) as error:
        print(f"probgen {arguments.command}: error: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probgen", description="Generative models behind one density contract."
    )
    commands = parser.add_subparsers(dest="command")

    demo = commands.add_parser("demo", help="fit the dishonest-casino HMM and plot its decoding")
    demo.add_argument("--out", default="probgen_demo", help="folder for the plot (created)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--rolls", type=int, default=2000, help="number of simulated rolls")
    demo.set_defaults(handler=_demo)

    listing = commands.add_parser("list", help="list the ready-made recipes")
    listing.set_defaults(handler=_list)

    fit = commands.add_parser("fit", help="fit a recipe (or a TOML config) and save the model")
    fit.add_argument("target", help="recipe name (see `probgen list`) or a .toml config")
    fit.add_argument("--data", help="training data: .csv or .npy file, or a folder of sequences")
    fit.add_argument("--out", required=True, help="model file to write")
    fit.add_argument("--smoke", action="store_true", help="use the recipe's seconds-long settings")
    fit.add_argument("--seed", type=int, default=0, help="seed of the recipe's data")
    fit.add_argument(
        "--nproc",
        type=int,
        help="fit with N processes on this machine (relaunches itself under torchrun); "
        "across machines run `torchrun --nnodes ... -m probgen fit ...` instead",
    )
    fit.set_defaults(handler=_fit)

    sample = commands.add_parser("sample", help="draw samples from a saved model")
    sample.add_argument("model", help="model file written by `probgen fit`")
    sample.add_argument("-n", type=int, required=True, help="number of samples")
    sample.add_argument("--length", type=int, help="sequence length (sequence models)")
    sample.add_argument("--seed", type=int, default=None)
    sample.add_argument("--out", required=True, help=".csv or .npy file to write")
    sample.set_defaults(handler=_sample)

    score = commands.add_parser("score", help="log-likelihood of data under a saved model")
    score.add_argument("model", help="model file written by `probgen fit`")
    score.add_argument("data", help=".csv or .npy file, or a folder of sequences")
    score.add_argument("--out", help="optional .csv file of per-example scores")
    score.set_defaults(handler=_score)

    infer = commands.add_parser("infer", help="run a Bayesian inference experiment (TOML)")
    infer.add_argument("config", help="experiment config (.toml)")
    infer.add_argument("--out", help="results folder (default: ./results/NAME)")
    infer.set_defaults(handler=_infer)

    evaluate = commands.add_parser(
        "evaluate", help="judge saved models on held-out data: likelihood and sample metrics"
    )
    evaluate.add_argument("models", nargs="+", metavar="MODEL", help="model files")
    evaluate.add_argument(
        "--data", required=True, help="held-out data: .csv/.npy file, or a recipe (its test split)"
    )
    evaluate.add_argument("--train", help="training data (file or recipe name) for memorisation")
    evaluate.add_argument("--out", help="folder for evaluation.json and samples.png")
    evaluate.add_argument("--samples", type=int, help="samples per model (default: data's size)")
    evaluate.add_argument("--max-examples", type=int, default=2000, help="held-out examples used")
    evaluate.add_argument(
        "--features", default="auto", choices=["auto", "raw", "digits", "mnist"],
        help="feature space of the sample metrics (auto: the in-repo classifier for digit images)",
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(handler=_evaluate)
    return parser


def _demo(arguments: argparse.Namespace) -> int:
    from probgen.demo import run_demo

    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_demo(out, seed=arguments.seed, n_rolls=arguments.rolls, progress=True)
    print(f"\nplot written to {result['plot']}")
    return 0


def _list(arguments: argparse.Namespace) -> int:
    from probgen.recipes import registry

    rows = []
    for recipe in registry.all_recipes():
        flags = " (slow)" if recipe.slow else ""
        rows.append((recipe.name, recipe.family or "-", recipe.description + flags))
    width = max(len(name) for name, _, _ in rows)
    family_width = max(len(family) for _, family, _ in rows)
    for name, family, description in rows:
        print(f"{name:<{width}}  {family:<{family_width}}  {description}")
    return 0


def _fit(arguments: argparse.Namespace) -> int:
    from probgen.core import distributed
    from probgen.recipes import registry

    if arguments.nproc is not None:
        return _launch_torchrun(arguments)
    settings = _fit_settings(arguments)
    recipe = registry.get(settings["recipe"])
    smoke = settings["smoke"]
    build_options = {**(recipe.smoke.get("build", {}) if smoke else {}), **settings["build"]}
    fit_options = {**(recipe.smoke_fit if smoke else {}), **settings["fit"]}
    model = recipe.build(**build_options)
    parallel = distributed.is_distributed()
    if parallel:
        _check_distributed_fit(model)
    shard = (distributed.rank(), distributed.world_size()) if parallel else None
    if settings["data"]:
        # Each process reads only its own rows or sequences of the file or folder.
        data = _read_for_model(model, settings["data"], shard=shard)
        source = settings["data"]
    else:
        data_options = recipe.smoke.get("data", {}) if smoke else {}
        data = recipe.data(split="train", seed=settings["seed"], **data_options)
        source = f"recipe {recipe.name!r} (train split)"
        if parallel:
            data = _this_ranks_shard(model, data)
    if parallel:
        source += f", shard {distributed.rank() + 1} of {distributed.world_size()}"
    leader = distributed.rank() == 0
    if leader:  # one progress bar, on rank 0
        _show_progress(model, build_options, fit_options)
    print(f"fitting {type(model).__name__} ({recipe.name}) on {source} ...")
    model.fit(data, **fit_options)
    if not leader:  # every rank holds the same model; rank 0 writes it
        return 0
    out = Path(arguments.out)
    model.save(out)
    history = getattr(model, "history_", None)
    if history:
        print(f"last monitored figure: {_format_history_entry(history[-1])}")
    print(f"model saved to {out}")
    return 0


def _show_progress(model: Any, build_options: dict, fit_options: dict) -> None:
    if "progress" in inspect.signature(type(model)).parameters:
        # A constructor setting (fit(progress=...) is deprecated where the constructor has it).
        if "progress" not in build_options:
            model.progress = True
    elif "progress" in inspect.signature(model.fit).parameters:
        fit_options.setdefault("progress", True)


def _launch_torchrun(arguments: argparse.Namespace) -> int:
    """Run this `probgen fit` again as `nproc` local processes under torchrun."""
    import subprocess

    from probgen.core.data import check_positive_int

    nproc = check_positive_int(arguments.nproc, "--nproc")
    rest, skip = [], False
    for item in arguments.argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            rest.append(item)
    # One restart of the whole group: gloo's full-mesh connect fails now and then on a busy
    # machine (pytorch#53270); a fit writes its file only at the end, so a rerun is safe.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "--max-restarts=1", "-m", "probgen", *rest]
    return subprocess.call(command)


def _check_distributed_fit(model: Any) -> None:
    if not getattr(type(model), "distributed_fit", False):
        raise DataError(
            f"{type(model).__name__} cannot yet be fitted across processes (its fit is not "
            "sharded); run `probgen fit` without torchrun or --nproc"
        )


def _this_ranks_shard(model: Any, data: Any) -> Any:
    """This rank's contiguous block of the rows (of each part of a tuple of data)."""
    from probgen.core import distributed

    _check_distributed_fit(model)
    if isinstance(data, (tuple, list)):
        return type(data)(distributed.shard(part) for part in data)
    return distributed.shard(data)


def _fit_settings(arguments: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "recipe": arguments.target,
        "data": arguments.data,
        "build": {},
        "fit": {},
        "smoke": arguments.smoke,
        "seed": arguments.seed,
    }
    if not arguments.target.endswith(".toml"):
        return settings
    config_path = Path(arguments.target)
    if not config_path.is_file():
        raise DataError(f"config file {arguments.target!r} does not exist")
    config = _read_toml(config_path)
    unknown = set(config) - _FIT_CONFIG_KEYS
    if unknown:
        raise DataError(
            f"config {arguments.target!r} has unknown keys {sorted(unknown)}; "
            f"allowed: {sorted(_FIT_CONFIG_KEYS)}"
        )
    if "recipe" not in config:
        raise DataError(f'config {arguments.target!r} must name a recipe (recipe = "...")')
    settings.update({key: config[key] for key in config})
    if config.get("data") and not arguments.data:
        data_path = Path(config["data"])
        settings["data"] = str(
            data_path if data_path.is_absolute() else config_path.parent / data_path
        )
    if arguments.data:
        settings["data"] = arguments.data
    settings["smoke"] = bool(config.get("smoke", False)) or arguments.smoke
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise DataError(f"config {str(path)!r} is not valid TOML: {error}") from error


def _sample(arguments: argparse.Namespace) -> int:
    from probgen.core.io import load
    from probgen.datafiles import write_data

    model = load(arguments.model)
    if arguments.n < 1:
        raise DataError(f"-n must be at least 1, got {arguments.n}")
    options: dict[str, Any] = {"seed": arguments.seed}
    if getattr(model, "is_sequence_model", False):
        if arguments.length is None:
            raise DataError("--length is required for sequence models")
        options["length"] = arguments.length
    elif arguments.length is not None:
        raise DataError(f"--length applies to sequence models; {type(model).__name__} is not one")
    if (
        arguments.out.lower().endswith(".csv")
        and "as_frame" in inspect.signature(model.sample).parameters
    ):
        # Models over named discrete variables write names and states, not integer codes.
        options["as_frame"] = True
    draws = model.sample(arguments.n, **options)
    if isinstance(draws, tuple):
        draws = draws[0]
    if _is_image_model(model) and arguments.out.lower().endswith(".csv"):
        # One row per image (its pixels flattened), not the sequence layout of 3-D arrays:
        # `probgen score` reshapes such rows back to the model's event shape.
        draws = draws.reshape(draws.shape[0], -1)
    write_data(arguments.out, draws, sequences=getattr(model, "is_sequence_model", False))
    print(f"{arguments.n} samples written to {arguments.out}")
    return 0


def _score(arguments: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from probgen.core.io import load

    model = load(arguments.model)
    data = _read_for_model(model, arguments.data)
    with torch.no_grad():
        # One example given as a bare row scores as a 0-d tensor.
        scores = np.atleast_1d(model.log_prob(data).detach().cpu().numpy())
    kind = str(model.log_prob_kind)
    print(f"log_prob_kind: {kind}")
    print(f"meaning: {_SCORE_MEANINGS.get(kind, kind)}")
    print(f"examples: {len(scores)}")
    print(f"total log_prob: {scores.sum():.6f}")
    print(f"mean log_prob: {scores.mean():.6f}")
    dimension = int(np.prod(model.event_shape)) if _is_image_model(model) else 0
    if dimension and kind in _BITS_MARKS:
        # -log_prob / (D log 2): a lower bound on log p is an upper bound on the bits.
        bits = -scores.mean() / (dimension * np.log(2))
        print(f"mean bits per dimension: {_BITS_MARKS[kind]}{bits:.6f}")
    if arguments.out:
        frame = pd.DataFrame({"log_prob": scores, "log_prob_kind": kind})
        frame.to_csv(arguments.out, index_label="example")
        print(f"per-example scores written to {arguments.out}")
    return 0


def _infer(arguments: argparse.Namespace) -> int:
    from probgen.experiments.runner import run_file

    out = run_file(arguments.config, out_dir=arguments.out)
    print((out / "comparison.md").read_text(), end="")
    print(f"results written to {out.resolve()}")
    return 0


def _evaluate(arguments: argparse.Namespace) -> int:
    from probgen.core.io import load
    from probgen.evaluation import evaluate

    models = {}
    for path in arguments.models:
        name, counter = Path(path).stem, 2
        while name in models:
            name, counter = f"{Path(path).stem}_{counter}", counter + 1
        models[name] = load(path)
    first = next(iter(models.values()))
    data = _evaluation_data(first, arguments.data, "test")
    train = None if arguments.train is None else _evaluation_data(first, arguments.train, "train")
    report = evaluate(
        models,
        data,
        out_dir=arguments.out,
        train_data=train,
        n_samples=arguments.samples,
        max_examples=arguments.max_examples,
        features=arguments.features,
        seed=arguments.seed,
    )
    print(f"feature space of the sample metrics: {report['feature_space']}")
    print(report["table"])
    for path in report["files"].values():
        print(f"written: {path}")
    return 0


def _evaluation_data(model: Any, source: str, split: str) -> Any:
    """Data from a file, or a recipe's `split` when `source` names a recipe, not a file."""
    if not Path(source).exists():
        from probgen.recipes import registry

        if source in registry.names():
            return registry.get(source).data(split=split)
    return _read_for_model(model, source)


def _read_for_model(model: Any, path: str, shard: tuple[int, int] | None = None) -> Any:
    from probgen.datafiles import read_data

    if not Path(path).exists():
        raise DataError(f"data path {path!r} does not exist")
    if getattr(model, "is_sequence_model", False):
        scalar_rows = len(model.event_shape) == 0 and path.endswith(".npy")
        if scalar_rows and _npy_ndim(path) == 2:
            # A 2-D array of scalar-valued steps is (n_sequences, length), not one sequence.
            sequences = list(read_data(path, shard=shard))
        else:
            sequences = read_data(path, sequences=True, shard=shard)
        if len(model.event_shape) == 0:
            squeezed = []
            for index, sequence in enumerate(sequences):
                if sequence.ndim == 2 and sequence.shape[1] != 1:
                    raise DataError(
                        f"data sequence {index} has {sequence.shape[1]} columns; "
                        f"{type(model).__name__} takes one value per step"
                    )
                squeezed.append(sequence.reshape(-1))
            return squeezed
        return sequences
    data = read_data(path, shard=shard)
    if isinstance(data, np.ndarray) or getattr(model, "accepts_dataframe", False):
        return _as_images(model, data)
    import pandas as pd

    numeric = all(pd.api.types.is_numeric_dtype(dtype) for dtype in data.dtypes)
    return _as_images(model, data.to_numpy()) if numeric else data


def _is_image_model(model: Any) -> bool:
    """A model of fixed-shape examples with more than one axis (images), not of sequences."""
    shape = getattr(model, "event_shape", None)
    return (
        not getattr(model, "is_sequence_model", False)
        and shape is not None
        and len(shape) > 1
    )


def _as_images(model: Any, data: Any) -> Any:
    """Rows of flattened pixels (n, H*W) as the model's examples (n, H, W); else unchanged."""
    if not _is_image_model(model) or not isinstance(data, np.ndarray) or data.ndim != 2:
        return data
    if data.shape[1] != int(np.prod(model.event_shape)):
        return data  # the model's own check names the mismatch
    return data.reshape(data.shape[0], *model.event_shape)


def _npy_ndim(path: str) -> int | None:
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).ndim)
    except ValueError:  # not a plain array: read_data names the problem
        return None


def _format_history_entry(entry: Any) -> str:
    if isinstance(entry, dict):
        return ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()
        )
    if isinstance(entry, float):
        return f"{entry:.6g}"
    return str(entry)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
