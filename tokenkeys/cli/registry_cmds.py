"""`tokenkeys registry migrate` and `tokenkeys audit verify|checkpoint|show`."""

from __future__ import annotations

from pathlib import Path

import click

from tokenkeys.cli.context import (
    FILE_PATH,
    App,
    check_output,
    force_option,
    opened,
    pass_app,
    pin_options,
    token_option,
    user_pin,
)
from tokenkeys.cli.registry_opts import registry
from tokenkeys.cli.translated import Group
from tokenkeys.errors import AuditChainBroken
from tokenkeys.i18n import N_, _

# tokenkeys.registry.EVENTS, spelled out so `--help` does not import SQLAlchemy (tested).
EVENT_CHOICES = ("adopt", "certificate", "checkpoint", "consultation-close",
                 "consultation-create", "consultation-pin", "delete", "generate", "open",
                 "open-start", "renew", "service-create", "share-copy", "share-export",
                 "share-import")


@click.group("registry", cls=Group, help=N_(
    "The registry database (SQLite file or shared PostgreSQL)."))
def registry_group() -> None:
    pass


@registry_group.command("migrate", help=N_(
    "Bring the registry schema to this version (also done by itself on first use)."))
@pass_app
def registry_migrate(app: App) -> None:
    from tokenkeys.services.access import migrate

    done = migrate(app.config)
    where, before, after = done.registry, done.before, done.after
    document = {"registry": where, "from": before, "to": after}
    app.emit(document, lambda: app.say(
        f"registry {where}: schema {before or 'empty'} -> {after}" if before != after
        else _("registry {where}: schema {after} is current").format(where=where, after=after)))


@click.group("audit", cls=Group, help=N_(
    "The hash-chained audit log."))
def audit_group() -> None:
    pass


@audit_group.command("verify", help=N_(
    "Check the chain (any edited, deleted or reordered row), every consultation\n"
    "against the public keys pinned at its creation, and each checkpoint given."))
@click.option("--checkpoint", "checkpoints", multiple=True, type=FILE_PATH, metavar="FILE",
              help=N_("A checkpoint (`audit checkpoint`): the log must still match it and "
                      "extend it. Repeatable."))
@click.option("--trust", type=FILE_PATH, metavar="CERT",
              help=N_("PEM certificates a checkpoint's signer must be, or be issued by "
                      "(default: audit_trust in the configuration)."))
@pass_app
def audit_verify(app: App, checkpoints: tuple[Path, ...], trust: Path | None) -> None:
    from tokenkeys.services import audit_checkpoint

    verdict = audit_checkpoint.verify(app.config, list(checkpoints), trust)
    if not verdict.ok:
        raise AuditChainBroken(verdict.message())
    shown = [cp.to_json() for cp in verdict.checkpoints]

    def human() -> None:
        app.say(_("audit chain valid: {rows} rows").format(rows=verdict.rows))
        for cp in shown:
            app.say(_("checkpoint {cp}: rows 1-{cp2} unchanged since {cp3}, signed by {cp4}")
                    .format(cp=cp['file'], cp2=cp['rows'], cp3=cp['at'], cp4=cp['signer']))

    app.emit({"rows": verdict.rows, "valid": True, "checkpoints": shown}, human)


@audit_group.command("checkpoint", help=N_(
    "Sign the audit log's head (rows, last hash, time) on the token, into OUTPUT."))
@token_option
@click.option("--key", "key_name", required=True, metavar="NAME",
              help=N_("The signing key on the token: the entity's CA, or a key kept for this."))
@click.option("-o", "--output", type=FILE_PATH, required=True,
              help=N_("The checkpoint file (keep it off the database server)."))
@force_option
@pin_options
@pass_app
def audit_checkpoint_cmd(app: App, token: str | None, key_name: str, output: Path,
                         force: bool, pin_file: Path | None, pinpad: bool) -> None:
    from tokenkeys.services import audit_checkpoint

    check_output(output, force)  # before any PIN or device call
    head = audit_checkpoint.read_head(app.config)  # a broken chain: before the PIN too
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        taken = audit_checkpoint.write_checkpoint(app.config, tok, key_name, head, output,
                                                  force=force)
    if taken.record_error is not None:
        app.warn(_("the checkpoint was written, but the registry did not record it "
                   "({record_error}): doctor will not know of it")
                 .format(record_error=taken.record_error))
    shown = taken.checkpoint.to_json()

    def human() -> None:
        app.say(_("checkpoint of rows 1-{shown} (head {shown2}) signed by {shown3}: {output}")
                .format(shown=shown['rows'], shown2=shown['head_hash'][:16],
                        shown3=shown['signer'], output=output))
        app.say(_("keep it off the database server; verify with `tokenkeys audit verify "
                  "--checkpoint FILE --trust CERT`"))

    app.emit({"checkpoint": shown, "recorded": taken.record_error is None}, human)


@audit_group.command("show", help=N_(
    "List audit rows (oldest first)."))
@click.option("--last", type=click.IntRange(1), help=N_("Only the last N rows."))
@click.option("--event", type=click.Choice(EVENT_CHOICES))
@click.option("--service", metavar="NAME", help=N_("Only this service's rows."))
@pass_app
def audit_show(app: App, last: int | None, event: str | None, service: str | None) -> None:
    with registry(app) as reg:
        rows = reg.audit_rows(limit=last, event=event, service=service)

    def human() -> None:
        app.table(None, ["#", N_("at"), N_("actor"), N_("event"), N_("service"), N_("subject"),
                         N_("details")],
                  [(r.seq, r.at, r.actor, r.event, r.service, r.subject, r.details)
                   for r in rows])

    app.emit({"rows": [r.to_json() for r in rows]}, human)
