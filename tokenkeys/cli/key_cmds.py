"""`tokenkeys key generate|list|export-cert|delete`."""

from __future__ import annotations

from pathlib import Path

import click

from tokenkeys import manager
from tokenkeys.cli.context import App, opened, pass_app, pin_options, token_option, user_pin
from tokenkeys.errors import UsageError
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
        ["designation", "CN", "algorithm", "id", "not after", "status", "extractable"],
        [
            (r.designation, r.cn, r.algorithm, r.id[:16],
             r.not_after.strftime("%Y-%m-%d") if r.not_after else "-", r.status,
             "yes" if r.extractable else "no")
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
@pin_options
@pass_app
def key_generate(app: App, token: str | None, name: str, cn: str | None, algorithm: Algorithm,
                 days: int, shareable: bool, pin_file: Path | None, pinpad: bool) -> None:
    """Generate a key pair on the token, with a certificate signed by the token."""
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        record = manager.generate_key(tok, name, cn=cn, algorithm=algorithm, days=days,
                                      shareable=shareable)
    app.emit({"key": record.to_json()}, lambda: _show(app, [record]))


@key.command("list")
@click.option("--all", "include_all", is_flag=True,
              help="Also keys left under a provisional label by an interrupted generation.")
@token_option
@pin_options
@pass_app
def key_list(app: App, include_all: bool, token: str | None, pin_file: Path | None,
             pinpad: bool) -> None:
    """Keys on the token: designation, CN, algorithm, id, expiry, status, extractable.

    Objects tokenkeys cannot use are listed as "unusable" with the reason."""
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        records = manager.list_keys(tok, include_all=include_all)
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
