"""Shared plumbing of the posteriordb recipes (not a recipe itself).

Each posteriordb recipe is a Pyro program whose data come from ``../shared/data/posteriordb``;
`PosteriorRecipe` wraps it as a `PyroDensity` subclass with a no-argument constructor (so that
`save` / `probgen.load` rebuild it), and `reference_summary` reads the reference posterior
(means with their Monte Carlo standard errors, and sds from the reference draws).

Example:
    >>> from models._posteriordb_recipe import flat_parameter_names
    >>> flat_parameter_names({"mu": (), "theta": (2,)})
    ['mu', 'theta[1]', 'theta[2]']
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from models import _shared_data
from probgen.errors import DataError
from probgen.pyro_bridge import PyroDensity


def flat_parameter_names(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """posteriordb's element names (1-based, Stan style) of parameters with these shapes."""
    names = []
    for name, shape in shapes.items():
        if not shape:
            names.append(name)
        else:
            names += [
                f"{name}[{','.join(str(i + 1) for i in index)}]" for index in np.ndindex(*shape)
            ]
    return names


def reference_summary(posterior_name: str) -> dict[str, dict[str, float]]:
    """{element name: {"mean", "mcse_mean", "sd"}} of the reference posterior.

    Raises:
        SharedDataMissing: the shared data folder or the reference files are absent.
    """
    means = _shared_data.posteriordb_reference_means(posterior_name)
    draws = _shared_data.posteriordb_reference_draws(posterior_name)
    summary = {}
    for position, name in enumerate(means["names"]):
        pooled = np.concatenate([np.asarray(chain[name], dtype=float) for chain in draws])
        summary[name] = {
            "mean": float(means["mean_value"][position]),
            "mcse_mean": float(means["mcse_mean"][position]),
            "sd": float(pooled.std(ddof=1)),
        }
    return summary


def draws_by_element(samples: Any, recipe_class: Any = None) -> dict[str, np.ndarray]:
    """Flatten `Samples` to {posteriordb element name: pooled draws}.

    `recipe_class.element_name(site, index)` names elements where posteriordb differs from the
    default ``site[i,j]`` (1-based).
    """
    namer = getattr(recipe_class, "element_name", None) or _default_element_name
    result = {}
    for name, values in samples.items():
        shape = values.shape[2:]
        pooled = values.reshape(-1, *shape) if shape else values.reshape(-1)
        if not shape:
            result[name] = pooled
            continue
        for index in np.ndindex(*shape):
            result[namer(name, index)] = pooled[(slice(None),) + index]
    return result


def _default_element_name(site: str, index: tuple[int, ...]) -> str:
    return f"{site}[{','.join(str(i + 1) for i in index)}]"


class PosteriorRecipe(PyroDensity):
    """Base of the posteriordb recipes: a Pyro program conditioned on posteriordb data.

    Subclasses set `posterior_name`, a static `pyro_model(**arguments)`, `arguments(observed)`
    (turning the posteriordb data dict into the model's keyword arguments) and
    `reference_to_sites(draws)` (mapping posteriordb's named reference draws to site values).

    Args:
        observed: the data to condition on, in posteriordb's JSON layout; default the
            posterior's own data from ``../shared/data/posteriordb``.
        vectorize, jit: see `PyroDensity` (the recipes are jit-compiled by default).

    Raises:
        SharedDataMissing: `observed` is not given and the shared data folder is absent.
    """

    posterior_name: ClassVar[str] = ""

    def __init__(
        self,
        observed: dict[str, Any] | None = None,
        vectorize: bool | None = None,
        jit: bool = True,
    ):
        data = (
            observed if observed is not None else _shared_data.posteriordb_data(self.posterior_name)
        )
        super().__init__(
            self.pyro_model, model_kwargs=self.arguments(data), vectorize=vectorize, jit=jit
        )
        self.observed = observed

    def get_config(self) -> dict[str, Any]:
        return {"observed": self.observed, "vectorize": self.vectorize, "jit": self.jit}

    @staticmethod
    def pyro_model(**arguments: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @staticmethod
    def arguments(observed: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def element_name(site: str, index: tuple[int, ...]) -> str:
        """posteriordb's name of element `index` (0-based) of `site`."""
        return _default_element_name(site, index)

    @staticmethod
    def reference_to_sites(draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError  # pragma: no cover


def reference_points(recipe_class: type[PosteriorRecipe], split: str = "train") -> torch.Tensor:
    """Reference posterior draws as flat unconstrained vectors (n, dim) of `recipe_class`.

    "train" gives the draws of the first five reference chains, "test" those of the last five.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    chains = _shared_data.posteriordb_reference_draws(recipe_class.posterior_name)
    chosen = chains[:5] if split == "train" else chains[5:]
    pooled = {
        name: np.concatenate([np.asarray(chain[name], dtype=float) for chain in chosen])
        for name in chosen[0]
    }
    sites = recipe_class.reference_to_sites(pooled)
    density = recipe_class()
    values = {name: torch.as_tensor(value, dtype=torch.float64) for name, value in sites.items()}
    return density.unconstrain(values)


def element_columns(draws: dict[str, np.ndarray], name: str, count: int) -> np.ndarray:
    """Stack posteriordb elements name[1..count] into an array (n, count)."""
    return np.stack([draws[f"{name}[{i + 1}]"] for i in range(count)], axis=-1)
