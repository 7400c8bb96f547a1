"""The package map: no two parts of tokenkeys import each other, and neither the
registry nor the envelope layer loads a driver.

A part is a subpackage (cli, services, registry, envelope, drivers) or a
top-level module (keyalg, errors...). Imports are read from the source with
`ast`, at module level and inside functions (including TYPE_CHECKING blocks):
a lazy import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import tokenkeys

PACKAGE = Path(tokenkeys.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:  # run by Alembic only
            continue
        parts = ["tokenkeys", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path) -> Iterator[str]:
    """Every tokenkeys module or name `module` imports, as a dotted name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from (f"{base}.{a.name}" for a in node.names)


def _part(name: str) -> str | None:
    """tokenkeys.services.ca -> services; tokenkeys.keyalg.MAX_DAYS -> keyalg."""
    parts = name.split(".")
    return parts[1] if parts[0] == "tokenkeys" and len(parts) > 1 else None


def part_graph() -> dict[str, dict[str, set[str]]]:
    """part -> imported part -> the modules of the first that import the second."""
    modules = _modules()
    parts = {p for p in map(_part, modules) if p is not None}
    graph: dict[str, dict[str, set[str]]] = {}
    for module, path in modules.items():
        source = _part(module)
        if source is None:
            continue
        for name in _imported(module, path):
            target = _part(name)
            if target in parts and target != source:
                graph.setdefault(source, {}).setdefault(target, set()).add(module)
    return graph


def _reaches(graph: dict[str, dict[str, set[str]]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, {}))
    return False


def test_no_part_imports_one_that_imports_it_back() -> None:
    graph = part_graph()
    loops = sorted(f"{a} -> {b} ({', '.join(sorted(who))}) -> ... -> {a}"
                   for a, targets in graph.items() for b, who in targets.items()
                   if _reaches(graph, b, a))
    assert loops == []


def test_registry_and_envelope_import_no_driver() -> None:
    """The envelope layer knows only its Identity/Recipient protocols and the registry
    stores facts: neither loads a driver, directly or through another part."""
    graph = part_graph()
    assert [p for p in ("registry", "envelope") if _reaches(graph, p, "drivers")] == []
    probe = ("import sys, tokenkeys.registry, tokenkeys.envelope; "
             "print(sorted(m for m in sys.modules if m.startswith('tokenkeys.drivers')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
