"""The package layout keeps its promises: small modules, no import circles in the
planning package or between the training methods and their registry."""

from __future__ import annotations

import ast
from pathlib import Path

import geodml

SRC = Path(geodml.__file__).parent
MAX_LINES = 600


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's geodml imports, at any depth (function bodies too)."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        graph[name] = out & modules.keys()
    return graph


def _cycle(graph: dict[str, set[str]], within: tuple[str, ...]) -> list[str] | None:
    nodes = {m for m in graph if m.startswith(within)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m] & nodes):
            if state.get(n) == 1:
                return [*stack[stack.index(n):], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(nodes):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_planning_cli_and_readers_modules_are_under_600_lines():
    sizes = {}
    for folder in ("planning", "cli", "data/readers"):
        for path in (SRC / folder).glob("*.py"):
            sizes[str(path.relative_to(SRC))] = len(path.read_text().splitlines())
    assert len(sizes) > 20
    assert not {k: n for k, n in sizes.items() if n > MAX_LINES}


def test_no_import_circles_in_planning_or_algorithms():
    graph = _imports()
    assert "geodml.planning.regions" in graph["geodml.planning.deployment"]
    for package in ("geodml.planning", "geodml.algorithms"):
        assert _cycle(graph, (package,)) is None, _cycle(graph, (package,))


def test_no_module_is_over_600_lines():
    """Generated code aside (geodml/wire/_generated)."""
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines())
             for p in SRC.rglob("*.py") if "_generated" not in p.parts}
    assert len(sizes) > 100 and "federation/federation.py" in sizes
    assert not {k: n for k, n in sizes.items() if n > MAX_LINES}


def test_site_and_federation_never_import_each_other():
    """The protocol contract (``geodml.wire``) sits between them: a site and a
    coordinator are peers that share it, never each other's code."""
    graph = _imports()
    crossing = {(m, n) for m, out in graph.items() for n in out
                if (m.startswith("geodml.site") and n.startswith("geodml.federation"))
                or (m.startswith("geodml.federation") and n.startswith("geodml.site"))}
    assert "geodml.wire.protocol" in graph["geodml.site.server"]
    assert "geodml.wire.transport" in graph["geodml.site.launcher"]
    assert not crossing, sorted(crossing)


def test_wire_imports_neither_site_nor_federation():
    graph = _imports()
    wrong = {(m, n) for m, out in graph.items() if m.startswith("geodml.wire")
             for n in out if n.startswith(("geodml.site", "geodml.federation"))}
    assert not wrong, sorted(wrong)
