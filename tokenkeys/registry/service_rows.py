"""Services by name, and the one insert helper every table's writer uses."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys.errors import ServiceNotFound
from tokenkeys.i18n import _
from tokenkeys.registry import audit as audit_log
from tokenkeys.registry.audit import now_text
from tokenkeys.registry.schema import services as sv

DEFAULT_SERVICE = "default"


def insert_row(c: Connection, statement: sa.Insert) -> int:
    """Run `statement`; the new row's id."""
    key = c.execute(statement).inserted_primary_key
    assert key is not None
    return int(key[0])


def ensure_default(c: Connection) -> None:
    # The `default` service exists without asking; others are created explicitly.
    if not c.execute(sa.select(sv.c.id).where(sv.c.name == DEFAULT_SERVICE)).first():
        c.execute(sv.insert().values(name=DEFAULT_SERVICE, created_at=now_text(),
                                     created_by=audit_log.actor()))


def service_id(c: Connection, name: str) -> int:
    """The service's id, or ServiceNotFound (`default` is created on the way)."""
    if name == DEFAULT_SERVICE:
        ensure_default(c)
    found = c.execute(sa.select(sv.c.id).where(sv.c.name == name)).scalar()
    if found is None:
        raise ServiceNotFound(_("unknown service {name!r} (see `tokenkeys service list`)")
                              .format(name=name))
    return int(found)
