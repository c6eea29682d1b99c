"""Shared plumbing of the posteriordb recipes (not a recipe itself).

Each posteriordb recipe is a Pyro program whose data come from ``../shared/data/posteriordb``;
`PosteriorRecipe` wraps it as a `PyroDensity` subclass with a no-argument constructor (so that
`save` / `probgen.load` rebuild it), `recipe_functions` gives a recipe module its `build`,
`observed` and `data` functions, and `reference_summary` reads the reference posterior
(means with their Monte Carlo standard errors, and sds from the reference draws).

Example:
    >>> from probgen.recipes._posteriordb_recipe import flat_parameter_names
    >>> flat_parameter_names({"mu": (), "theta": (2,)})
    ['mu', 'theta[1]', 'theta[2]']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from probgen.recipes import _shared_data

from probgen.core.errors import DataError
from probgen.samplers.pyro_density import PyroDensity


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

    Subclasses set `posterior_name`, a static `pyro_model(**arguments)`, either
    `observed_names` (the entries of the posteriordb data dict that the model takes, as float64
    tensors, under the same names) or `arguments(observed)` (turning that dict into the model's
    keyword arguments), and `reference_to_sites(draws)` (mapping posteriordb's named reference
    draws to site values).

    Args:
        observed: the data to condition on, in posteriordb's JSON layout; default the
            posterior's own data from ``../shared/data/posteriordb``.
        vectorize, jit: see `PyroDensity` (the recipes are jit-compiled by default).

    Raises:
        SharedDataMissing: `observed` is not given and the shared data folder is absent.
    """

    posterior_name: ClassVar[str] = ""
    observed_names: ClassVar[tuple[str, ...]] = ()

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

    @classmethod
    def arguments(cls, observed: dict[str, Any]) -> dict[str, Any]:
        """The model's keyword arguments: the entries `observed_names` as float64 tensors."""
        return {
            name: torch.as_tensor(observed[name], dtype=torch.float64)
            for name in cls.observed_names
        }

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


def recipe_functions(
    recipe_class: type[PosteriorRecipe],
) -> tuple[
    Callable[..., PosteriorRecipe], Callable[[], dict[str, Any]], Callable[..., torch.Tensor]
]:
    """The `build`, `observed` and `data` functions of the recipe module of `recipe_class`.

    - ``build(**overrides)``: the posterior (``observed=`` replaces the posteriordb data);
    - ``observed()``: the posterior's data, in posteriordb's JSON layout;
    - ``data(split="train", seed=0)``: reference posterior draws as flat unconstrained vectors
      (see `reference_points`).

    Example:
        >>> build, observed, data = recipe_functions(PosteriorRecipe)
        >>> build.__name__, observed.__name__, data.__name__
        ('build', 'observed', 'data')
    """

    def build(**overrides: Any) -> PosteriorRecipe:
        """The posterior (`observed=` replaces the posteriordb data)."""
        return recipe_class(**overrides)

    def observed() -> dict[str, Any]:
        """The posterior's data, in posteriordb's JSON layout."""
        return _shared_data.posteriordb_data(recipe_class.posterior_name)

    def data(split: str = "train", seed: int = 0, **options: Any) -> torch.Tensor:
        """Reference posterior draws as flat unconstrained vectors; see `reference_points`."""
        return reference_points(recipe_class, split)

    return build, observed, data
