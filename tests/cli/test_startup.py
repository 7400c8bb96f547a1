"""CLI start-up cost."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Libraries only some commands need: the registry's, and the PKCS#11 bindings.
HEAVY = ("sqlalchemy", "alembic", "psycopg", "pkcs11", "PyKCS11")


@pytest.mark.parametrize("args", [["--help"], ["key", "--help"], ["seal", "--help"],
                                  ["open", "--help"], ["ca", "issue", "--help"]])
def test_cli_start_up_loads_no_heavy_library(args: list[str]) -> None:
    """Help, and so the start-up of commands that never touch the registry, must not
    pay for SQLAlchemy (about 0.2 s of every CLI start-up, which counts against the
    card workflow's 0.5 s budget) nor load a PKCS#11 binding before a token is opened."""
    probe = ("import contextlib, io, sys; from tokenkeys.cli import main; "
             f"contextlib.redirect_stdout(io.StringIO()).__enter__(); main.main({args!r}); "
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}), "
             "file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stderr.strip() == "[]", done.stderr
