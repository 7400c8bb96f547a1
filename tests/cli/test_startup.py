"""CLI start-up cost: what each command line imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tokenkeys.cli import main

# Libraries only some commands need: the registry's, the PKCS#11 bindings, CMS
# structures and the assistant's server stack.
HEAVY = ("sqlalchemy", "alembic", "psycopg", "pkcs11", "PyKCS11", "starlette", "uvicorn")
CMS = ("asn1crypto.cms",)
# What `tokenkeys --help` must not load at all: it lists commands from main.COMMANDS.
NOT_FOR_HELP = HEAVY + CMS + ("cryptography", "asn1crypto", "rich", "tokenkeys.drivers",
                        "tokenkeys.services", "tokenkeys.registry", "tokenkeys.envelope")


def loaded_after(args: list[str], prefixes: tuple[str, ...]) -> list[str]:
    probe = ("import contextlib, io, sys; from tokenkeys.cli import main; "
             f"contextlib.redirect_stdout(io.StringIO()).__enter__(); main.main({args!r}); "
             f"print(sorted(m for m in sys.modules if m.startswith({prefixes!r}) "
             f"and (m in {prefixes!r} or any(m.startswith(p + '.') for p in {prefixes!r}))), "
             "file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    return list(ast.literal_eval(done.stderr.strip()))


def test_help_loads_no_command_module() -> None:
    """`tokenkeys --help` imports click and the configuration, nothing of the commands:
    on the previous main it loaded every command module, the drivers and the
    certificate code (2.2-2.7x the floor of click + cryptography.x509 + rich)."""
    assert loaded_after(["--help"], NOT_FOR_HELP) == []


@pytest.mark.parametrize("args", [["seal", "--help"], ["open", "--help"],
                                  ["share", "--help"]])
def test_command_start_up_loads_no_heavy_library(args: list[str]) -> None:
    """A command's help, and so the start-up of commands that never touch the registry,
    must not pay for SQLAlchemy (about 0.2 s) nor load a PKCS#11 binding before a
    token is opened, nor the assistant's server."""
    assert loaded_after(args, HEAVY) == []


@pytest.mark.parametrize("args", [["key", "--help"], ["ca", "issue", "--help"],
                                  ["token", "--help"], ["audit", "--help"],
                                  ["consultation", "--help"], ["doctor", "--help"]])
def test_commands_without_envelopes_load_no_cms(args: list[str]) -> None:
    """Key, CA, token and registry commands never parse an envelope: no CMS structures
    (key commands loaded them through the keyUsage rule on the previous main)."""
    assert loaded_after(args, HEAVY + CMS) == []


def test_each_listed_summary_is_the_commands_own() -> None:
    """The listing of `--help` comes from main.COMMANDS without importing the commands:
    each summary there must be what the command itself says."""
    for name, lazy in main.COMMANDS.items():
        command = lazy.load()
        assert command.name == name
        assert lazy.summary == command.get_short_help_str(limit=10_000), name


def test_lazy_listing_is_the_eager_one() -> None:
    """`tokenkeys --help` shows the same text as when every command is loaded."""
    script = ("import contextlib, io; from tokenkeys.cli import main\n"
              "def shown():\n"
              "    out = io.StringIO()\n"
              "    with contextlib.redirect_stdout(out):\n"
              "        main.main(['--help'])\n"
              "    return out.getvalue()\n"
              "lazy = shown()\n"
              "for name in main.COMMANDS: main.cli.get_command(None, name)\n"
              "assert set(main.cli.commands) == set(main.COMMANDS)\n"
              "print(lazy == shown(), 'Commands:' in lazy)\n")
    for columns in ("50", "80", "200"):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              check=True, env={**os.environ, "COLUMNS": columns})
        assert done.stdout.split() == ["True", "True"], (columns, done.stderr)
