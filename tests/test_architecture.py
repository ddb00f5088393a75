"""The package's data flows one way: no import cycle between its sub-packages (deferred imports included)."""

import ast
import graphlib
from pathlib import Path

import pytest

import lelp_lightning

PACKAGE = Path(lelp_lightning.__file__).parent


def unit_of(module: str) -> str:
    """The sub-package (or top-level module) a dotted module name belongs to: ``lelp_lightning.data.x`` → ``data``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``lelp_lightning`` module ``path`` imports, at the top or inside a function."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import: resolve it against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
    return {m for m in found if m == "lelp_lightning" or m.startswith("lelp_lightning.")}


def dependency_graph() -> dict[str, set[str]]:
    """Sub-package → the other sub-packages it imports (the root ``lelp_lightning/__init__.py`` is the facade
    that re-exports the public classes, so it is left out)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue
        unit = unit_of(module_name(path))
        deps = {unit_of(m) for m in imported_modules(path)} - {unit, ""}
        graph.setdefault(unit, set()).update(deps)
    return graph


def test_no_import_cycle_between_sub_packages():
    graph = dependency_graph()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle between sub-packages: {' -> '.join(err.args[1])}")
    assert {"core", "sources", "cache", "teachers", "strategies", "data", "objectives", "students"} <= set(order)


def test_the_vocabulary_module_depends_on_nothing_but_errors():
    assert dependency_graph()["core"] <= {"errors"}


def test_the_data_flows_one_way():
    """source → teacher → cache → strategy → targets → student: nothing upstream imports what reads it."""
    graph = dependency_graph()
    downstream = {"sources": {"teachers", "cache", "strategies", "data", "objectives", "students", "module", "cli"},
                  "teachers": {"data", "strategies", "objectives", "students", "module", "cli"},
                  "cache": {"teachers", "data", "strategies", "objectives", "module", "cli"},
                  "strategies": {"data", "objectives", "students", "module", "cli"},
                  "objectives": {"data", "module", "cli"},
                  "students": {"data", "module", "cli"}}
    for unit, forbidden in downstream.items():
        assert not graph[unit] & forbidden, f"{unit} imports {sorted(graph[unit] & forbidden)}"

