"""`tokenkeys token list|init`."""

from __future__ import annotations

from pathlib import Path

import click

from tokenkeys.cli.context import App, opened, pass_app, pin_options, user_pin, wait_card_option
from tokenkeys.cli.translated import Group
from tokenkeys.drivers import init_token, list_tokens, wait_for_card
from tokenkeys.drivers.capabilities import PinChange, require
from tokenkeys.errors import PinMissing, UsageError
from tokenkeys.i18n import N_, _
from tokenkeys.types import PinSource, Secret, TokenInfo, so_pin_source
from tokenkeys.uri import SoftUri, parse


def token_json(info: TokenInfo) -> dict[str, object]:
    return {
        "label": info.label,
        "manufacturer": info.manufacturer,
        "model": info.model,
        "serial": info.serial,
        "module": info.module,
        "slot": info.slot,
        "flags": list(info.flags),
        "uri": info.uri,
    }


@click.group(cls=Group, help=N_(
    "List and initialise tokens."))
def token() -> None:
    pass


def _pin_flags(info: TokenInfo) -> list[str]:
    """The flags an officer acts on; --json has them all."""
    return [f for f in info.flags if "pin" in f or "login" in f or "protected" in f]


@token.command("list", help=N_(
    "Every token of every PKCS#11 module found, with its PIN flags.\n"
    "\n"
    "With --wait-card, first wait for a smartcard to be in a reader."))
@wait_card_option
@pass_app
def token_list(app: App) -> None:
    if app.wait_card is not None:
        wait_for_card(app.config, app.wait_card)
    infos = list_tokens(app.config)

    def human() -> None:
        if not infos:
            app.say(_("no tokens found (see `tokenkeys doctor`)"))
            return
        app.table(
            None,
            [N_("label"), N_("manufacturer"), N_("model"), N_("serial"), N_("slot"),
             N_("login / PIN flags")],
            [(i.label, i.manufacturer, i.model, i.serial, i.slot, ", ".join(_pin_flags(i)))
             for i in infos],
        )
        for i in infos:
            app.say(f"{i.label}: {i.uri}")

    app.emit({"tokens": [token_json(i) for i in infos]}, human)


def _new_pin(app: App, source: PinSource) -> Secret:
    """A new PIN: from the environment, else prompted twice without echo."""
    try:
        return _require(PinSource(env_var=source.env_var, what=source.what, interactive=False))
    except PinMissing:
        if not app.interactive:
            raise
    value = click.prompt(_("new {what}").format(what=_(source.what)), hide_input=True,
                         confirmation_prompt=True)
    return Secret(str(value))


def _require(source: PinSource) -> Secret:
    pin = source.read()
    if pin is None:
        raise PinMissing(source.what)
    return pin


@token.command("init", help=N_(
    "Initialise a token: SO PIN and user PIN from TOKENKEYS_SO_PIN / TOKENKEYS_PIN or "
    "prompts.\n"
    "\n"
    "Refuses a token that is already initialised: that would erase its keys."))
@click.option("--token", "uri", required=True, metavar="URI",
              help=N_("pkcs11:…?module-path=… (first free slot, or slot-id=N) or soft:DIR."))
@click.option("--label", required=True, help=N_("Token label (at most 32 bytes)."))
@pass_app
def token_init(app: App, uri: str, label: str) -> None:
    if not label or len(label.encode("utf-8")) > 32:
        raise UsageError(_("the token label must be 1 to 32 bytes long"))
    soft = isinstance(parse(uri), SoftUri)
    user = _new_pin(app, PinSource())
    # A software keystore has no SO PIN.
    so = user if soft else _new_pin(app, so_pin_source())
    info = init_token(uri, label, so, user, app.config)
    app.emit({"token": token_json(info)},
             lambda: app.say(_("initialised token {label!r}: {uri}")
                             .format(label=info.label, uri=info.uri)))


@token.command("change-pin", help=N_(
    "Change the user PIN of a software keystore; upgrades its KDF to the current one.\n"
    "\n"
    "Current PIN as usual (--pin-file, TOKENKEYS_PIN, prompt); new PIN from\n"
    "TOKENKEYS_NEW_PIN or a prompt, twice."))
@click.option("--token", "uri", required=True, metavar="URI", help=N_("soft:DIR"))
@pin_options
@pass_app
def token_change_pin(app: App, uri: str, pin_file: Path | None, pinpad: bool) -> None:
    if not isinstance(parse(uri), SoftUri):
        raise UsageError(_("change-pin works on software keystores (soft:DIR); change a "
                           "device's PIN with its vendor's tool"))
    with opened(app, uri, user_pin(app, pin_file, pinpad)) as keystore:
        require(keystore, PinChange, _("changing the PIN")).change_pin(
            _new_pin(app, PinSource(env_var="TOKENKEYS_NEW_PIN")))
        info = keystore.info()
    app.emit({"token": token_json(info)},
             lambda: app.say(_("changed the PIN of {label!r}: {uri}")
                             .format(label=info.label, uri=info.uri)))
