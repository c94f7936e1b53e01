"""The layers `make lint` enforces with import-linter (pyproject ``[tool.importlinter]``), plus what it cannot see:
no import cycle between any two modules, and bundle code (``task.py``, loaded by path) imports only the
bundle contract :mod:`incisive.federated.task`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp
import pytest

import incisive.federated.bundle as bundle_mod

BUNDLE_ALLOWED = {"__future__", "typing", "collections", "dataclasses", "math", "numpy", "torch", "monai",
                  "incisive.federated.task"}


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def test_no_import_cycles_anywhere() -> None:
    graph = grimp.build_graph("incisive", cache_dir=None)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b"]]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("task", sorted(Path(bundle_mod.SHIPPED).glob("*/task.py")), ids=lambda p: p.parent.name)
def test_bundle_code_imports_only_the_task_contract(task: Path) -> None:
    def allowed(name: str) -> bool:
        return any(name == a or name.startswith(a + ".") for a in BUNDLE_ALLOWED) or (
            name.split(".")[0] in sys.stdlib_module_names and name.split(".")[0] != "incisive")

    assert sorted(n for n in _imports(task) if not allowed(n)) == []
    assert "incisive.federated.task" in _imports(task)
