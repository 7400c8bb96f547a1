"""`tokenkeys service list|create`."""

from __future__ import annotations

import click

from tokenkeys.cli.context import App, pass_app
from tokenkeys.cli.registry_opts import registry


@click.group("service")
def service_group() -> None:
    """Services of the entity: each owns its keys, backup keys and consultations."""


@service_group.command("list")
@pass_app
def service_list(app: App) -> None:
    """Services in the registry."""
    with registry(app) as reg:
        rows = reg.services()
    app.emit({"services": [r.to_json() for r in rows]}, lambda: app.table(
        None, ["service", "created", "by"], [(r.name, r.created_at, r.created_by)
                                             for r in rows]))


@service_group.command("create")
@click.argument("name")
@pass_app
def service_create(app: App, name: str) -> None:
    """Create a service."""
    with registry(app) as reg:
        row = reg.create_service(name)
    app.emit({"service": row.to_json()}, lambda: app.say(f"created service {row.name!r}"))
