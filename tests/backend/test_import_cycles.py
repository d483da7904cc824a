"""No import cycles among backend modules, counting lazy and typing-only imports too.

A cycle that only a function-level or `TYPE_CHECKING` import closes still ties two modules
into one: neither can be read, tested or moved without the other (issue 17 found app <->
rollout api and store <-> labels). The graph is read from the source (AST), so the test also
sees imports that never run in the suite.
"""

from __future__ import annotations

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[2] / "backend"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(BACKEND.rglob("*.py")):
        parts = path.relative_to(BACKEND.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(
    node: ast.Import | ast.ImportFrom, here: str, is_package: bool, modules: dict[str, Path]
) -> list[str]:
    """The modules an import statement names: `from p import m` names p.m when that is a module."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parent = here.split(".")[: len(here.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join([*parent, *([node.module] if node.module else [])])
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _graph() -> dict[str, set[str]]:
    """Module -> the backend modules it imports anywhere (the package `backend` itself left out:
    its `__init__` only re-exports)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _imported(node, name, path.name == "__init__.py", modules):
                if target in modules and target not in (name, "backend"):
                    graph[name].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_backend_modules_import_each_other_without_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_sees_a_lazy_cycle():
    # the graph a function-level import closes (as store -> labels -> store did)
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_holds_lazy_and_typing_only_imports():
    graph = _graph()
    # backend.server.app imports the rollout routes inside create_app, and the store's sqlite
    # dialect reads label types inside its methods: both edges must be in the graph the test checks
    assert "backend.rollout.api" in graph["backend.server.app"]
    assert "backend.analysis.labels" in graph["backend.store.sqlite"]
