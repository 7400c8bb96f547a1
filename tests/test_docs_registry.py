"""Docs of the registry work: every `tokenkeys` example parses, every quoted message exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from tokenkeys.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["cli.md", "registry.md", "security-officer.md"]


def _examples() -> list[str]:
    lines = []
    for name in DOCS:
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("tokenkeys ") and not re.search(r"[\[…|]", line):
                    lines.append(line)
    return lines


def _parse(argv: list[str]) -> None:
    """Parse like the real CLI, down to the leaf command, without running anything."""
    ctx = cli.make_context("tokenkeys", list(argv), resilient_parsing=False)
    command: click.Command = cli
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, ctx.protected_args + ctx.args)
        assert sub is not None, name
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub


@pytest.mark.filterwarnings("ignore:'protected_args' is deprecated")
@pytest.mark.parametrize("line", _examples())
def test_doc_examples_parse(line: str) -> None:
    _parse(shlex.split(line)[1:])


def test_examples_found() -> None:
    assert len(_examples()) > 20


def test_registry_error_messages_exist() -> None:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    section = text[text.index("### Registry policy"):]
    source = "\n".join(p.read_text(encoding="utf-8")
                       for p in (ROOT / "tokenkeys").rglob("*.py"))
    flat = re.sub(r"\"\s*\n\s*f?\"", "", source)  # join implicitly concatenated strings
    quoted = re.findall(r"\*\*`(.+?)`\*\*", section, flags=re.S)
    assert len(quoted) > 25
    for message in quoted:
        for fragment in re.split(r"…|'[^']*'|\b[A-Z][A-Z0-9_]{0,5}\b", message):
            fragment = " ".join(fragment.split()).strip(" .,:()")
            if len(fragment) >= 8:
                assert fragment in " ".join(flat.split()), (fragment, message)
