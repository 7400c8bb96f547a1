"""`tokenkeys token list|init`."""

from __future__ import annotations

import click

from tokenkeys.cli.context import App, pass_app
from tokenkeys.drivers import init_token, list_tokens
from tokenkeys.errors import PinMissing, UsageError
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


@click.group()
def token() -> None:
    """List and initialise tokens."""


def _pin_flags(info: TokenInfo) -> list[str]:
    """The flags an officer acts on; --json has them all."""
    return [f for f in info.flags if "pin" in f or "login" in f or "protected" in f]


@token.command("list")
@pass_app
def token_list(app: App) -> None:
    """Every token of every PKCS#11 module found, with its PIN flags."""
    infos = list_tokens(app.config)

    def human() -> None:
        if not infos:
            app.say("no tokens found (see `tokenkeys doctor`)")
            return
        app.table(
            None,
            ["label", "manufacturer", "model", "serial", "slot", "login / PIN flags"],
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
    value = click.prompt(f"new {source.what}", hide_input=True, confirmation_prompt=True)
    return Secret(str(value))


def _require(source: PinSource) -> Secret:
    pin = source.read()
    if pin is None:
        raise PinMissing(source.what)
    return pin


@token.command("init")
@click.option("--token", "uri", required=True, metavar="URI",
              help="pkcs11:…?module-path=… (first free slot, or slot-id=N) or soft:DIR.")
@click.option("--label", required=True, help="Token label (at most 32 bytes).")
@pass_app
def token_init(app: App, uri: str, label: str) -> None:
    """Initialise a token: SO PIN and user PIN from TOKENKEYS_SO_PIN / TOKENKEYS_PIN or prompts.

    Refuses a token that is already initialised: that would erase its keys.
    """
    if not label or len(label.encode("utf-8")) > 32:
        raise UsageError("the token label must be 1 to 32 bytes long")
    soft = isinstance(parse(uri), SoftUri)
    user = _new_pin(app, PinSource())
    # A software keystore has no SO PIN.
    so = user if soft else _new_pin(app, so_pin_source())
    info = init_token(uri, label, so, user, app.config)
    app.emit({"token": token_json(info)},
             lambda: app.say(f"initialised token {info.label!r}: {info.uri}"))
