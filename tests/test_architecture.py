"""The layering: no import cycles among gentrain's modules, and nothing imports a CLI module.

Every ``gentrain.*`` import counts, the late ones inside functions too: a late import
hides a circle from Python, not from a reader.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import gentrain

SRC = Path(gentrain.__file__).resolve().parent
PYPROJECT = SRC.parents[1] / "pyproject.toml"


def module_name(path: Path) -> str:
    parts = ["gentrain", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """The gentrain modules ``path`` imports (``from pkg import sub`` names the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gentrain"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gentrain"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found & set(MODULES)


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def cli_modules() -> set[str]:
    """The modules behind pyproject's console scripts (``gentrain = "gentrain.cli.train:main"``)."""
    text = PYPROJECT.read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r'=\s*"(gentrain[\w.]*):\w+"', scripts))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_nothing_imports_a_cli_module():
    cli = cli_modules()
    assert cli >= {
        "gentrain.cli.train",
        "gentrain.cli.evaluate",
        "gentrain.cli.sample",
        "gentrain.cli.compare",
    }
    offenders = {
        f"{importer} imports {target}"
        for importer, targets in GRAPH.items()
        for target in targets & cli
        if importer != "gentrain.__main__"  # `python -m gentrain` is the CLI itself
    }
    assert not offenders, sorted(offenders)
