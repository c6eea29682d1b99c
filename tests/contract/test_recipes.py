"""Every recipe in models/ goes through the density contract with its SMOKE settings."""

from __future__ import annotations

import pytest
from probgen.recipes import registry
from probgen.recipes._shared_data import SharedDataMissing

from probgen.core.testing import check_density


def _params():
    params = []
    for name in registry.names():
        recipe = registry.get(name)
        marks = [pytest.mark.slow] if recipe.slow else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("name", _params())
def test_recipe_meets_density_contract(name):
    recipe = registry.get(name)
    try:
        model = recipe.smoke_build()
        data = recipe.smoke_data()
    except SharedDataMissing as error:
        pytest.skip(str(error))
    report = check_density(model, data, fit_options=recipe.smoke_fit, **recipe.contract)
    assert report["log_prob_kind"] == str(model.log_prob_kind)


@pytest.mark.parametrize("name", registry.names())
def test_recipe_declares_what_registry_needs(name):
    recipe = registry.get(name)
    assert recipe.description, f"models/{name}.py needs a module docstring"
    assert isinstance(recipe.smoke, dict)
    assert set(recipe.smoke) <= {"build", "data", "fit"}
