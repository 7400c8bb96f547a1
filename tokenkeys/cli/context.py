"""Shared CLI plumbing: global options, JSON/table output, PIN options, token opening."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

# Re-exported: the commands take them from here with the rest of the plumbing.
from tokenkeys.cli.app import FILE_PATH as FILE_PATH
from tokenkeys.cli.app import App as App
from tokenkeys.cli.app import pass_app as pass_app
from tokenkeys.cli.app import visible as visible
from tokenkeys.drivers import Token, open_token, token_uri
from tokenkeys.errors import UsageError
from tokenkeys.i18n import N_, _
from tokenkeys.services import login as login_service
from tokenkeys.services import prepare_output
from tokenkeys.types import Algorithm, PinSource

F = TypeVar("F", bound=Callable[..., Any])


def _allow_final_try(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    app = ctx.find_object(App)
    if app is not None:
        app.allow_final_try = value


def pin_options(func: F) -> F:
    """--pin-file, --pinpad and --allow-final-try. The PIN never goes on the command line."""
    func = click.option(
        "--allow-final-try", is_flag=True, expose_value=False, callback=_allow_final_try,
        help=N_("Send a PIN from TOKENKEYS_PIN or --pin-file even at the card's final try."),
    )(func)
    func = click.option(
        "--pinpad", is_flag=True, help=N_("Enter the PIN on the reader's PIN pad.")
    )(func)
    func = click.option(
        "--pin-file",
        type=FILE_PATH,
        help=N_("Read the user PIN from this file (first line)."),
    )(func)
    return func


def user_pin(app: App, pin_file: Path | None, pinpad: bool) -> PinSource:
    return PinSource(file=pin_file, pinpad=pinpad, interactive=app.interactive)


WAIT_CARD_DEFAULT = 60.0


def _wait_card(ctx: click.Context, _param: click.Parameter, value: float | None) -> None:
    app = ctx.find_object(App)
    if app is not None and value is not None:
        if value < 0:
            raise click.BadParameter(_("must be 0 or more seconds"), param_hint="--wait-card")
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
        help=N_("Token URI (pkcs11:token=… or soft:DIR). Default: TOKENKEYS_TOKEN or config."),
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



def force_option(func: F) -> F:
    """--force: the one way past check_output's refusal of an existing file."""
    return click.option("--force", is_flag=True, help=N_("Replace OUTPUT if it exists."))(func)


def der_option(func: F) -> F:
    return click.option("--der", is_flag=True, help=N_("DER instead of PEM."))(func)


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
