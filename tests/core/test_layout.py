"""The package layout (docs/layout.md): declared packages, file sizes, no import cycles, and a
wheel that installs nothing but `probgen`.

The import layers themselves are checked by `.ci/lint-imports` (import-linter); the cycle test
here is the same check as ../shared/tools/layers.py, re-implemented with `ast` so that it runs
anywhere: every import counts, including one inside a function.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "probgen"
RECIPES = ROOT / "models"  # installed as probgen.recipes ([tool.setuptools.package-dir])
MAX_LINES = 600
# A longer file says why in its opening lines, e.g. "# longer than 600 lines: <the reason>".
_EXEMPTION = re.compile(r"^#\s*longer than 600 lines\s*:\s*\S")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _dotted(path: Path, folder: Path, name: str) -> str:
    parts = path.relative_to(folder).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((name, *parts))


def _modules() -> dict[str, Path]:
    """Every module of the installed layout, by dotted name."""
    found = {_dotted(path, PACKAGE, "probgen"): path for path in PACKAGE.rglob("*.py")}
    for path in RECIPES.rglob("*.py"):
        found[_dotted(path, RECIPES, "probgen.recipes")] = path
    return found


def _imports(found: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules it imports (anywhere in the file), as layers.py counts them."""
    edges: dict[str, set[str]] = {module: set() for module in found}
    for module, path in found.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    kept = parts[: len(parts) - node.level + 1]
                    base = ".".join(kept + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                while name and name not in found:
                    name = name.rpartition(".")[0]
                if name and name != module and "." in name:
                    edges[module].add(name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return groups


def test_packages_list_names_every_package_folder():
    declared = set(_pyproject()["tool"]["setuptools"]["packages"])
    folders = {
        _dotted(init, PACKAGE, "probgen") for init in PACKAGE.rglob("__init__.py")
    } | {"probgen.recipes"}
    missing, extra = sorted(folders - declared), sorted(declared - folders)
    assert not missing, f"package folders missing from pyproject's packages: {missing}"
    assert not extra, f"pyproject's packages names what is not a package folder: {extra}"


def test_no_file_is_over_600_lines():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not any(_EXEMPTION.match(line) for line in lines[:10]):
            too_long.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert not too_long, "over 600 lines without a reason in the opening comment: " + ", ".join(
        too_long
    )


def test_cycle_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = _cycles(_imports(_modules()))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(group) for group in cycles)


@pytest.mark.slow
def test_wheel_installs_only_the_probgen_package(tmp_path):
    # Built from a clean copy: setuptools reuses a build/ folder, which can hold stale modules.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("probgen", "models"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(wheels)],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("probgen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {entry for entry in top if not entry.endswith(".dist-info")} == {"probgen"}
    assert "probgen/recipes/registry.py" in names
    assert not any(name.startswith("probgen/tests/") for name in names)
    # The feature classifiers' weights are package data ([tool.setuptools.package-data]).
    weights = sorted((PACKAGE / "metrics" / "weights").glob("*.safetensors"))
    assert {path.stem for path in weights} >= {"digits", "mnist"}
    for path in weights:
        assert f"probgen/metrics/weights/{path.name}" in names
