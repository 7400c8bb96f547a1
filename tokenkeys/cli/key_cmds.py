"""`tokenkeys key generate|list|export-cert|delete`."""

from __future__ import annotations

from pathlib import Path

import click

from tokenkeys import manager
from tokenkeys.cli.context import (
    App,
    opened,
    pass_app,
    pin_options,
    token_option,
    user_pin,
    wait_card_option,
)
from tokenkeys.errors import UsageError
from tokenkeys.services.envelope_kinds import remember
from tokenkeys.services.key_certs import next_steps
from tokenkeys.types import DEFAULT_ALGORITHM, Algorithm


def _algorithm(_ctx: click.Context, _param: click.Parameter, value: str) -> Algorithm:
    try:
        return Algorithm.parse(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def _show(app: App, records: list[manager.KeyRecord]) -> None:
    if not records:
        app.say("no keys on this token")
        return
    app.table(
        None,
        ["designation", "CN", "algorithm", "id", "not after", "status", "extractable", "opens"],
        [
            (r.designation, r.cn, r.algorithm, r.id[:16],
             r.not_after.strftime("%Y-%m-%d") if r.not_after else "-", r.status,
             "yes" if r.extractable else "no", ", ".join(r.opens) or "-")
            for r in records
        ],
    )
    # URIs are long: one per line, so they can be copied whole.
    for r in records:
        if r.uri:  # unusable objects have none
            app.say(f"{r.designation}: {r.uri}")


@click.group()
def key() -> None:
    """Generate, list, export and delete key pairs."""


@key.command("generate")
@token_option
@click.option("--name", required=True, help="Designation: the key's name on the platform.")
@click.option("--cn", help="Certificate common name (default: the name).")
@click.option("--algorithm", default=DEFAULT_ALGORITHM.value, callback=_algorithm,
              metavar="|".join(a.value for a in Algorithm), show_default=True)
@click.option("--days", type=int, default=365, show_default=True, help="Validity in days.")
@click.option("--shareable", is_flag=True,
              help="Allow wrapping the key out for colleagues (never readable in clear).")
@click.option("--no-self-sign", is_flag=True,
              help="Store no certificate: the key awaits one from a CA (key csr/export-public).")
@click.option("--replace", is_flag=True,
              help="On a card with a fixed key slot, overwrite the key the slot holds.")
@pin_options
@pass_app
def key_generate(app: App, token: str | None, name: str, cn: str | None, algorithm: Algorithm,
                 days: int, shareable: bool, no_self_sign: bool, replace: bool,
                 pin_file: Path | None, pinpad: bool) -> None:
    """Generate a key pair on the token, with a certificate signed by the token.

    A key that cannot sign (a card's decryption key) gets no certificate: it
    awaits one issued by a CA, and the command says what comes next. On a card
    the SO (admin) PIN comes from TOKENKEYS_SO_PIN or a prompt.
    """
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        slot = manager.fixed_slot(tok)
        if slot is not None:
            app.note(f"this card puts a new key into its fixed key slot {slot.hex()}")
        record = manager.generate_key(tok, name, cn=cn, algorithm=algorithm, days=days,
                                      shareable=shareable, replace=replace,
                                      self_sign=False if no_self_sign else None)
    where = "" if slot is None else (
        f" (in the card's key slot {slot.hex()}; the card names it {record.designation!r})")
    note = None if record.status != manager.AWAITING else (
        f"key {record.designation!r}{where} has no certificate yet"
        + ("" if no_self_sign else " (it cannot sign, so it cannot certify itself)")
        + f". Next: {next_steps(record.designation)}")

    def human() -> None:
        _show(app, [record])
        if note:
            app.say(note)

    app.emit({"key": record.to_json(), "next": note}, human)


@key.command("list")
@click.option("--all", "include_all", is_flag=True,
              help="Also keys left under a provisional label by an interrupted generation.")
@token_option
@wait_card_option
@pin_options
@pass_app
def key_list(app: App, include_all: bool, token: str | None, pin_file: Path | None,
             pinpad: bool) -> None:
    """Keys on the token: designation, CN, algorithm, id, expiry, status, extractable.

    Objects tokenkeys cannot use are listed as "unusable" with the reason."""
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        inventory = manager.key_inventory(tok, include_all=include_all)
        records = [r for _, r in inventory] + manager.unusable_records(tok)
    remember(app.config.registry,
             [(k.certificate, r.opens) for k, r in inventory if k.certificate is not None])
    app.emit({"keys": [r.to_json() for r in records]}, lambda: _show(app, records))


@key.command("cleanup")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@token_option
@pin_options
@pass_app
def key_cleanup(app: App, yes: bool, token: str | None, pin_file: Path | None,
                pinpad: bool) -> None:
    """Delete the leftovers of interrupted `key generate` runs (provisional labels)."""
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        found = manager.leftovers(tok)
        if found and not yes:
            if not app.interactive:
                raise UsageError("refusing to delete without confirmation: add --yes")
            names = ", ".join(k.label for k in found)
            click.confirm(f"Delete {len(found)} leftover key(s) ({names})?", abort=True)
        records = manager.cleanup(tok, found)
    app.emit({"deleted": [r.to_json() for r in records]},
             lambda: app.say(f"deleted {len(records)} leftover key(s)"))


@key.command("export-cert")
@click.argument("name_or_uri")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--der", is_flag=True, help="DER instead of PEM.")
@token_option
@pass_app
def key_export_cert(app: App, name_or_uri: str, output: Path, der: bool,
                    token: str | None) -> None:
    """Write the key's certificate (for the procurement platform). No PIN needed."""
    with opened(app, manager.key_token_uri(name_or_uri) or token) as tok:
        handle = manager.resolve_key(tok, name_or_uri)
        manager.export_certificate(handle, output, der=der)
        record = manager.describe(handle)
    app.emit({"key": record.to_json(), "output": str(output)},
             lambda: app.say(f"wrote the certificate of {record.designation!r} to {output}"))


@key.command("delete")
@click.argument("name_or_uri")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@token_option
@pin_options
@pass_app
def key_delete(app: App, name_or_uri: str, yes: bool, token: str | None,
               pin_file: Path | None, pinpad: bool) -> None:
    """Delete a key pair and its certificate from the token."""
    with opened(app, manager.key_token_uri(name_or_uri) or token,
                user_pin(app, pin_file, pinpad)) as tok:
        handle = manager.resolve_key(tok, name_or_uri)
        if not yes:
            if not app.interactive:
                raise UsageError("refusing to delete without confirmation: add --yes")
            click.confirm(f"Delete key {handle.label!r} ({handle.uri})?", abort=True)
        record = manager.delete_key(tok, handle)
    app.emit({"deleted": record.to_json()},
             lambda: app.say(f"deleted key {record.designation!r}"))
