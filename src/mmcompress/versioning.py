"""Code versions: digests of the source that produces a result, so changed code never reuses stale results.

Run ids, the generated-data cache and the mini-expert cache are keyed by the digest of the code behind
them. The digest reads the syntax tree, not the text, so comments, docstrings and formatting leave it
unchanged; fields that newer Pythons add to the tree with empty defaults are skipped, so it is stable
across Python versions.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# Modules that only launch, log, present or analyse finished runs; editing them changes no trained model
# or benchmark score (the AC analysis reads runs and launches their align stage through stages.py).
PRESENTATION_ONLY = (
    "__init__.py",
    "ac.py",
    "data/pairs.py",
    "__main__.py",
    "cli.py",
    "console.py",
    "errors.py",
    "report.py",
    "sweep.py",
    "tracking.py",
    "versioning.py",
)


@cache
def source_digest(*relative_paths: str) -> str:
    """A 10-hex digest of the named modules (paths relative to the package), independent of layout."""
    digest = hashlib.sha1()
    for relative in sorted(relative_paths):
        tree = ast.parse((PACKAGE / relative).read_text())
        digest.update(relative.encode() + b"\0" + _canonical(tree).encode() + b"\0")
    return digest.hexdigest()[:10]


@cache
def code_version() -> str:
    """The digest of every module that can change what a run trains or scores."""
    modules = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")]
    return source_digest(*[m for m in modules if m not in PRESENTATION_ONLY])


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
