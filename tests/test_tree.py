"""The tree keeps its shape (no services): the core is pure, and arrows only point down.

- ``engine.core`` loads in a fresh interpreter without ray, redis or asyncio (nothing but the
  standard library, msgpack, and the engine's own leaf modules ``outcomes`` and ``errors``);
- neither ``engine`` nor ``api`` has an import cycle: the import graph, built with ``ast`` from
  every module (imports inside functions included), has no strongly connected component of more
  than one module.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted(
    f"engine.core.{p.stem}" for p in (ROOT / "engine" / "core").glob("*.py") if p.stem != "__init__"
)
ALLOWED_THIRD_PARTY = {"msgpack", "cython_runtime"}  # msgpack's C extension brings the latter
ENGINE_LEAVES = {"engine", "engine.outcomes", "engine.errors", "engine.core"}


def loaded_after(modules: list[str]) -> set[str]:
    """Top-level modules a fresh interpreter of this venv loads to import ``modules``."""
    code = (
        "import sys, json; before = set(sys.modules); "
        + "; ".join(f"import {m}" for m in modules)
        + "; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


def test_the_core_loads_no_ray_redis_or_asyncio():
    loaded = loaded_after(CORE)
    tops = {m.split(".")[0] for m in loaded}
    assert not tops & {"ray", "redis", "asyncio", "fastapi", "pydantic", "httpx"}, tops


def test_the_core_loads_only_the_standard_library_msgpack_and_engine_leaves():
    loaded = loaded_after(CORE)
    foreign = {
        m
        for m in loaded
        if m.split(".")[0] not in sys.stdlib_module_names
        and m.split(".")[0] not in ALLOWED_THIRD_PARTY
        and not (m in ENGINE_LEAVES or m.startswith("engine.core."))
        and not m.startswith("_")
    }
    assert foreign == set(), foreign


def modules_of(package: str) -> dict[str, Path]:
    base = ROOT / package
    out = {}
    for path in base.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` imports, anywhere in its body."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(package: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    mods = modules_of(package)
    known = set(mods)
    graph = {m: imports_of(m, p, known) for m, p in mods.items()}
    # a package's __init__ importing its own modules is not an arrow up from them
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", ["engine", "api"])
def test_no_import_cycle(package):
    assert cycles(package) == []


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NAMED = re.compile(r"\b((?:engine|api|tests|benchmarks|loadtest)/[A-Za-z0-9_./]*[A-Za-z0-9_])")


def named_paths(text: str) -> set[str]:
    """``engine/...``-style paths a document names (a bare module after a folder counts as its
    ``.py`` or its package)."""
    return {m.rstrip(".") for m in NAMED.findall(text)}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_path_a_document_names_exists(document):
    missing = []
    for name in sorted(named_paths(document.read_text())):
        path = ROOT / name
        if not (path.exists() or path.with_suffix(".py").exists()):
            missing.append(name)
    assert missing == []


def test_a_built_wheel_ships_every_module_and_data_file(tmp_path):
    """Packaging follows the tree: built offline (no build isolation, no network), the wheel
    holds every module of engine/, api/ and loadtest/ and the pages the API serves."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("slotengine-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    wanted = {
        str(p.relative_to(ROOT))
        for package in ("engine", "api", "loadtest")
        for p in (ROOT / package).rglob("*")
        if p.suffix in (".py", ".html") and "__pycache__" not in p.parts
    }
    assert sorted(wanted - shipped) == []
