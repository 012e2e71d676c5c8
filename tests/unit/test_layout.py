"""The code layout: imports point down the wings, and no import loop spans two folders.

Every import counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "mappers")

# wing -> wings it must never import
FORBIDDEN = {
    "mappers": {"worker"},
    "worker.domain": {
        "worker.adapters",
        "worker.flows",
        "worker.entrypoints",
        "worker.sim",
        "worker.bench",
        "worker.shared",
    },
    "worker.adapters": {"worker.flows", "worker.entrypoints", "worker.sim", "worker.bench"},
    "worker.shared": {"worker.flows", "worker.entrypoints", "worker.sim", "worker.bench"},
    "worker.flows": {"worker.entrypoints", "worker.sim", "worker.bench"},
    "worker.sim": {"worker.flows", "worker.entrypoints", "worker.bench", "worker.adapters.store"},
}
# The CLI is imported by nothing outside entrypoints (bench and demo sit on top of it).
CLI_MODULES = {"worker.entrypoints.cli", "worker.entrypoints.commands"}


def modules() -> dict[str, Path]:
    """Every module of the two packages, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = modules()


def imported(path: Path, name: str) -> Iterator[str]:
    """The project modules one file imports (at any depth of its code)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [f"{base}.{alias.name}" for alias in node.names]
            targets = [n for n in names if n in MODULES] or [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target not in PACKAGES:
                yield target


GRAPH = {name: set(imported(path, name)) for name, path in MODULES.items()}


def wing(name: str) -> str:
    """The wing a module belongs to: a folder, or `worker.shared` for worker's own modules."""
    parts = name.split(".")
    if parts[0] == "mappers":
        return "mappers"
    if len(parts) == 1 or not (ROOT / "worker" / parts[1]).is_dir():
        return "worker.shared"
    if parts[1:3] == ["adapters", "store"]:
        return "worker.adapters.store"
    return ".".join(parts[:2])


def folder(name: str) -> str:
    """The folder a module's file sits in."""
    path = MODULES[name]
    return str(path.parent.relative_to(ROOT))


def within(target_wing: str, forbidden: str) -> bool:
    """Whether a wing is the forbidden one or inside it."""
    return target_wing == forbidden or target_wing.startswith(forbidden + ".")


def test_the_layout_has_its_wings() -> None:
    """The folders the README's code map names exist and hold code."""
    for folder_name in ("domain", "flows", "adapters/store", "adapters/transports", "entrypoints"):
        assert list((ROOT / "worker" / folder_name).glob("*.py")), folder_name
    assert "worker.entrypoints.cli" in MODULES
    assert "worker.bench.run" in MODULES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name: str) -> None:
    """No module imports a wing above its own."""
    own = wing(name)
    bad = sorted(
        target
        for target in GRAPH[name]
        for rule, forbidden in FORBIDDEN.items()
        if within(own, rule)
        and any(within(wing(target), f) or within(target, f) for f in forbidden)
    )
    assert bad == [], f"{name} ({own}) imports {bad}"


def test_nothing_outside_entrypoints_imports_the_cli() -> None:
    """The command line is the top: the benchmark and the flows never import it."""
    bad = sorted(
        (name, target)
        for name, targets in GRAPH.items()
        for target in targets & CLI_MODULES
        if not name.startswith("worker.entrypoints.")
    )
    assert bad == []


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of the import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_loop_spans_two_folders() -> None:
    """A loop of imports stays inside one folder (two modules of one idea), never across."""
    loops = [c for c in strongly_connected(GRAPH) if len({folder(m) for m in c}) > 1]
    assert loops == []


def test_the_loop_finder_finds_a_loop() -> None:
    """The check above can fail: a made-up loop across two folders is found."""
    graph = {"a.x": {"b.y"}, "b.y": {"a.x"}, "a.z": set()}
    assert {"a.x", "b.y"} in strongly_connected(graph)
