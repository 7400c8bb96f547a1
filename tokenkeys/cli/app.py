"""The CLI's application object and terminal-safe output: all that start-up needs.

Kept apart from cli.context (drivers, services) so that `tokenkeys --help` loads neither.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tokenkeys.config import Config
from tokenkeys.i18n import N_, _

if TYPE_CHECKING:
    from rich.console import Console

FILE_PATH = click.Path(dir_okay=False, path_type=Path)  # a file, never a directory
# The words tables show for a state (the JSON keeps them in English): word() says them.
WORDS = (N_("valid"), N_("expiring"), N_("expires soon"), N_("expired"),
         N_("awaiting certificate"), N_("certified"), N_("open"), N_("closed"),
         N_("opened"), N_("skipped"), N_("failed"), N_("yes"), N_("no"), N_("none"))


def word(value: object) -> str:
    """A state word of a table in the user's language (program-made values only)."""
    return _(value) if isinstance(value, str) and value in WORDS else str(value)
# Control, format (bidi overrides, zero-width) and line/paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


def visible(text: str) -> str:
    """`text` with every control or invisible formatting character shown as an escape.

    ESC sequences, newlines (fake table rows) and bidi overrides in names from a
    bid or a certificate reach the terminal as `\\x1b`, `\\n`, `\\u202e`.
    """
    if text.isprintable():
        return text
    return "".join(ch if unicodedata.category(ch) not in _HIDDEN else _escape(ch)
                   for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in "\n\r\t":
        return repr(ch)[1:-1]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@dataclass
class App:
    json: bool = False
    debug: bool = False
    config: Config = field(default_factory=Config)
    allow_final_try: bool = False  # --allow-final-try (see pin_options)
    wait_card: float | None = None  # --wait-card (see wait_card_option)

    # rich's consoles are built on first use: `--help` and JSON output never pay for them.
    @cached_property
    def out(self) -> Console:
        from rich.console import Console

        # Not a terminal: wide enough that tables of URIs and serials stay on one line.
        # No highlighting and no :emoji: codes: text from bids must show as it is.
        return Console(highlight=False, emoji=False, soft_wrap=True,
                       width=None if sys.stdout.isatty() else 200)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, emoji=False)

    def emit(self, document: dict[str, Any], human: Callable[[], None]) -> None:
        """One JSON document on stdout with --json, else the human rendering."""
        if self.json:
            click.echo(json.dumps({"ok": True, **document}, indent=2, default=str))
        else:
            human()

    def table(
        self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        from rich.table import Table
        from rich.text import Text

        # Titles and column names are English in the code (N_), shown translated.
        table = Table(title=_(title) if title else None, show_lines=False)
        for col in columns:
            table.add_column(_(col), overflow="fold")
        for row in rows:
            # Text cells are never parsed as markup; control characters are made visible.
            table.add_row(*(Text(visible("" if v is None else str(v))) for v in row))
        self.out.print(table)

    def say(self, text: str) -> None:
        """One line: untrusted parts (names, issuers, errors) are shown, never obeyed."""
        from rich.text import Text

        self.out.print(Text(visible(text)))

    def note(self, message: str) -> None:
        """Something the user should know that is not an error, on stderr."""
        click.echo(_("tokenkeys: note: {message}").format(message=visible(message)), err=True)

    def warn(self, message: str) -> None:
        """A warning on stderr; names in it may come from a file: shown, never obeyed."""
        click.echo(_("warning: {message}").format(message=visible(message)), err=True)

    def fail(self, message: str) -> None:
        """An error line on stderr, in the same form as main's error report."""
        click.echo(_("tokenkeys: error: {message}").format(message=visible(message)), err=True)

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and not self.json


pass_app = click.make_pass_decorator(App)
