"""The house's doors, read statically: every import in engine/, models/ and tui/ (also the
ones inside functions and under TYPE_CHECKING) is parsed, and

- engine/ and models/ never import tui or textual,
- models/ never imports engine,
- no two files import each other, directly or round a longer circle,
- no two modules share a file name (a name says one thing in the whole project).

A second check imports every headless module in one fresh interpreter and looks at what
got loaded, so a dynamic import (``importlib``) cannot sneak past the static scan.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import ROOT

ROOMS = ("engine", "models", "tui")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    return {module_name(p): p for room in ROOMS for p in sorted((ROOT / room).rglob("*.py"))}


def imports_of(path: Path, mod: str) -> list[str]:
    return imports_in(path.read_text(encoding="utf-8"), mod, is_package=path.name == "__init__.py")


def imports_in(source: str, mod: str, *, is_package: bool = False) -> list[str]:
    """Every module name an import in ``source`` can refer to (``from a import b`` gives a and a.b)."""
    tree = ast.parse(source)
    pkg = mod if is_package else mod.rpartition(".")[0]
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append(target)
            out += [f"{target}.{a.name}" for a in node.names]
    return out


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """File -> files it imports (package __init__ files are not nodes), and door violations."""
    files = project_files()
    graph: dict[str, set[str]] = {m: set() for m in files}
    doors: list[str] = []
    for mod, path in files.items():
        room = mod.split(".")[0]
        for imp in imports_of(path, mod):
            top = imp.split(".")[0]
            if room in ("engine", "models") and top in ("tui", "textual"):
                doors.append(f"{mod} imports {imp}")
            if room == "models" and top == "engine":
                doors.append(f"{mod} imports {imp}")
            cand = imp
            while cand and cand not in files:
                cand = cand.rpartition(".")[0]
            if cand and cand != mod and files[cand].name != "__init__.py":
                graph[mod].add(cand)
    return graph, sorted(set(doors))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one file (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_engine_and_models_never_import_the_ui_and_models_never_import_engine():
    _, doors = import_graph()
    assert doors == []


def test_no_import_circles_between_files():
    graph, _ = import_graph()
    assert circles(graph) == []


def test_the_scan_sees_imports_inside_functions_and_finds_circles():
    """The checker itself: a circle through a function-level import is found."""
    code = "def f():\n    from engine.kernel import build_engine\n    return build_engine\n"
    assert "engine.kernel" in imports_in(code, "engine.core.engine")
    assert "engine.core.events" in imports_in("from .events import Trade\n", "engine.core.engine")
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_two_modules_share_a_file_name():
    names = Counter(p.name for room in (*ROOMS, "tests") for p in (ROOT / room).rglob("*.py")
                    if p.name != "__init__.py")
    assert [n for n, c in names.items() if c > 1] == []


def test_headless_modules_load_no_ui_when_imported():
    code = (
        "import importlib, pkgutil, sys, engine, models\n"
        "for pkg in (engine, models):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui'))\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"headless modules load {r.stdout.strip() or r.stderr[-800:]}"


def test_the_models_load_without_the_engine():
    code = (
        "import importlib, pkgutil, sys, models\n"
        "for m in pkgutil.walk_packages(models.__path__, 'models.'): importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('engine', 'tui', 'textual'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-800:]
