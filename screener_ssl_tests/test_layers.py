"""The package's floors are true: no module imports a module of a higher layer.

The layer order is read from the README's Layout section (one bullet per layer, lowest first,
each naming its paths in backticks), so the document and the code cannot drift apart: a module
that no bullet places fails, and so does any import (at module level, inside a function, or under
``TYPE_CHECKING``) from a lower layer to a higher one.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "screener_ssl"


def readme_layers(text: str) -> list[list[str]]:
    """The Layout section's bullets, lowest first: each a list of module prefixes (dotted)."""
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    layers = []
    for line in section.splitlines():
        if not line.startswith("- `screener_ssl"):
            continue
        # The bullet's leading run of backticked paths (before the first " — ") names its modules.
        head = line.split(" — ", 1)[0]
        paths = re.findall(r"`(screener_ssl[^`]*)`", head)
        layers.append([p.removesuffix(".py").rstrip("/").replace("/", ".") for p in paths])
    return layers


def module_name(path: Path) -> str:
    """The dotted name of ``path``; a package's ``__init__.py`` keeps its ``.__init__`` (a layer may claim it alone)."""
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def file_key(target: str, known: set[str]) -> str | None:
    """The module an import of ``target`` runs: the module itself, or the package's ``__init__``."""
    if target in known:
        return target
    return f"{target}.__init__" if f"{target}.__init__" in known else None


def imported_modules(path: Path, module: str, source: str | None = None) -> list[tuple[str, int]]:
    """Every ``screener_ssl`` module ``path`` imports, with its line (relative imports resolved)."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("screener_ssl"):
                # ``from screener_ssl.x import y`` imports the submodule x.y where y is one, else x.
                known = {module for _, module in package_modules()}
                submodules = [f"{target}.{alias.name}" for alias in node.names
                              if file_key(f"{target}.{alias.name}", known) is not None]
                found += [(name, node.lineno) for name in submodules] or [(target, node.lineno)]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("screener_ssl")]
    return found


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """The layer whose longest prefix names ``module`` (``screener_ssl.ssl.objectives`` beats ``screener_ssl.ssl``)."""
    best, best_len = None, -1
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


@functools.cache
def package_modules() -> list[tuple[Path, str]]:
    return sorted((path, module_name(path)) for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def upward_imports(layers: list[list[str]], sources: dict[Path, str] | None = None) -> list[str]:
    """Every import from a lower layer to a higher one (``sources`` replaces files' text, for tests)."""
    known = {module for _, module in package_modules()}
    problems = []
    for path, module in package_modules():
        own = layer_of(module, layers)
        for target, line in imported_modules(path, module, (sources or {}).get(path)):
            key = file_key(target, known)
            if key is None:  # a name imported from a module, not a module
                continue
            theirs = layer_of(key, layers)
            if own is not None and theirs is not None and theirs > own:
                problems.append(
                    f"{path.relative_to(REPO)}:{line} imports {target} "
                    f"(layer {theirs}: {layers[theirs][0]}) from layer {own} ({layers[own][0]})"
                )
    return problems


@pytest.fixture(scope="module")
def layers() -> list[list[str]]:
    return readme_layers((REPO / "README.md").read_text())


def test_the_layout_names_the_layers_lowest_first(layers):
    flat = [prefix for prefixes in layers for prefix in prefixes]
    assert flat[0] == "screener_ssl.store", flat
    assert len(flat) == len(set(flat)), f"a path is named by two layers: {flat}"
    for module in ("screener_ssl.data", "screener_ssl.ssl", "screener_ssl.probe", "screener_ssl.tracking",
                   "screener_ssl.runs", "screener_ssl.defs"):
        assert module in flat, f"the Layout section names no layer for {module}"


def test_every_module_has_a_layer(layers):
    unplaced = [module for _, module in package_modules() if layer_of(module, layers) is None]
    assert not unplaced, f"modules no Layout bullet places (add them to the README's Layout): {unplaced}"


def test_no_module_imports_from_a_higher_layer(layers):
    problems = upward_imports(layers)
    assert not problems, "imports from a lower layer to a higher one:\n" + "\n".join(problems)


def test_the_store_imports_nothing_of_the_package():
    store = PACKAGE / "store"
    for path in store.rglob("*.py"):
        module = module_name(path)
        outside = [(t, line) for t, line in imported_modules(path, module) if not t.startswith("screener_ssl.store")]
        assert not outside, f"{path.relative_to(REPO)} imports {outside}: the store is the ground floor"


# The check itself must be able to fail: the imports the restructuring removed, replayed.
OLD_UPWARD_IMPORTS = [
    ("screener_ssl/data/dataset.py", "screener_ssl.tracking.leaderboard"),
    ("screener_ssl/probe/probe.py", "screener_ssl.tracking.board"),
    ("screener_ssl/ssl/checkpoint.py", "screener_ssl.tracking.index"),
    ("screener_ssl/ssl/sampler.py", "screener_ssl.ssl.objectives.base"),
    ("screener_ssl/ssl/trainer.py", "screener_ssl.ssl.objectives.base"),
    ("screener_ssl/probe/head.py", "screener_ssl.tracking.latest"),
    ("screener_ssl/probe/metrics.py", "screener_ssl.scan.scan"),
    ("screener_ssl/tracking/index.py", "screener_ssl.runs.sweep"),
    ("screener_ssl/store/artifacts.py", "screener_ssl.data.contracts"),
]


@pytest.mark.parametrize(("source", "target"), OLD_UPWARD_IMPORTS)
def test_an_upward_import_is_caught(layers, source, target):
    path = REPO / source
    known = {module for _, module in package_modules()}
    assert layer_of(file_key(target, known), layers) > layer_of(module_name(path), layers), (source, target)
    patched = path.read_text() + f"\n\ndef _late():\n    import {target}  # noqa: F401\n"
    problems = upward_imports(layers, {path: patched})
    assert any(problem.startswith(f"{source}:") and f"imports {target} " in problem for problem in problems), problems
