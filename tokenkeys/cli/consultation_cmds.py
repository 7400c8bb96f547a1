"""`tokenkeys consultation create|close|list|show|recipients`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tokenkeys.cli.app import word
from tokenkeys.cli.context import FILE_PATH, App, check_output, force_option, pass_app
from tokenkeys.cli.registry_opts import (
    registry,
    service_name,
    service_option,
)
from tokenkeys.cli.translated import Group
from tokenkeys.i18n import N_, _

if TYPE_CHECKING:
    from tokenkeys.registry import Consultation


@click.group("consultation", cls=Group, help=N_(
    "Consultations (calls for tenders): each bound for good to one key pair."))
def consultation_group() -> None:
    pass


def _show(app: App, rows: list[Consultation]) -> None:
    if not rows:
        app.say(_("no consultations"))
        return
    app.table(None, [N_("reference"), N_("status"), N_("closes"), N_("key"), N_("key expires"),
                     N_("backup keys")], [
        (c.reference, word(c.status), c.closes_at or "-", c.key.designation,
         c.key.not_after, ", ".join(b.designation for b in c.backups) or word("none"))
        for c in rows])


@consultation_group.command("create", help=N_(
    "Bind consultation REFERENCE to key NAME and the service's backup keys, for good."))
@click.argument("reference")
@click.option("--key", "key", required=True, metavar="NAME", help=N_("The key to bind, for good."))
@click.option("--closes", metavar="DATE", help=N_("Closing date (YYYY-MM-DD or ISO time, UTC)."))
@click.option("--title", metavar="T", help=N_("A title for the listing."))
@click.option("--no-backup", is_flag=True,
              help=N_("Allow a service with no valid backup key (bids depend on one key)."))
@service_option
@pass_app
def consultation_create(app: App, reference: str, key: str, closes: str | None,
                        title: str | None, no_backup: bool, service: str | None) -> None:
    from tokenkeys.services import consultations as policy

    with registry(app) as reg:
        made = policy.create(reg, service_name(app, service), reference, key, closes=closes,
                             title=title, no_backup=no_backup)
    for warning in made.warnings:
        app.warn(warning)
    c = made.consultation
    app.emit({"consultation": c.to_json(), "warnings": list(made.warnings)},
             lambda: app.say(_("consultation {reference!r} bound to key {designation!r} and "
                               "{count} backup key(s); this binding is final")
                             .format(reference=c.reference, designation=c.key.designation,
                                     count=len(c.backups))))


@consultation_group.command("close", help=N_(
    "Close a consultation: its keys may then be deleted."))
@click.argument("reference")
@service_option
@pass_app
def consultation_close(app: App, reference: str, service: str | None) -> None:
    with registry(app) as reg:
        c = reg.close_consultation(service_name(app, service), reference)
    app.emit({"consultation": c.to_json()},
             lambda: app.say(_("consultation {reference!r} closed").format(reference=c.reference)))


@consultation_group.command("list", help=N_(
    "Consultations of the service: status, bound key and its expiry."))
@click.option("--status", type=click.Choice(["open", "closed"]))
@service_option
@pass_app
def consultation_list(app: App, status: str | None, service: str | None) -> None:
    with registry(app) as reg:
        rows = reg.consultations(service_name(app, service), status)
    app.emit({"consultations": [c.to_json() for c in rows]}, lambda: _show(app, rows))


@consultation_group.command("show", help=N_(
    "One consultation, with its bound key and recorded backup keys.\n"
    "\n"
    "Any disagreement with the public keys pinned at its creation is shown (and makes\n"
    "`recipients`, `seal` and `open` refuse it)."))
@click.argument("reference")
@service_option
@pass_app
def consultation_show(app: App, reference: str, service: str | None) -> None:
    from tokenkeys.services import consultations as policy

    with registry(app) as reg:
        c = reg.consultation(service_name(app, service), reference)
    problems = policy.problems(c)
    for problem in problems:
        app.warn(_("consultation {reference!r}: {problem}")
                 .format(reference=c.reference, problem=problem))

    def human() -> None:
        _show(app, [c])
        if c.title:
            app.say(_("title: {title}").format(title=c.title))
        for role, k, pin in [("bound", c.key, c.key_pin)] + [
                ("backup", b, p) for b, p in zip(c.backups, c.backup_pins, strict=True)]:
            app.say(_("{role} {designation}: public key sha256 {pin}, certificate sha256 "
                      "{value}, until {value2}, opens {envelope_kinds}")
                    .format(role=role, designation=k.designation, pin=pin,
                            value=k.fingerprint or '-', value2=k.not_after or '-',
                            envelope_kinds=','.join(k.envelope_kinds)))

    app.emit({"consultation": c.to_json(), "problems": problems}, human)


@consultation_group.command("recipients", help=N_(
    "Write the bound key's and the recorded backup keys' certificates (PEM bundle)."))
@click.argument("reference")
@click.option("-o", "--output", type=FILE_PATH, required=True,
              help=N_("PEM bundle to write (for the platform)."))
@force_option
@service_option
@pass_app
def consultation_recipients(app: App, reference: str, output: Path, force: bool,
                            service: str | None) -> None:
    check_output(output, force)
    from tokenkeys.services import consultations as policy

    with registry(app) as reg:
        c = policy.load_for_use(reg, service_name(app, service), reference)

    policy.write_bundle(c, output, force=force)
    app.emit({"output": str(output), "recipients": [k.fingerprint for k in c.recipients]},
             lambda: app.say(_("wrote {count} certificate(s) to {output}")
                             .format(count=len(c.recipients), output=output)))
