"""Code versions: digests of the source that produces a result, so changed code never reuses stale results.

Run ids, the generated-data cache, the mini-expert cache and the feature store are keyed by the digest of
the code behind them: whole modules, or single top-level functions (`path.py::name`), so an edit elsewhere
in a module does not invalidate them. The digest reads the syntax tree, not the text, so comments,
docstrings and formatting leave it unchanged; fields that newer Pythons add to the tree with empty
defaults are skipped, so it is stable across Python versions.

The run id's code version follows the layout: the subpackages that build, train and score models count,
`analysis/` (sweeps, reports, the AC analysis: they read finished runs), `cli/` and the top-level modules
(config composition, registry, errors, console, run directory, tracking and this one: they launch and
record runs) do not.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
UNVERSIONED = ("analysis", "cli")  # the subpackages that only launch runs or read finished ones


@cache
def source_digest(*sources: str) -> str:
    """A 10-hex digest of the named modules (paths relative to the package) or top-level functions and
    classes of them (`path.py::name`), independent of formatting."""
    digest = hashlib.sha1()
    for source in sorted(sources):
        relative, _, name = source.partition("::")
        tree = ast.parse((PACKAGE / relative).read_text())
        if name:
            tree = _definition(tree, name, relative)
        digest.update(source.encode() + b"\0" + _canonical(tree).encode() + b"\0")
    return digest.hexdigest()[:10]


def module_path(obj) -> str:
    """The package-relative path of the module defining `obj` (a class or function), for `source_digest`."""
    return Path(sys.modules[obj.__module__].__file__).resolve().relative_to(PACKAGE).as_posix()


def versioned_modules() -> list[str]:
    """Every module that can change what a run trains or scores: all of the subpackages but analysis/ and
    cli/ (see the module docstring)."""
    modules = [p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py")]
    return sorted(m.as_posix() for m in modules if len(m.parts) > 1 and m.parts[0] not in UNVERSIONED)


@cache
def code_version() -> str:
    """The digest of the versioned modules: part of every run id."""
    return source_digest(*versioned_modules())


def _definition(tree: ast.Module, name: str, relative: str) -> ast.AST:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
    raise ValueError(f"{relative} defines no top-level {name}")


def _canonical(node: ast.AST) -> str:
    """The tree as text: node types and non-empty fields, docstrings dropped, no positions."""
    if isinstance(node, ast.AST):
        fields = []
        for name, value in ast.iter_fields(node):
            if name == "body" and isinstance(value, list) and _is_docstring_holder(node):
                value = value[1:] if value and _is_docstring(value[0]) else value
            if value is None or value == []:
                continue
            fields.append(f"{name}={_canonical(value)}")
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(item) for item in node) + "]"
    return repr(node)


def _is_docstring_holder(node: ast.AST) -> bool:
    return isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )
