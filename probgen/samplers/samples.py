"""`Samples`: MCMC draws shaped (chain, draw, ...) per parameter, with sampler statistics.

Statistics use ArviZ's names: `lp` (log density, in unconstrained space with the Jacobian, like
Stan's `lp__`), `acceptance_rate`, `diverging`, `step_size`. Files are safetensors (arrays)
with the attributes as JSON in the header: nothing is pickled.

Example:
    >>> import numpy as np
    >>> samples = Samples({"mu": np.random.default_rng(0).normal(size=(4, 100))})
    >>> samples.num_chains, samples.num_draws
    (4, 100)
    >>> list(samples.summary().columns)
    ['mean', 'sd', 'q5', 'q50', 'q95', 'mcse_mean', 'ess_bulk', 'ess_tail', 'r_hat']
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from probgen.core.atomic import atomic_write_bytes
from probgen.core.errors import DataError, ModelFileError
from probgen.samplers import diagnostics

FORMAT = "probgen-samples"
FORMAT_VERSION = 1


class Samples(Mapping):
    """Draws per parameter (chain, draw, *shape), sampler statistics (chain, draw), attributes.

    Args:
        draws: dict from parameter name to array (chain, draw, *shape).
        stats: dict from statistic name to array (chain, draw).
        attrs: JSON-able description of the run (method, seed, settings, timings).
        unconstrained: optional array (chain, draw, dim) of the flat unconstrained states.
    """

    def __init__(
        self,
        draws: Mapping[str, Any],
        stats: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
        unconstrained: Any = None,
    ) -> None:
        if not draws:
            raise DataError("draws is empty; Samples needs at least one parameter")
        self.draws = {name: _to_numpy(value) for name, value in draws.items()}
        shapes = {value.shape[:2] for value in self.draws.values()}
        if len(shapes) != 1 or any(value.ndim < 2 for value in self.draws.values()):
            raise DataError(f"every parameter needs the same (chain, draw) shape, got {shapes}")
        self.stats = {name: _to_numpy(value) for name, value in (stats or {}).items()}
        self.attrs = dict(attrs or {})
        self.unconstrained = None if unconstrained is None else _to_numpy(unconstrained)

    # ---- mapping interface -------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        return self.draws[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.draws)

    def __len__(self) -> int:
        return len(self.draws)

    def __repr__(self) -> str:
        return (
            f"Samples(method={self.attrs.get('method')!r}, chains={self.num_chains}, "
            f"draws={self.num_draws}, parameters={list(self.draws)})"
        )

    @property
    def num_chains(self) -> int:
        return int(next(iter(self.draws.values())).shape[0])

    @property
    def num_draws(self) -> int:
        return int(next(iter(self.draws.values())).shape[1])

    # ---- summaries ---------------------------------------------------------------------------
    def summary(self, var_names: list[str] | None = None):
        """DataFrame with mean, sd, q5, q50, q95, mcse_mean, ess_bulk, ess_tail, r_hat."""
        names = var_names or list(self.draws)
        missing = [name for name in names if name not in self.draws]
        if missing:
            raise DataError(
                f"var_names has unknown parameters {missing}; known: {list(self.draws)}"
            )
        return diagnostics.summary_table({name: self.draws[name] for name in names})

    @property
    def num_divergences(self) -> int:
        """Post-warmup divergent transitions (0 when the sampler reports none)."""
        diverging = self.stats.get("diverging")
        return 0 if diverging is None else int(np.asarray(diverging, dtype=bool).sum())

    def to_arviz(self):
        """The draws as an `arviz.InferenceData` (posterior and sample_stats groups)."""
        import arviz as az

        stats = dict(self.stats)
        if "diverging" in stats:
            stats["diverging"] = np.asarray(stats["diverging"], dtype=bool)
        attrs = {
            key: json.dumps(value) if not isinstance(value, (str, int, float)) else value
            for key, value in self.attrs.items()
        }
        try:
            return az.from_dict(posterior=dict(self.draws), sample_stats=stats or None, attrs=attrs)
        except TypeError:  # ArviZ 1.x takes one dict of groups
            groups = {"posterior": dict(self.draws)}
            if stats:
                groups["sample_stats"] = stats
            return az.from_dict(groups)

    def plot(self, path: str | Path, var_names: list[str] | None = None) -> list[Path]:
        """Write `trace.png` and `posterior.png` (ArviZ plots) into the folder `path`.

        Parameters with many elements are shown by their first few; `var_names` picks which.
        """
        import arviz as az
        import matplotlib.pyplot as plt

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        names = var_names or _plot_names(self.draws)
        data = self.to_arviz()
        written = []
        with _quiet_warnings():
            # With many chains, one density per chain is unreadable: pool them.
            axes = az.plot_trace(
                data, var_names=names, compact=True, combined=self.num_chains > 8, show=False
            )
            figure = np.ravel(axes)[0].get_figure()
            figure.tight_layout()
            figure.savefig(folder / "trace.png", dpi=80)
            plt.close(figure)
            written.append(folder / "trace.png")
            axes = az.plot_posterior(data, var_names=names, show=False)
            figure = np.ravel(axes)[0].get_figure()
            figure.savefig(folder / "posterior.png", dpi=80)
            plt.close(figure)
            written.append(folder / "posterior.png")
        return written

    # ---- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write to `path` (safetensors + JSON attributes) atomically (`probgen.core.atomic`)."""
        from safetensors.numpy import save

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"draws/{name}": np.ascontiguousarray(v) for name, v in self.draws.items()}
        tensors.update({f"stats/{name}": np.ascontiguousarray(v) for name, v in self.stats.items()})
        if self.unconstrained is not None:
            tensors["unconstrained"] = np.ascontiguousarray(self.unconstrained)
        tensors = {
            key: value.astype(np.uint8) if value.dtype == bool else value
            for key, value in tensors.items()
        }
        bool_stats = [name for name, value in self.stats.items() if value.dtype == bool]
        metadata = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "attrs": json.dumps(self.attrs, default=_json_default),
            "bool_stats": json.dumps(bool_stats),
            "order": json.dumps(list(self.draws)),
        }
        atomic_write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> Samples:
        """Read a file written by `save`.

        Raises:
            ModelFileError: missing, corrupt or not a probgen samples file.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise ModelFileError(f"{path} does not exist")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                arrays = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as error:
            raise ModelFileError(f"{path} is not a readable samples file: {error}") from error
        if metadata.get("format") != FORMAT:
            raise ModelFileError(f"{path} is not a probgen samples file")
        if int(metadata.get("format_version", "0")) > FORMAT_VERSION:
            raise ModelFileError(f"{path} was written by a newer probgen")
        order = json.loads(metadata.get("order", "[]"))
        draws = {name: arrays[f"draws/{name}"] for name in order}
        bool_stats = set(json.loads(metadata.get("bool_stats", "[]")))
        stats = {
            key[len("stats/") :]: value.astype(bool)
            if key[len("stats/") :] in bool_stats
            else value
            for key, value in arrays.items()
            if key.startswith("stats/")
        }
        return cls(
            draws, stats, json.loads(metadata.get("attrs", "{}")), arrays.get("unconstrained")
        )


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _plot_names(draws: Mapping[str, np.ndarray], limit: int = 6) -> list[str]:
    """Parameters to plot: scalar and small ones first, at most `limit`."""
    ordered = sorted(draws, key=lambda name: int(np.prod(draws[name].shape[2:])))
    return ordered[:limit]


class _quiet_warnings:
    def __enter__(self) -> None:
        import warnings

        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)
