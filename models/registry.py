"""Find recipes by name.

A recipe is a module in the `models` package that exports:

- ``build(**overrides) -> model``: the model, unfitted, with the recipe's settings;
- ``data(split="train", seed=0, **options)``: its data, from synthetic generation, data that ships
  inside an installed package, or files under ``../shared/data`` (never a download);
- ``SMOKE``: a dict with optional keys ``"build"``, ``"data"`` and ``"fit"`` (keyword overrides for
  a seconds-long run);
- optionally ``REFERENCE`` (a known answer and its source), ``FAMILY`` (a short family name),
  ``SLOW = True`` (too heavy for the default test run), and ``CONTRACT`` (keyword options
  passed to `probgen.core.testing.check_density`).

Example:
    >>> from probgen.recipes import registry
    >>> "hmm_casino" in registry.names()
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import probgen.recipes as models

from probgen.core.errors import DataError

_NOT_RECIPES = {"registry"}


@dataclass(frozen=True)
class Recipe:
    """One recipe module and what it declares."""

    name: str
    module: ModuleType
    family: str = ""
    description: str = ""
    slow: bool = False
    smoke: dict[str, Any] = field(default_factory=dict)
    reference: Any = None
    contract: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> Any:
        """The recipe's model (unfitted)."""
        return self.module.build(**overrides)

    def data(self, split: str = "train", seed: int = 0, **options: Any) -> Any:
        """The recipe's data for `split`."""
        return self.module.data(split=split, seed=seed, **options)

    def smoke_build(self) -> Any:
        return self.build(**self.smoke.get("build", {}))

    def smoke_data(self, split: str = "train", seed: int = 0) -> Any:
        return self.data(split=split, seed=seed, **self.smoke.get("data", {}))

    @property
    def smoke_fit(self) -> dict[str, Any]:
        return dict(self.smoke.get("fit", {}))


def names() -> list[str]:
    """Names of every recipe module in `models/`, sorted."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(models.__path__)
        if not info.name.startswith("_") and info.name not in _NOT_RECIPES
    )


def get(name: str) -> Recipe:
    """The recipe called `name`.

    Raises:
        DataError: no recipe has that name (the message lists the ones that exist).
    """
    available = names()
    if name not in available:
        raise DataError(f"recipe {name!r} not found; available: {', '.join(available)}")
    module = importlib.import_module(f"probgen.recipes.{name}")
    if not hasattr(module, "build") or not hasattr(module, "data"):
        raise DataError(
            f"module probgen.recipes.{name} is not a recipe (it needs build() and data())"
        )
    doc = (module.__doc__ or "").strip().splitlines()
    return Recipe(
        name=name,
        module=module,
        family=getattr(module, "FAMILY", ""),
        description=doc[0] if doc else "",
        slow=bool(getattr(module, "SLOW", False)),
        smoke=dict(getattr(module, "SMOKE", {})),
        reference=getattr(module, "REFERENCE", None),
        contract=dict(getattr(module, "CONTRACT", {})),
    )


def all_recipes() -> list[Recipe]:
    """Every recipe, loaded."""
    return [get(name) for name in names()]
