"""The code's data flows one way: no import cycle between the library's sub-packages nor between the benchmarks'
(deferred imports included), the library never imports the benchmarks, and nothing outside tests/ edits sys.path."""

import ast
import graphlib
from pathlib import Path

import pytest

import lelp_lightning

PACKAGE = Path(lelp_lightning.__file__).parent
REPO = PACKAGE.parent
BENCHMARKS = REPO / "benchmarks"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module under ``root`` (benchmarks/results holds records, not code)."""
    return {module_name(p): p for p in root.rglob("*.py") if "results" not in p.relative_to(root).parts}


def imported_modules(path: Path, prefix: str) -> set[str]:
    """Every module starting with ``prefix`` that ``path`` imports, at the top or inside a function: for
    ``from a.b import c`` both ``a.b`` and ``a.b.c`` (the caller keeps those that are modules)."""
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
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == prefix or m.startswith(prefix + ".")}


def unit_of(module: str) -> str:
    """The sub-package (or top-level module) a dotted module name belongs to: ``lelp_lightning.data.x`` → ``data``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def dependency_graph() -> dict[str, set[str]]:
    """Sub-package → the other sub-packages it imports (the root ``lelp_lightning/__init__.py`` is the facade
    that re-exports the public classes, so it is left out)."""
    graph: dict[str, set[str]] = {}
    known = modules(PACKAGE)
    for name, path in known.items():
        if path == PACKAGE / "__init__.py":
            continue
        deps = {unit_of(m) for m in imported_modules(path, "lelp_lightning") if m in known}
        graph.setdefault(unit_of(name), set()).update(deps - {unit_of(name), ""})
    return graph


def benchmark_graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module → the benchmarks modules it imports, unit → the other units it imports), a unit being a
    sub-package or top-level module of benchmarks (``benchmarks.accuracy``, ``benchmarks.provenance`` ...)."""
    known = modules(BENCHMARKS)
    by_module: dict[str, set[str]] = {}
    by_unit: dict[str, set[str]] = {}
    for name, path in known.items():
        deps = {m for m in imported_modules(path, "benchmarks") if m in known} - {name}
        by_module[name] = deps
        unit = ".".join(name.split(".")[:2])
        by_unit.setdefault(unit, set()).update({".".join(m.split(".")[:2]) for m in deps} - {unit, "benchmarks"})
    return by_module, by_unit


def assert_acyclic(graph: dict[str, set[str]], what: str) -> list[str]:
    try:
        return list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle between {what}: {' -> '.join(err.args[1])}")


def test_no_import_cycle_between_sub_packages():
    order = assert_acyclic(dependency_graph(), "sub-packages")
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


def test_no_import_cycle_between_benchmarks_modules_nor_their_sub_packages():
    by_module, by_unit = benchmark_graphs()
    assert_acyclic(by_module, "benchmarks modules")
    order = assert_acyclic(by_unit, "benchmarks sub-packages")
    assert {"benchmarks.accuracy", "benchmarks.throughput", "benchmarks.tune", "benchmarks.active",
            "benchmarks.search", "benchmarks.provenance", "benchmarks.report"} <= set(order)
    # the grid's definition is read by the studies built on its cells; the page reads them all, nothing reads it
    assert "benchmarks.accuracy" in by_unit["benchmarks.tune"]
    assert by_unit["benchmarks.accuracy"] == {"benchmarks.provenance"}
    assert not any("benchmarks.report" in deps for deps in by_unit.values())


def test_the_graphs_see_deferred_and_from_imports():
    """The walker itself, on the grid runner (``from benchmarks.accuracy import spec`` at the top) and the
    subclass report (``from benchmarks.accuracy import grid, spec``)."""
    by_module, _ = benchmark_graphs()
    assert {"benchmarks.accuracy.spec", "benchmarks.accuracy.plan", "benchmarks.provenance"} <= \
        by_module["benchmarks.accuracy.grid"]
    assert "benchmarks.accuracy.grid" in by_module["benchmarks.accuracy.subclasses"]
    assert "benchmarks.provenance" in by_module["benchmarks.throughput.fit_breakdown"]  # imported inside main()


def test_the_library_never_imports_the_benchmarks():
    offenders = {name for name, path in modules(PACKAGE).items() if imported_modules(path, "benchmarks")}
    assert not offenders


def sys_path_edits(source: str) -> list[int]:
    """Lines of ``source`` that change ``sys.path``: a call of its mutating methods, or an assignment to it or
    to a slice of it."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            targets = [t.value if isinstance(t, ast.Subscript) else t for t in targets]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("insert", "append", "extend", "remove", "pop", "clear"):
            targets = [node.func.value]
        if any(isinstance(t, ast.Attribute) and t.attr == "path" and isinstance(t.value, ast.Name)
               and t.value.id == "sys" for t in targets):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_sys_path_check_finds_every_kind_of_edit():
    edits = "import sys\nsys.path.insert(0, 'a')\nsys.path[:0] = ['b']\nsys.path += ['c']\nsys.path.append('d')\n"
    assert sys_path_edits(edits) == [2, 3, 4, 5]
    assert sys_path_edits("import sys\nprint(sys.path)\npaths = list(sys.path)\nx = []\nx.insert(0, 1)\n") == []


def test_no_file_outside_tests_edits_sys_path():
    """Code is imported as packages (``python -m benchmarks.<area>.<script>``); only the tests set up paths."""
    skipped = {"tests", "runs", "build", "dist"}
    offenders = {}
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if parts[0] in skipped or any(p.startswith(".") for p in parts):
            continue
        if lines := sys_path_edits(path.read_text()):
            offenders[str(path.relative_to(REPO))] = lines
    assert not offenders
