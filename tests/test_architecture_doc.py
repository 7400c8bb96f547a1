"""docs/architecture.md names functions, classes, modules and database triggers: each one
must still exist (a renamed function fails here, not in a reader's hands)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
SNAKE = re.compile(r"^_?[a-z][a-z0-9]*(_[a-z0-9]+)+$")
# Names the page uses that are not ours: libraries, tools, configuration.
FOREIGN = {"lint-imports", "acyclic_siblings", "pyproject.toml"}


def _index() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tokenkeys").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names.add(module)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(f"{module}.{node.name}")
            if isinstance(node, ast.ClassDef):
                names.update(f"{module}.{node.name}.{item.name}" for item in node.body
                             if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))
    return names


def _triggers() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "tokenkeys" / "registry" / "migrations" / "versions").glob("*.py"):
        found.update(re.findall(r"CREATE TRIGGER (\w+)", path.read_text(encoding="utf-8")))
    return found


def _named() -> list[str]:
    spans = re.findall(r"`([^`\s]+)`", PAGE.read_text(encoding="utf-8"))
    return sorted({s for s in spans if s not in FOREIGN and (DOTTED.match(s) or SNAKE.match(s))})


def test_every_name_on_the_architecture_page_exists() -> None:
    index, triggers = _index(), _triggers()
    missing = [name for name in _named()
               if name not in triggers
               and not any(q == name or q.endswith("." + name) for q in index)]
    assert not missing, f"docs/architecture.md names what the code no longer has: {missing}"
    assert len(_named()) > 40  # the page names the path and the rules, not nothing


def test_the_check_catches_a_renamed_function() -> None:
    index = _index()
    assert not any(q.endswith(".open_envelopes_renamed") for q in index)
    assert any(q.endswith("opening.open_envelopes") for q in index)
