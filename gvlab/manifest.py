"""The lazy experiment manifest: what is registered where, read from the sources without importing them.

Every experiment module under the experiments package (`experiments/<family>/<paper>.py`, installed as
`gvlab_experiments`) registers its experiments with `@experiment("family/name", ..., claims=[...])`. The manifest
parses each module's syntax tree (a few milliseconds for all of them) and records, per registration, the name,
the summary (first docstring line of the decorated function), the number of claims and the module. `gvlab list`
prints it without importing JAX or any experiment; `gvlab show/run/reproduce NAME` import the one module that
registers NAME. A module whose source does not parse is kept as a `broken` entry with its error, so it never takes
the others down; `gvlab list --check` imports each module on its own and reports the ones that raise.

Discovery is the single source of truth: no list of modules is kept by hand anywhere.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
from pathlib import Path

PACKAGE = "gvlab_experiments"


@dataclasses.dataclass(frozen=True)
class Record:
    """One registration found in the sources.

    Attributes:
        name: the registered experiment name (`family/name`).
        module: the dotted module that registers it.
        summary: the first line of the decorated function's docstring.
        claims: the number of `Claim(...)` entries in the decorator's `claims=[...]` list (-1 when the list is built
            by code, e.g. a comprehension: then only importing the module tells).
        sweep: whether the registration declares a sweep.
    """

    name: str
    module: str
    summary: str
    claims: int
    sweep: bool = False


@dataclasses.dataclass(frozen=True)
class Broken:
    """A module whose source could not be read or parsed."""

    module: str
    error: str


def package_dir(package: str | None = None) -> Path:
    """The folder of the experiments package, found without importing it."""
    package = package or PACKAGE
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the experiments package {package!r} is not installed (pip install -e . in the repository)")
    return Path(next(iter(spec.submodule_search_locations)))


def module_files(package: str | None = None) -> dict[str, Path]:
    """{dotted module: file} of every experiment module (files starting with `_` are not modules of experiments)."""
    package = package or PACKAGE
    root = package_dir(package)
    out = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).with_suffix("")
        if any(part.startswith("_") for part in relative.parts):
            continue
        out[".".join((package, *relative.parts))] = path
    return out


def _decorator_records(tree: ast.Module, module: str) -> list[Record]:
    records = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "experiment"):
                continue
            if not decorator.args or not isinstance(decorator.args[0], ast.Constant):
                continue
            keywords = {k.arg: k.value for k in decorator.keywords}
            claims = keywords.get("claims")
            literal = isinstance(claims, (ast.List, ast.Tuple)) and all(
                isinstance(e, ast.Call) and getattr(e.func, "id", None) == "Claim" for e in claims.elts)
            count = len(claims.elts) if literal else -1  # built by code: known once the module is imported
            doc = ast.get_docstring(node) or ""
            records.append(Record(name=decorator.args[0].value, module=module, summary=doc.splitlines()[0] if doc
                                  else "", claims=count, sweep="sweep" in keywords))
    return records


def scan(package: str | None = None) -> tuple[tuple[Record, ...], tuple[Broken, ...]]:
    """(every registration, every module that could not be parsed), sorted by name / module."""
    return _scan(package or PACKAGE)


@functools.cache
def _scan(package: str) -> tuple[tuple[Record, ...], tuple[Broken, ...]]:
    records: list[Record] = []
    broken: list[Broken] = []
    for module, path in module_files(package).items():
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (SyntaxError, OSError, UnicodeDecodeError) as e:
            broken.append(Broken(module=module, error=f"{type(e).__name__}: {e}"))
            continue
        found = _decorator_records(tree, module)
        if not found:
            broken.append(Broken(module=module, error="registers no experiment (@experiment(\"family/name\", ...))"))
        records.extend(found)
    return tuple(sorted(records, key=lambda r: r.name)), tuple(broken)


def records(package: str | None = None) -> dict[str, Record]:
    """{name: Record} of every registration in the sources."""
    return {r.name: r for r in scan(package)[0]}


def import_module(module: str):
    """Import one experiment module (its `@experiment` decorators register it)."""
    return importlib.import_module(module)


def check_imports(package: str | None = None) -> dict[str, str]:
    """{module: error} for every module that raises on import (each imported on its own; others unaffected)."""
    errors = {b.module: b.error for b in scan(package)[1]}
    for module in module_files(package):
        if module in errors:
            continue
        try:
            import_module(module)
        except Exception as e:  # any import-time failure is reported, never raised
            errors[module] = f"{type(e).__name__}: {e}"
    return errors
