"""The deterministic core stays pure: no I/O, no clock, no randomness, no reaching outwards.

The engine (``legato.engine``) and the language (``legato.dsl``) are read with ``ast``, never
imported for the check, so a forbidden import inside a function or behind ``TYPE_CHECKING``
is caught as well.  The engine is held to an allow-list of standard modules; the DSL to a
deny-list, with the two places that legitimately read files listed below with their reason.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(importlib.util.find_spec("legato").origin).parent  # type: ignore[arg-type, union-attr]

# Modules that do I/O, read the clock, draw randomness or talk to the world.
FORBIDDEN_MODULES = frozenset(
    {
        "asyncio",
        "concurrent",
        "ftplib",
        "glob",
        "http",
        "httpx",
        "io",
        "multiprocessing",
        "os",
        "pathlib",
        "random",
        "requests",
        "secrets",
        "select",
        "selectors",
        "shutil",
        "signal",
        "smtplib",
        "socket",
        "sqlalchemy",
        "sqlite3",
        "ssl",
        "subprocess",
        "tempfile",
        "threading",
        "time",
        "urllib.request",
        "uuid",
    }
)

# Calls that read the clock, whatever they are reached through.
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})
# Builtins that do I/O or depend on the process (`hash` of a str changes per process).
FORBIDDEN_BUILTINS = frozenset({"open", "input", "breakpoint", "hash", "id", "__import__"})

# The standard modules the engine may use: anything else needs a reason added here.
ENGINE_ALLOWED = frozenset(
    {
        "__future__",
        "collections",
        "contextlib",  # contextlib.suppress: control flow only
        "dataclasses",
        "datetime",
        "enum",
        "hashlib",  # callback tokens: a digest is pure computation
        "hmac",  # compare_digest for callback tokens
        "json",
        "operator",  # attrgetter for snapshots: pure functions on values
        "orjson",  # RunState.to_json: encodes the snapshot, a pure function on values
        "typing",
    }
)
# Parts of Legato the engine must never import: it is driven by them, not the other way round.
OUTWARD = (
    "legato.store",
    "legato.runtime",
    "legato.actions",
    "legato.connectors",
    "legato.api",
    "legato.cli",
    "legato.triggers",
    "legato.observability",
    "legato.settings",
    "legato.activity",
    "legato.net",
)

# DSL modules that read definition files for people (the CLI, `lint`); the engine never
# imports them (see test_the_engine_reaches_only_pure_modules).
DSL_EXCEPTIONS = {
    "legato.dsl.loader": {
        "os": "load_file() takes os.PathLike",
        "pathlib": "load_file() reads the definition file",
    },
    "legato.dsl.validate": {"os": "lint() accepts a path and checks os.path.isfile"},
}


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    line: int


@dataclass(frozen=True)
class Call:
    name: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(package: str) -> dict[str, Path]:
    root = SRC.parent.joinpath(*package.split("."))
    return {module_name(p): p for p in sorted(root.rglob("*.py"))}


ALL_MODULES = {**modules_under("legato")}
ENGINE = modules_under("legato.engine")
DSL = modules_under("legato.dsl")


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imports_of(name: str, path: Path) -> Iterator[Import]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield Import(base, node.lineno)
            for alias in node.names:  # `from legato import store` imports a module too
                yield Import(f"{base}.{alias.name}", node.lineno)


def calls_of(path: Path) -> Iterator[Call]:
    for node in ast.walk(parse(path)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in CLOCK_CALLS:
            yield Call(ast.unparse(func), node.lineno)
        elif isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
            yield Call(func.id, node.lineno)


def forbidden(module: str) -> str | None:
    for bad in FORBIDDEN_MODULES:
        if module == bad or module.startswith(bad + "."):
            return bad
    return None


def violations(name: str, path: Path, exceptions: dict[str, str] | None = None) -> list[str]:
    out = []
    for imp in imports_of(name, path):
        bad = forbidden(imp.module)
        if bad is not None and bad not in (exceptions or {}):
            out.append(f"{name}:{imp.line} imports {imp.module}")
    out += [f"{name}:{c.line} calls {c.name}()" for c in calls_of(path)]
    return out


# ---- the checks are sound -----------------------------------------------------------------------


def test_the_walk_finds_the_modules() -> None:
    assert {"legato.engine.machine", "legato.engine.events", "legato.engine.state"} <= set(ENGINE)
    assert {"legato.dsl.expr", "legato.dsl.model", "legato.dsl.formats.states"} <= set(DSL)


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "legato_bad.py"
    bad.write_text(
        "import time\n"
        "from os import path\n"
        "import urllib.request\n"
        "from datetime import datetime, date\n"
        "def f():\n"
        "    import random\n"
        "    open('x')\n"
        "    return datetime.now(), datetime.utcnow(), date.today(), hash('a')\n",
        encoding="utf-8",
    )
    found = violations("legato_bad", bad)
    assert [v.split(" ", 1)[1] for v in found] == [
        "imports time",
        "imports os",
        "imports os.path",
        "imports urllib.request",
        "imports random",
        "calls open()",
        "calls datetime.now()",
        "calls datetime.utcnow()",
        "calls date.today()",
        "calls hash()",
    ]
    ok = tmp_path / "legato_ok.py"
    ok.write_text(
        "import urllib.parse\nimport json\nfrom datetime import timedelta\n", encoding="utf-8"
    )
    assert violations("legato_ok", ok) == []


# ---- the engine ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENGINE))
def test_engine_module_is_pure(name: str) -> None:
    assert violations(name, ENGINE[name]) == []


@pytest.mark.parametrize("name", sorted(ENGINE))
def test_engine_module_imports_only_allowed_standard_modules_and_legato(name: str) -> None:
    unexpected = sorted(
        {
            f"{imp.module} (line {imp.line})"
            for imp in imports_of(name, ENGINE[name])
            if imp.module.split(".")[0] not in ENGINE_ALLOWED | {"legato"}
            # `from typing import Any` also yields `typing.Any`: the module is what counts
            and not any(imp.module.startswith(f"{m}.") for m in ENGINE_ALLOWED)
        }
    )
    assert unexpected == [], f"{name} imports {unexpected}; add a reason to ENGINE_ALLOWED"


@pytest.mark.parametrize("name", sorted(ENGINE))
def test_engine_module_does_not_import_outwards(name: str) -> None:
    outward = sorted(
        imp.module
        for imp in imports_of(name, ENGINE[name])
        if any(imp.module == o or imp.module.startswith(o + ".") for o in OUTWARD)
    )
    assert outward == []


def legato_closure(roots: dict[str, Path]) -> dict[str, Path]:
    """Every Legato module the roots import, directly or not (with their packages)."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in ALL_MODULES:
            continue
        seen[name] = ALL_MODULES[name]
        parts = name.split(".")
        # parent packages run too; the root package (the public API, which re-exports the
        # runtime) is left out: it is imported by Python, not used by the engine
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]
        todo += [
            imp.module
            for imp in imports_of(name, ALL_MODULES[name])
            if imp.module.startswith("legato")
        ]
    return seen


def test_the_engine_reaches_only_pure_modules() -> None:
    closure = legato_closure(ENGINE)
    assert "legato.dsl.expr" in closure  # the walk does follow imports
    problems = [v for name, path in sorted(closure.items()) for v in violations(name, path)]
    assert problems == []
    outward = sorted(n for n in closure if any(n == o or n.startswith(o + ".") for o in OUTWARD))
    assert outward == []
    assert not set(DSL_EXCEPTIONS) & set(closure)


# ---- the language -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DSL))
def test_dsl_module_is_pure(name: str) -> None:
    assert violations(name, DSL[name], DSL_EXCEPTIONS.get(name)) == []


@pytest.mark.parametrize("name", sorted(DSL_EXCEPTIONS))
def test_each_dsl_exception_is_still_needed(name: str) -> None:
    used = {forbidden(imp.module) for imp in imports_of(name, DSL[name])}
    assert set(DSL_EXCEPTIONS[name]) <= used, f"drop the unused exceptions of {name}"


@pytest.mark.parametrize("name", sorted(DSL))
def test_dsl_module_does_not_import_outwards(name: str) -> None:
    outward = sorted(
        imp.module
        for imp in imports_of(name, DSL[name])
        if any(imp.module == o or imp.module.startswith(o + ".") for o in OUTWARD)
        or imp.module.startswith("legato.engine")
    )
    assert outward == []
