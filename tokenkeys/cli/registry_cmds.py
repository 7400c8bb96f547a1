"""`tokenkeys registry migrate` and `tokenkeys audit verify|show`."""

from __future__ import annotations

import click

from tokenkeys.cli.context import App, pass_app
from tokenkeys.cli.registry_opts import registry
from tokenkeys.errors import AuditChainBroken

# tokenkeys.registry.EVENTS, spelled out so `--help` does not import SQLAlchemy (tested).
EVENT_CHOICES = ("adopt", "certificate", "consultation-close", "consultation-create",
                 "consultation-pin", "delete", "generate", "open", "open-start", "renew",
                 "service-create", "share-copy", "share-export", "share-import")


@click.group("registry")
def registry_group() -> None:
    """The registry database (SQLite file or shared PostgreSQL)."""


@registry_group.command("migrate")
@pass_app
def registry_migrate(app: App) -> None:
    """Bring the registry schema to this version (also done by itself on first use)."""
    from tokenkeys.services.access import migrate

    done = migrate(app.config)
    where, before, after = done.registry, done.before, done.after
    document = {"registry": where, "from": before, "to": after}
    app.emit(document, lambda: app.say(
        f"registry {where}: schema {before or 'empty'} -> {after}" if before != after
        else f"registry {where}: schema {after} is current"))


@click.group("audit")
def audit_group() -> None:
    """The hash-chained audit log."""


@audit_group.command("verify")
@pass_app
def audit_verify(app: App) -> None:
    """Check the chain (any edited, deleted or reordered row), and every consultation
    against the public keys pinned at its creation."""
    with registry(app) as reg:
        verdict = reg.verify_audit()
    if not verdict.ok:
        raise AuditChainBroken(f"audit chain broken: {verdict.problems[0]}"
                               + (f" (and {len(verdict.problems) - 1} more)"
                                  if len(verdict.problems) > 1 else "")
                               + (f"; consultations that differ from their pins or their "
                                  f"creation's row: {', '.join(verdict.consultations)}"
                                  if verdict.consultations else ""))
    app.emit({"rows": verdict.rows, "valid": True},
             lambda: app.say(f"audit chain valid: {verdict.rows} rows"))


@audit_group.command("show")
@click.option("--last", type=click.IntRange(1), help="Only the last N rows.")
@click.option("--event", type=click.Choice(EVENT_CHOICES))
@click.option("--service", metavar="NAME", help="Only this service's rows.")
@pass_app
def audit_show(app: App, last: int | None, event: str | None, service: str | None) -> None:
    """List audit rows (oldest first)."""
    with registry(app) as reg:
        rows = reg.audit_rows(limit=last, event=event, service=service)

    def human() -> None:
        app.table(None, ["#", "at", "actor", "event", "service", "subject", "details"],
                  [(r.seq, r.at, r.actor, r.event, r.service, r.subject, r.details)
                   for r in rows])

    app.emit({"rows": [r.to_json() for r in rows]}, human)
