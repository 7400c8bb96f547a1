"""Shared CLI plumbing: global options, JSON/table output, PIN options, token opening."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tokenkeys.config import Config
from tokenkeys.drivers import Token, open_token, token_uri
from tokenkeys.errors import UsageError
from tokenkeys.services import login as login_service
from tokenkeys.services import prepare_output
from tokenkeys.types import Algorithm, PinSource

F = TypeVar("F", bound=Callable[..., Any])
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
    # Not a terminal: wide enough that tables of URIs and serials stay on one line.
    # No highlighting and no :emoji: codes: text from bids must show as it is.
    out: Console = field(default_factory=lambda: Console(
        highlight=False, emoji=False, soft_wrap=True,
        width=None if sys.stdout.isatty() else 200))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False,
                                                         emoji=False))
    allow_final_try: bool = False  # --allow-final-try (see pin_options)
    wait_card: float | None = None  # --wait-card (see wait_card_option)

    def emit(self, document: dict[str, Any], human: Callable[[], None]) -> None:
        """One JSON document on stdout with --json, else the human rendering."""
        if self.json:
            click.echo(json.dumps({"ok": True, **document}, indent=2, default=str))
        else:
            human()

    def table(
        self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        table = Table(title=title, show_lines=False)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            # Text cells are never parsed as markup; control characters are made visible.
            table.add_row(*(Text(visible("" if v is None else str(v))) for v in row))
        self.out.print(table)

    def say(self, text: str) -> None:
        """One line: untrusted parts (names, issuers, errors) are shown, never obeyed."""
        self.out.print(Text(visible(text)))

    def note(self, message: str) -> None:
        """Something the user should know that is not an error, on stderr."""
        click.echo(f"tokenkeys: note: {visible(message)}", err=True)

    def warn(self, message: str) -> None:
        """A warning on stderr; names in it may come from a file: shown, never obeyed."""
        click.echo(f"warning: {visible(message)}", err=True)

    def fail(self, message: str) -> None:
        """An error line on stderr, in the same form as main's error report."""
        click.echo(f"tokenkeys: error: {visible(message)}", err=True)

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and not self.json


pass_app = click.make_pass_decorator(App)


def _allow_final_try(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    app = ctx.find_object(App)
    if app is not None:
        app.allow_final_try = value


def pin_options(func: F) -> F:
    """--pin-file, --pinpad and --allow-final-try. The PIN never goes on the command line."""
    func = click.option(
        "--allow-final-try", is_flag=True, expose_value=False, callback=_allow_final_try,
        help="Send a PIN from TOKENKEYS_PIN or --pin-file even at the card's final try.",
    )(func)
    func = click.option(
        "--pinpad", is_flag=True, help="Enter the PIN on the reader's PIN pad."
    )(func)
    func = click.option(
        "--pin-file",
        type=FILE_PATH,
        help="Read the user PIN from this file (first line).",
    )(func)
    return func


def user_pin(app: App, pin_file: Path | None, pinpad: bool) -> PinSource:
    return PinSource(file=pin_file, pinpad=pinpad, interactive=app.interactive)


WAIT_CARD_DEFAULT = 60.0


def _wait_card(ctx: click.Context, _param: click.Parameter, value: float | None) -> None:
    app = ctx.find_object(App)
    if app is not None and value is not None:
        if value < 0:
            raise click.BadParameter("must be 0 or more seconds", param_hint="--wait-card")
        app.wait_card = value


def wait_card_option(func: F) -> F:
    """--wait-card [SECONDS]: wait for the card to be inserted (default 60 s when given)."""
    return click.option(
        "--wait-card", type=float, is_flag=False, flag_value=WAIT_CARD_DEFAULT, default=None,
        expose_value=False, callback=_wait_card, metavar="[SECONDS]",
        help=f"Wait for the card to be inserted (default {WAIT_CARD_DEFAULT:g} s; "
             "TOKENKEYS_CARD_WAIT).",
    )(func)


def token_option(func: F) -> F:
    return click.option(
        "--token",
        "token",
        metavar="URI",
        help="Token URI (pkcs11:token=… or soft:DIR). Default: TOKENKEYS_TOKEN or config.",
    )(func)


@contextmanager
def opened(app: App, uri: str | None, pins: PinSource | None = None) -> Iterator[Token]:
    """Open the token (and log in once when `pins` is given)."""
    with open_token(token_uri(uri, app.config), app.config, wait=app.wait_card) as token:
        if pins is not None:
            login_service.login(token, pins, allow_final_try=app.allow_final_try,
                                announce=app.note)
        yield token


def check_output(path: Path, force: bool) -> None:
    """The overwrite policy (services.prepare_output), before any PIN is asked."""
    prepare_output(path, force)


FILE_PATH = click.Path(dir_okay=False, path_type=Path)  # a file, never a directory


def force_option(func: F) -> F:
    """--force: the one way past check_output's refusal of an existing file."""
    return click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")(func)


def der_option(func: F) -> F:
    return click.option("--der", is_flag=True, help="DER instead of PEM.")(func)


def algorithm_option(*, default: Algorithm | None = None,
                     help: str | None = None) -> Callable[[F], F]:
    """--algorithm, parsed by parse_algorithm (None when absent and without default)."""
    return click.option("--algorithm", default=default.value if default else None,
                        callback=parse_algorithm, metavar="|".join(a.value for a in Algorithm),
                        show_default=default is not None, help=help)


def parse_algorithm(_ctx: click.Context, _param: click.Parameter, value: str | None
                    ) -> Algorithm | None:
    """click callback of every --algorithm option (None when the option is absent)."""
    try:
        return None if value is None else Algorithm.parse(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None
