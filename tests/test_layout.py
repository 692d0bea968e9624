"""The layout shows the data flow: subpackages in the order data flows through them, no import circles,
small modules and functions, one file per expert family, and a code version derived from the layout."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mmcompress
from mmcompress.versioning import versioned_modules

PACKAGE = Path(mmcompress.__file__).resolve().parent
# Subpackages in the order data flows through them (hub/: where pretrained weights come from); a module may
# import only its own subpackage, the ones before it and the top-level infrastructure (errors, registry,
# console, config, run directory, tracking, versioning), which imports no subpackage. The CLI package, at
# the top, may import anything.
LAYERS = ("hub", "data", "vision", "pruning", "model", "evaluation", "training", "analysis")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("mmcompress", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules `path` imports, at its top or inside functions, with the packages whose
    __init__ an import runs (but its own enclosing packages: Python has run theirs before it starts)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            targets |= {".".join(parts[:n]) for n in range(2, len(parts) + 1)} & known.keys()
    return targets


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for name, path in known.items():
        enclosing = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
        graph[name] = imports(path, known) - enclosing - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int | None:
    """The data-flow rank of a module's subpackage; -1 for top-level infrastructure, None for the CLI."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    if parts[1:2] in (["cli"], ["__main__"]):
        return None
    return -1


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_there_are_no_import_circles():
    assert cycles(import_graph()) == []


def test_modules_import_only_earlier_rooms_of_the_data_flow():
    wrong = []
    for module, targets in import_graph().items():
        rank = layer(module)
        if rank is None or module == "mmcompress":
            continue
        wrong += [f"{module} → {t}" for t in targets if layer(t) is None or layer(t) > rank]
    assert wrong == []


def test_every_subpackage_is_placed_in_the_data_flow():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == {*LAYERS, "cli"}


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path in modules().items():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert too_long == []


def test_each_expert_family_is_one_module_named_after_it():
    from mmcompress.vision.families import EXPERTS

    files = {p.stem for p in (PACKAGE / "vision" / "families").glob("*.py") if p.stem != "__init__"}
    assert set(EXPERTS.names()) == files
    for name in EXPERTS.names():
        assert EXPERTS[name].__module__ == f"mmcompress.vision.families.{name}"


@pytest.mark.parametrize(
    ("module", "versioned"),
    [
        ("model/multimodal.py", True),
        ("vision/families/clip.py", True),
        ("data/synthvqa/generate.py", True),
        ("training/trainer.py", True),
        ("evaluation/scoring.py", True),
        ("analysis/report/plots.py", False),
        ("analysis/ac/pairs.py", False),
        ("cli/runs.py", False),
        ("hub/convert.py", True),
        ("tracking.py", False),
    ],
)
def test_the_code_version_covers_the_rooms_that_compute(module, versioned):
    assert (module in versioned_modules()) == versioned
