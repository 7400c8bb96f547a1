"""`tokenkeys service list|create`."""

from __future__ import annotations

import click

from tokenkeys.cli.context import App, pass_app
from tokenkeys.cli.registry_opts import registry
from tokenkeys.cli.translated import Group
from tokenkeys.i18n import N_, _


@click.group("service", cls=Group, help=N_(
    "Services of the entity: each owns its keys, backup keys and consultations."))
def service_group() -> None:
    pass


@service_group.command("list", help=N_(
    "Services in the registry."))
@pass_app
def service_list(app: App) -> None:
    with registry(app) as reg:
        rows = reg.services()
    app.emit({"services": [r.to_json() for r in rows]}, lambda: app.table(
        None, [N_("service"), N_("created"), N_("by")],
        [(r.name, r.created_at, r.created_by) for r in rows]))


@service_group.command("create", help=N_(
    "Create a service."))
@click.argument("name")
@pass_app
def service_create(app: App, name: str) -> None:
    with registry(app) as reg:
        row = reg.create_service(name)
    app.emit({"service": row.to_json()}, lambda: app.say(_("created service {name!r}")
                                                         .format(name=row.name)))
