"""The sharing docs stay true: their command lines parse, their quoted messages exist."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest

from tokenkeys.cli.main import cli
from tokenkeys.errors import PinMissing

ROOT = Path(__file__).resolve().parents[2]
SOURCES = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tokenkeys").rglob("*.py"))


def _command_lines(text: str) -> list[str]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines += [line.split("  #")[0].strip() for line in block.splitlines()
                  if line.startswith("tokenkeys ")]
    return lines


def _parse(args: list[str]) -> None:
    """Resolve the command path and parse its options, as click would, without running."""
    with warnings.catch_warnings():  # protected_args: deprecated in click 8.2, still needed
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = cli.make_context("tokenkeys", list(args))
        command: click.Command = cli
        rest = ctx.protected_args + ctx.args
        while isinstance(command, click.Group) and rest:
            name, sub, rest = command.resolve_command(ctx, rest)
            assert sub is not None, name
            ctx = sub.make_context(name or "", rest, parent=ctx)
            command, rest = sub, ctx.protected_args + ctx.args
    assert not rest, rest


@pytest.mark.parametrize("doc", ["sharing.md", "agent.md"])
def test_share_commands_in_docs_parse(doc: str) -> None:
    lines = _command_lines((ROOT / "docs" / doc).read_text(encoding="utf-8"))
    shares = [line for line in lines if "share " in line or "--shareable" in line]
    assert shares, doc
    for line in shares:
        _parse(shlex.split(line.replace("\\\n", " "))[1:])


def _normalised_sources() -> str:
    """Source text with whitespace collapsed and adjacent string literals joined."""
    text = " ".join(SOURCES.split())
    # Messages composed at run time, rendered as the user sees them.
    composed = [str(PinMissing("target token user PIN (TOKENKEYS_TO_PIN)"))]
    return re.sub(r"\" f?\"", "", text) + " ".join(composed)


def test_share_messages_in_errors_md_exist() -> None:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    section = text[text.index("## Sharing a key"):]
    quoted = re.findall(r"\*\*`(.+?)`\*\*", section, re.S)
    assert len(quoted) > 30
    code = _normalised_sources()
    for message in quoted:
        # Placeholders (…, X, N, numbers), punctuation and MechanismUnsupported's own
        # wording split a message into clauses.
        for clause in re.split(r"[…:;,.()]|\bN/5\b|\b[XN]\b|\d+|is not supported by this device",
                               " ".join(message.split())):
            clause = clause.strip(" '")
            if len(clause) > 10:
                assert clause in code, f"{clause!r} (docs/errors.md) is not in the code"
