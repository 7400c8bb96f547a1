"""CLI start-up cost."""

from __future__ import annotations

import subprocess
import sys


def test_cli_start_up_loads_no_registry_library() -> None:
    """Commands that never touch the registry must not pay for SQLAlchemy (about 0.2 s
    of every CLI start-up, which counts against the card workflow's 0.5 s budget)."""
    probe = ("import sys; from tokenkeys.cli import main; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('sqlalchemy', 'alembic', 'psycopg')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
