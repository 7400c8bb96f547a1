"""`tokenkeys key generate|list|export-cert|delete`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tokenkeys.cli.app import word
from tokenkeys.cli.context import (
    FILE_PATH,
    App,
    algorithm_option,
    check_output,
    der_option,
    force_option,
    opened,
    pass_app,
    pin_options,
    token_option,
    user_pin,
    visible,
    wait_card_option,
)
from tokenkeys.cli.registry_opts import open_registry, registry, service_name, service_option
from tokenkeys.cli.translated import Group
from tokenkeys.errors import UsageError
from tokenkeys.i18n import N_, _, format_date
from tokenkeys.services import token_keys
from tokenkeys.types import DEFAULT_ALGORITHM, Algorithm

if TYPE_CHECKING:
    from tokenkeys.registry import KeyRow



def _show_rows(app: App, rows: list[KeyRow]) -> None:
    if not rows:
        app.say(_("no keys in this service"))
        return
    app.table(None, [N_("designation"), N_("algorithm"), N_("not after"), N_("backup"),
                     N_("open consultations"), N_("deleted")],
              [(r.designation, r.algorithm, r.not_after, word("yes" if r.backup else "no"),
                ", ".join(r.open_consultations) or "-", r.deleted_at or "-")
               for r in rows])


def _show(app: App, records: list[token_keys.KeyRecord],
          extra: list[dict[str, object]] | None = None) -> None:
    if not records:
        app.say(_("no keys on this token"))
        return
    facts = extra or [{} for _ in records]
    app.table(
        None,
        [N_("designation"), "CN", N_("algorithm"), "id", N_("not after"), N_("status"),
         N_("extractable"), N_("opens"), N_("backup"), N_("open consultations")],
        [
            (r.designation, r.cn, r.algorithm, r.id[:16],
             format_date(r.not_after) if r.not_after else "-", word(r.status),
             word("yes" if r.extractable else "no"), ", ".join(r.opens) or "-",
             word("yes" if x.get("backup") else "no"),
             ", ".join(x.get("open_consultations", [])) or "-")  # type: ignore[arg-type]
            for r, x in zip(records, facts, strict=True)
        ],
    )
    # URIs are long: one per line, so they can be copied whole.
    for r in records:
        if r.uri:  # unusable objects have none
            app.say(f"{r.designation}: {r.uri}")


@click.group(cls=Group, help=N_(
    "Generate, list, export and delete key pairs."))
def key() -> None:
    pass


@key.command("generate", help=N_(
    "Generate a key pair on the token, with a certificate signed by the token.\n"
    "\n"
    "The key is recorded in the registry, in the service (--service). A key that\n"
    "cannot sign (a card's decryption key) gets no certificate: it awaits one issued\n"
    "by a CA, and the command says what comes next; `key import-cert` then records\n"
    "it. On a card the SO (admin) PIN comes from TOKENKEYS_SO_PIN or a prompt."))
@token_option
@click.option("--name", required=True, help=N_("Designation: the key's name on the platform."))
@click.option("--cn", help=N_("Certificate common name (default: the name)."))
@algorithm_option(default=DEFAULT_ALGORITHM)
@click.option("--days", type=int, default=365, show_default=True, help=N_("Validity in days."))
@click.option("--shareable", is_flag=True,
              help=N_("Allow wrapping the key out for colleagues (never readable in clear)."))
@click.option("--backup", is_flag=True,
              help=N_("A backup key: automatically added to every new consultation's "
                      "envelopes."))
@click.option("--no-self-sign", is_flag=True,
              help=N_("Store no certificate: the key awaits one from a CA (key "
                      "csr/export-public)."))
@click.option("--replace", is_flag=True,
              help=N_("On a card with a fixed key slot, overwrite the key the slot holds."))
@service_option
@pin_options
@pass_app
def key_generate(app: App, token: str | None, name: str, cn: str | None, algorithm: Algorithm,
                 days: int, shareable: bool, backup: bool, no_self_sign: bool, replace: bool,
                 service: str | None, pin_file: Path | None, pinpad: bool) -> None:
    from tokenkeys.services import key_inventory  # SQLAlchemy: only when used

    with registry(app) as reg:
        done = key_inventory.generate(
            reg, service_name(app, service), lambda: opened(app, token,
                                                            user_pin(app, pin_file, pinpad)),
            name, cn=cn, algorithm=algorithm, days=days, shareable=shareable, backup=backup,
            self_sign=False if no_self_sign else None, replace=replace, announce=app.note)

    def human() -> None:
        _show(app, [done.record], [{"backup": done.row.backup}])
        if done.next:
            app.say(done.next)

    app.emit(done.to_json(), human)


@key.command("list", help=N_(
    "Keys on the token: designation, CN, algorithm, id, expiry, status, extractable,\n"
    "and from the registry: backup flag and open consultations bound to each.\n"
    "\n"
    "Objects tokenkeys cannot use are listed as \"unusable\" with the reason."))
@token_option
@click.option("--registry", "from_registry", is_flag=True,
              help=N_("List the service's keys from the registry (no token needed)."))
@click.option("--all", "include_all", is_flag=True,
              help=N_("Also what interrupted runs left under a provisional label (key pairs, "
                      "lone public keys, certificates); with --registry, deleted keys."))
@service_option
@wait_card_option
@pin_options
@pass_app
def key_list(app: App, token: str | None, from_registry: bool, include_all: bool,
             service: str | None, pin_file: Path | None, pinpad: bool) -> None:
    if from_registry:
        with registry(app) as reg:
            rows = reg.keys(service_name(app, service), include_deleted=include_all)
        app.emit({"keys": [r.to_json() for r in rows]}, lambda: _show_rows(app, rows))
        return
    from tokenkeys.services import key_inventory

    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok, registry(app) as reg:
        keys = key_inventory.list_token(reg, tok, include_all=include_all)
    app.emit({"keys": [k.to_json() for k in keys]},
             lambda: _show(app, [k.record for k in keys],
                           [{"backup": k.backup, "open_consultations": k.open_consultations}
                            for k in keys]))


@key.command("cleanup", help=N_(
    "Finish or remove what interrupted runs left (provisional labels): a key the\n"
    "registry recorded gets its name, every other leftover object is deleted."))
@click.option("--yes", is_flag=True, help=N_("Do not ask for confirmation."))
@token_option
@pin_options
@pass_app
def key_cleanup(app: App, yes: bool, token: str | None, pin_file: Path | None,
                pinpad: bool) -> None:
    from tokenkeys.services import interrupted

    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok, registry(app) as reg:
        found = interrupted.survey(reg, tok)
        removals = [f for f in found if f.action == "remove"]
        if removals and not yes:
            if not app.interactive:
                raise UsageError(_("refusing to delete without confirmation: add --yes"))
            names = ", ".join(visible(f.label) for f in removals)  # labels from the device
            click.confirm(_("Delete {count} leftover key(s) ({names})?")
                          .format(count=len(removals), names=names), abort=True)
        done = interrupted.settle(reg, tok, found)
    deleted = [f for f in done if f.action == "remove"]
    finished = [f for f in done if f.action == "finish"]
    app.emit({"deleted": [f.to_json() for f in deleted],
              "finished": [f.to_json() for f in finished]},
             lambda: app.say(_("deleted {count} leftover key(s); named {count2} recorded "
                               "key(s)").format(count=len(deleted), count2=len(finished))))


@key.command("export-cert", help=N_(
    "Write the key's certificate (for the procurement platform). No PIN needed."))
@click.argument("name_or_uri")
@click.option("-o", "--output", type=FILE_PATH, required=True)
@der_option
@force_option
@token_option
@pass_app
def key_export_cert(app: App, name_or_uri: str, output: Path, der: bool, force: bool,
                    token: str | None) -> None:
    check_output(output, force)
    with opened(app, token_keys.key_token_uri(name_or_uri) or token) as tok:
        handle = token_keys.resolve_key(tok, name_or_uri)
        token_keys.export_certificate(handle, output, der=der, overwrite=force)
        record = token_keys.describe(handle)
    app.emit({"key": record.to_json(), "output": str(output)},
             lambda: app.say(_("wrote the certificate of {designation!r} to {output}")
                             .format(designation=record.designation, output=output)))


@key.command("delete", help=N_(
    "Delete a key pair and its certificate from the token.\n"
    "\n"
    "Refused while a consultation not yet closed pinned the key pair (as its key or a\n"
    "recorded backup key), in any service, unless another recorded copy of it remains.\n"
    "A key the registry does not know needs --unregistered. Registry rows are kept: the\n"
    "copy's location is marked deleted, and the key row with its last location."))
@click.argument("name_or_uri")
@click.option("--yes", is_flag=True, help=N_("Do not ask for confirmation."))
@click.option("--unregistered", is_flag=True,
              help=N_("Delete a key the registry does not know (it cannot vouch that no "
                      "consultation needs it)."))
@token_option
@service_option
@pin_options
@pass_app
def key_delete(app: App, name_or_uri: str, yes: bool, unregistered: bool, token: str | None,
               service: str | None, pin_file: Path | None, pinpad: bool) -> None:
    from tokenkeys.services import keys as key_policy

    with opened(app, token_keys.key_token_uri(name_or_uri) or token,
                user_pin(app, pin_file, pinpad)) as tok:
        handle = key_policy.resolve(tok, name_or_uri, service=service_name(app, service),
                                    registry=lambda: open_registry(app))
        if not yes:
            if not app.interactive:
                raise UsageError(_("refusing to delete without confirmation: add --yes"))
            click.confirm(_("Delete key {label!r} ({uri})?")
                          .format(label=visible(handle.label), uri=handle.uri),
                          abort=True)
        record = token_keys.describe(handle)
        with registry(app) as reg:
            key_policy.delete(reg, tok, handle, unregistered=unregistered)
    app.emit({"deleted": record.to_json()},
             lambda: app.say(_("deleted key {designation!r}")
                             .format(designation=record.designation)))
