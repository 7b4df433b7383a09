"""The package's layout holds: every module imports on its own (in a fresh interpreter, so no
module works only because another imported something first), and no two modules import each
other at module level, directly or through others (imports inside functions, the lazy ones that
keep the command line light, are not edges)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from paramlib import paths

PACKAGE = paths.PACKAGE_DIR
# __main__ runs the command line when imported.
SKIP = {"paramlib.__main__"}


def module_names(package: Path) -> list[str]:
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def module_path(name: str, root: Path) -> Path:
    base = root.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def top_level_imports(name: str, root: Path, known: set[str]) -> Iterator[str]:
    """The package's modules `name` imports when it is imported (module-level statements,
    including those under if/try; not inside functions or classes, not TYPE_CHECKING)."""
    tree = ast.parse(module_path(name, root).read_text())
    package = name if module_path(name, root).name == "__init__.py" else name.rpartition(".")[0]
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.If | ast.Try):
            stack.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                stack.extend(handler.body)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield f"{base}.{alias.name}"
                elif base in known:
                    yield base


def import_cycles(root: Path, package: str) -> list[list[str]]:
    """Strongly connected groups of more than one module in the module-level import graph
    (Tarjan), each sorted; a module importing itself counts too."""
    known = set(module_names(root / package))
    graph = {m: sorted(set(top_level_imports(m, root, known)) - {m}) for m in known}
    selfish = [[m] for m in known if m in set(top_level_imports(m, root, known))]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(known):
        if node not in index:
            visit(node)
    return sorted(cycles + selfish)


def test_no_module_level_import_cycles() -> None:
    assert import_cycles(PACKAGE.parent, "paramlib") == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("try:\n    from .. import c\nexcept ImportError:\n    pass\n")
    (pkg / "c.py").write_text("def f():\n    import pkg.d\n\nimport pkg.a\n")
    (pkg / "d.py").write_text("import pkg.c\n")  # c imports d only inside a function
    assert import_cycles(tmp_path, "pkg") == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    names = [m for m in module_names(PACKAGE) if m not in SKIP]
    assert "paramlib.wrf.driver" in names and "paramlib.train.kinds.bilstm" in names

    def attempt(name: str) -> tuple[str, int, str]:
        done = subprocess.run(
            [sys.executable, "-c", f"import {name}"],
            capture_output=True,
            text=True,
            cwd=PACKAGE.parent,
            timeout=300,
        )
        return name, done.returncode, done.stderr.strip().splitlines()[-1:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [(n, err) for n, rc, err in pool.map(attempt, names) if rc != 0]
    if failed and all("_paramlib_" in " ".join(err) for _, err in failed):
        pytest.skip(f"the compiled bindings are not built: {failed[0]}")
    assert failed == []
