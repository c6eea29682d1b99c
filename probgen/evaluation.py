"""One evaluation report for one or several fitted models on held-out data.

`evaluate(models, data)` judges each model two ways and says which figure is which:

- by its density, where it has one, respecting `log_prob_kind`: the held-out log-likelihood in
  nats per example and bits per dimension when it is exact, the same figures named as a lower
  bound (an ELBO) or an estimate when that is what `log_prob` returns, and nothing when the
  model has no density (a GAN; `log_prob_kind` ``"none"``) or only an unnormalised one;
- by its samples, for every model: MMD with a permutation p-value, Fréchet distance, KID,
  precision / recall / density / coverage, all on one feature space named in the report: the
  penultimate layer of the in-repo classifier when the data are 8x8 digits or 28x28 MNIST
  images in [0, 1] (`probgen.metrics.load_feature_classifier`; plus an Inception-Score-style
  score), the flattened examples otherwise; with `train_data`, memorisation checks (the
  data-copying test of Meehan et al. 2020 and nearest-neighbour distances).

With `out_dir` it writes `evaluation.json` (every figure and the table) and `samples.png` (an
image grid per model for image data, a scatter over the data for 2-D data).

Example:
    >>> import torch
    >>> from probgen.evaluation import evaluate
    >>> from probgen.mixture import GaussianMixture
    >>> g = torch.Generator().manual_seed(0)
    >>> train, test = torch.randn(300, 2, generator=g), torch.randn(200, 2, generator=g)
    >>> model = GaussianMixture(n_components=2, seed=0).fit(train)
    >>> report = evaluate({"gmm": model}, test, n_permutations=20)
    >>> report["models"]["gmm"]["likelihood"]["kind"], report["feature_space"]
    ('exact', 'raw')
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from probgen.core.data import as_tensor
from probgen.core.errors import DataError, NoDensityError
from probgen.metrics import (
    frechet_distance_from_samples,
    heldout_log_likelihood,
    inception_score,
    kernel_distance,
    load_feature_classifier,
    mmd,
    mmd_test,
    precision_recall_density_coverage,
)
from probgen.metrics.memorisation import data_copying_test, nearest_neighbour_distances

__all__ = ["evaluate", "format_table"]

_IMAGE_CLASSIFIERS = {64: "digits", 784: "mnist"}
_LIKELIHOOD_LABELS = {
    "exact": "held-out log-likelihood",
    "lower_bound": "held-out lower bound on the log-likelihood (e.g. an ELBO)",
    "estimate": "held-out log-likelihood estimate",
}
# Sign before a log-likelihood in the table: exact, a lower bound, an estimate.
_TABLE_MARKS = {"exact": "", "lower_bound": ">=", "estimate": "~"}


def _named_models(models: Any, names: list[str] | None) -> dict[str, Any]:
    from probgen.core.io import load

    if isinstance(models, Mapping):
        items = list(models.items())
    else:
        single = isinstance(models, (str, Path)) or not isinstance(models, (list, tuple))
        listed = [models] if single else list(models)
        items = []
        for model in listed:
            label = Path(model).stem if isinstance(model, (str, Path)) else type(model).__name__
            items.append((label, model))
    if not items:
        raise DataError("models is empty; pass a model, a model file, or a list or dict of them")
    if names is not None:
        if len(names) != len(items):
            raise DataError(f"names has {len(names)} entries for {len(items)} models")
        items = [(str(name), model) for name, (_, model) in zip(names, items)]
    named: dict[str, Any] = {}
    for label, model in items:
        if isinstance(model, (str, Path)):
            model = load(model)
        unique, counter = str(label), 2
        while unique in named:
            unique, counter = f"{label}_{counter}", counter + 1
        named[unique] = model
    return named


def _flat(values: Any, name: str) -> torch.Tensor:
    tensor = as_tensor(values, name)
    return tensor.detach().cpu().to(torch.float64).reshape(tensor.shape[0], -1)


def _feature_space(
    features: str | Callable[[torch.Tensor], torch.Tensor], data_flat: torch.Tensor
) -> tuple[str, Any]:
    """The feature space's name and its classifier (None for raw or a user callable)."""
    if callable(features):
        return getattr(features, "__name__", "custom"), features
    if features == "raw":
        return "raw", None
    if features == "auto":
        name = _IMAGE_CLASSIFIERS.get(data_flat.shape[1])
        in_range = bool(data_flat.min() >= 0) and bool(data_flat.max() <= 1)
        if name is None or not in_range:
            return "raw", None
        features = name
    if features not in ("digits", "mnist"):
        raise DataError(
            f"features must be 'auto', 'raw', 'digits', 'mnist' or a callable, got {features!r}"
        )
    return f"classifier:{features}", load_feature_classifier(features)


def _embed(values: torch.Tensor, embedder: Any, batch_size: int = 1000) -> torch.Tensor:
    if embedder is None:
        return values
    function = embedder.features if hasattr(embedder, "features") else embedder
    with torch.no_grad():
        return torch.cat(
            [
                torch.as_tensor(function(values[start : start + batch_size].float()))
                .detach()
                .to(torch.float64)
                for start in range(0, values.shape[0], batch_size)
            ]
        )


def _likelihood(model: Any, data: Any, is_sequence: bool) -> dict[str, Any]:
    kind = str(getattr(model, "log_prob_kind", "exact"))
    if kind == "none":
        return {"kind": "none", "note": "no density (log_prob raises NoDensityError)"}
    if kind == "unnormalized":
        return {"kind": kind, "note": "log-density known only up to a constant: not reported"}
    try:
        figures = heldout_log_likelihood(model, data)
    except NoDensityError as error:
        return {"kind": "none", "note": str(error)}
    figures["kind"] = figures.pop("log_prob_kind")
    figures["label"] = _LIKELIHOOD_LABELS.get(kind, kind)
    if is_sequence:
        figures["bits_per_dim"] = None  # per-sequence figures have no fixed dimension
    return figures


def _draw(model: Any, n: int, seed: int) -> torch.Tensor:
    with torch.no_grad():
        draws = model.sample(n, seed=seed)
    if isinstance(draws, tuple):
        draws = draws[0]
    return torch.as_tensor(draws).detach().cpu()


def _sample_metrics(
    name: str,
    samples_flat: torch.Tensor,
    data_features: torch.Tensor,
    embedder: Any,
    settings: dict[str, Any],
) -> dict[str, Any]:
    report: dict[str, Any] = {"n_samples": samples_flat.shape[0]}
    if embedder is not None and not callable(settings["features"]):
        outside = (samples_flat < 0) | (samples_flat > 1)
        report["clamped_fraction"] = float(outside.double().mean())
        samples_flat = samples_flat.clamp(0, 1)
    sample_features = _embed(samples_flat, embedder)
    if bool(torch.isnan(sample_features).any()):
        raise DataError(f"the samples of model {name!r} contain NaN values")
    seed = settings["seed"]
    report["mmd"] = float(mmd(data_features, sample_features))
    if settings["n_permutations"]:
        test = mmd_test(
            data_features, sample_features, n_permutations=settings["n_permutations"], seed=seed
        )
        report["mmd_p_value"] = test.p_value
    report["fid"] = float(frechet_distance_from_samples(data_features, sample_features))
    kid = kernel_distance(data_features, sample_features, subset_size=None, seed=seed)
    report["kid_mean"], report["kid_std"] = float(kid.mean), float(kid.std)
    k = min(settings["k"], data_features.shape[0] - 1, sample_features.shape[0] - 1)
    report.update(precision_recall_density_coverage(data_features, sample_features, k=k))
    if hasattr(embedder, "head"):
        splits = min(10, samples_flat.shape[0])
        score = inception_score(samples_flat.float(), classifier=embedder, splits=splits, seed=seed)
        report["inception_score"] = float(score.mean)
    if settings["train_features"] is not None:
        train_features, data_used = settings["train_features"], data_features
        copying = data_copying_test(
            train_features,
            sample_features,
            data_used,
            n_cells=min(10, train_features.shape[0]),
            min_generated=min(20, max(1, sample_features.shape[0] // 20)),
            seed=seed,
        )
        report["data_copying_statistic"] = copying["statistic"]
        report["data_copying_flag"] = copying["copying"]
        distances = nearest_neighbour_distances(train_features, sample_features, data_used)
        report["nearest_neighbour"] = distances
    return report


def evaluate(
    models: Any,
    data: Any,
    *,
    out_dir: str | Path | None = None,
    names: list[str] | None = None,
    train_data: Any = None,
    n_samples: int | None = None,
    max_examples: int = 2000,
    features: str | Callable[[torch.Tensor], torch.Tensor] = "auto",
    k: int = 5,
    n_permutations: int = 100,
    seed: int = 0,
    verbose: bool = False,
) -> dict[str, Any]:
    """Judge fitted models on held-out data: density figures by `log_prob_kind`, sample metrics.

    Args:
        models: a fitted model, a saved model file, or a list or dict (name -> model or file).
        data: held-out examples, in the format the models take (the first `max_examples`).
        out_dir: folder for `evaluation.json` and `samples.png` (created); None writes nothing.
        names: names for the models in the report (default: dict keys, file stems, class names).
        train_data: the models' training examples, for the memorisation checks (optional).
        n_samples: samples drawn per model (default: the number of held-out examples used).
        max_examples: held-out examples used, at most.
        features: feature space of the sample metrics: ``"auto"`` (the in-repo classifier for
            8x8 / 28x28 images in [0, 1], else raw), ``"raw"``, ``"digits"``, ``"mnist"``, or
            a callable from a batch of flattened examples to features.
        k: neighbour count of precision / recall / density / coverage.
        n_permutations: permutations of the MMD test (0 skips the test).
        seed: seed of the samples and of every randomised metric.
        verbose: print the table.

    Returns:
        dict: `models` (name -> report: `class`, `log_prob_kind`, `likelihood`, `samples`),
        `feature_space`, `data` (a description), `table` (text) and `files` (paths written).

    Raises:
        DataError: empty data, samples whose size per example differs from the data's, NaN
            samples, a bad setting.
    """
    named = _named_models(models, names)
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 2:
        raise DataError(f"max_examples must be an integer of at least 2, got {max_examples!r}")
    if data is None or len(data) == 0:
        raise DataError("data is empty")
    heldout = data[:max_examples]
    is_sequence = any(getattr(model, "is_sequence_model", False) for model in named.values())
    data_flat = None if is_sequence else _flat(heldout, "data")
    count = len(heldout) if n_samples is None else int(n_samples)
    if count < 2:
        raise DataError(f"n_samples must be at least 2, got {n_samples}")
    space, embedder = ("none", None) if data_flat is None else _feature_space(features, data_flat)
    settings: dict[str, Any] = {
        "k": k,
        "n_permutations": n_permutations,
        "seed": seed,
        "features": features,
        "train_features": None,
    }
    data_features = None if data_flat is None else _embed(data_flat, embedder)
    if train_data is not None and data_flat is not None:
        train_flat = _flat(train_data, "train_data")
        if train_flat.shape[1] != data_flat.shape[1]:
            raise DataError(
                f"train_data has {train_flat.shape[1]} values per example, data has "
                f"{data_flat.shape[1]}"
            )
        settings["train_features"] = _embed(train_flat, embedder)
    reports: dict[str, Any] = {}
    drawn: dict[str, torch.Tensor] = {}
    for name, model in named.items():
        report: dict[str, Any] = {
            "class": type(model).__name__,
            "log_prob_kind": str(getattr(model, "log_prob_kind", "exact")),
            "likelihood": _likelihood(model, heldout, is_sequence),
        }
        if getattr(model, "is_sequence_model", False) or data_flat is None:
            report["samples"] = {"note": "sample metrics need examples of one fixed size"}
        else:
            samples = _draw(model, count, seed)
            samples_flat = samples.to(torch.float64).reshape(samples.shape[0], -1)
            if samples_flat.shape[1] != data_flat.shape[1]:
                raise DataError(
                    f"model {name!r} draws {samples_flat.shape[1]} values per example; data has "
                    f"{data_flat.shape[1]}"
                )
            drawn[name] = samples_flat
            report["samples"] = _sample_metrics(
                name, samples_flat, data_features, embedder, settings
            )
        reports[name] = report
    result: dict[str, Any] = {
        "models": reports,
        "feature_space": space,
        "data": {
            "n_examples": len(heldout),
            "values_per_example": None if data_flat is None else int(data_flat.shape[1]),
        },
        "files": {},
    }
    if hasattr(embedder, "head") and data_flat is not None:
        splits = min(10, data_flat.shape[0])
        result["data"]["inception_score"] = float(
            inception_score(data_flat.float(), classifier=embedder, splits=splits, seed=seed).mean
        )
    result["table"] = format_table(reports)
    if verbose:
        print(result["table"])
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        picture = _plot(out / "samples.png", data_flat, drawn, space)
        if picture is not None:
            result["files"]["samples"] = str(picture)
        result["files"]["json"] = str(out / "evaluation.json")
        (out / "evaluation.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return result


_COLUMNS = (
    ("log-lik (nats)", None),
    ("bits/dim", None),
    ("MMD", "mmd"),
    ("FID", "fid"),
    ("KID", "kid_mean"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("density", "density"),
    ("coverage", "coverage"),
    ("IS", "inception_score"),
)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(reports: Mapping[str, Any]) -> str:
    """The models side by side, one row each (">=" marks a lower bound, "~" an estimate)."""
    header = ["model", "kind"] + [title for title, _ in _COLUMNS]
    rows = [header]
    for name, report in reports.items():
        likelihood = report.get("likelihood") or {}
        kind = likelihood.get("kind", report.get("log_prob_kind", ""))
        mark = _TABLE_MARKS.get(kind)
        row = [name, str(report.get("log_prob_kind", kind))]
        if mark is None or "mean_log_prob" not in likelihood:
            row += ["-", "-"]
        else:
            row += [
                mark + _cell(likelihood["mean_log_prob"]),
                _cell(likelihood.get("bits_per_dim")),
            ]
            if mark and row[-1] != "-":
                row[-1] = ("<=" if kind == "lower_bound" else "~") + row[-1]
        samples = report.get("samples") or {}
        row += [_cell(samples.get(key)) for _, key in _COLUMNS[2:]]
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    return value


def _plot(
    path: Path, data_flat: torch.Tensor | None, drawn: dict[str, torch.Tensor], space: str
) -> Path | None:
    """An image grid per model (and the data) for square images; a scatter for 2-D data."""
    if data_flat is None or not drawn:
        return None
    width = data_flat.shape[1]
    side = math.isqrt(width)
    is_image = space.startswith("classifier:") or (side * side == width and side >= 4)
    if not is_image and width != 2:
        return None
    from matplotlib.figure import Figure

    panels = [("data", data_flat)] + list(drawn.items())
    figure = Figure(figsize=(2.6 * len(panels), 2.8))
    for index, (title, values) in enumerate(panels):
        axis = figure.add_subplot(1, len(panels), index + 1)
        if is_image:
            low, high = float(data_flat.min()), float(data_flat.max())
            tiles = values[:64].reshape(-1, side, side)
            tiles = torch.cat([tiles, tiles.new_full((64 - tiles.shape[0], side, side), low)])
            # A mid-grey border keeps neighbouring tiles apart.
            tiles = torch.nn.functional.pad(tiles, (1, 1, 1, 1), value=(low + high) / 2)
            cell = side + 2
            mosaic = tiles.reshape(8, 8, cell, cell).permute(0, 2, 1, 3).reshape(8 * cell, 8 * cell)
            axis.imshow(mosaic.numpy(), cmap="gray", vmin=low, vmax=high)
            axis.set_axis_off()
        else:
            axis.scatter(data_flat[:, 0], data_flat[:, 1], s=3, c="lightgrey", label="data")
            if title != "data":
                axis.scatter(values[:, 0], values[:, 1], s=3, c="tab:blue", label="samples")
            axis.set_xticks([])
            axis.set_yticks([])
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return path
