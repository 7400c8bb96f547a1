"""Creating, closing and finding consultations, and checking them all against their
pins, inside the caller's transaction (the Registry's consultation methods)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys.errors import ConsultationNotFound, KeyNotFound, PolicyRefused
from tokenkeys.i18n import _
from tokenkeys.registry import audit as audit_log
from tokenkeys.registry.audit import now_text
from tokenkeys.registry.bindings import binding_problems, load_consultation
from tokenkeys.registry.key_rows import backups_in_force, live_key
from tokenkeys.registry.records import Consultation, KeyRow
from tokenkeys.registry.schema import consultation_backups as cb
from tokenkeys.registry.schema import consultations as cs
from tokenkeys.registry.service_rows import insert_row, service_id

BindingCheck = Callable[[KeyRow, Sequence[KeyRow]], None]


def create(c: Connection, service: str, reference: str, key_designation: str, *,
           title: str | None, closes_at: str | None,
           check: BindingCheck, details: Mapping[str, Any]) -> Consultation:
    """Registry.create_consultation's transaction."""
    sid = service_id(c, service)
    existing = c.execute(sa.select(cs.c.id).where(
        cs.c.service_id == sid, cs.c.reference == reference)).scalar()
    if existing is not None:
        old = load_consultation(c, int(existing))
        raise PolicyRefused(
            _("consultation {reference!r} already exists in service {service!r}, "
              "bound to key {designation!r}: a binding is never changed")
            .format(reference=reference, service=service, designation=old.key.designation))
    key = live_key(c, sid, key_designation)
    if key is None:
        raise KeyNotFound(_("no key named {key_designation!r} in service {service!r}")
                          .format(key_designation=key_designation, service=service))
    backups = backups_in_force(c, sid, None)
    check(key, backups)
    new_id = insert_row(c, cs.insert().values(
        service_id=sid, reference=reference, title=title, closes_at=closes_at,
        status="open", key_id=key.id, created_at=now_text(),
        created_by=audit_log.actor(), key_public_key_sha256=key.public_key_sha256,
        backup_count=len(backups)))
    for b in backups:
        c.execute(cb.insert().values(consultation_id=new_id, key_id=b.id,
                                     public_key_sha256=b.public_key_sha256))
    audit_log.append(c, "consultation-create", service=service, subject=reference,
                     details={"key": key.designation, "key_fingerprint": key.fingerprint,
                              "key_public_key": key.public_key_sha256,
                              "backups": [b.fingerprint for b in backups],
                              "backup_public_keys": sorted(
                                  b.public_key_sha256 for b in backups),
                              "closes_at": closes_at, **details})
    return load_consultation(c, new_id)


def close(c: Connection, service: str, reference: str) -> Consultation:
    """Registry.close_consultation's transaction."""
    found = find(c, service, reference)
    if found.status == "closed":
        raise PolicyRefused(_("consultation {reference!r} is already closed")
                            .format(reference=reference))
    c.execute(cs.update().where(cs.c.id == found.id)
              .values(status="closed", closed_at=now_text()))
    audit_log.append(c, "consultation-close", service=service, subject=reference,
                     details={"key": found.key.designation})
    return load_consultation(c, found.id)


def find(c: Connection, service: str, reference: str) -> Consultation:
    found = c.execute(sa.select(cs.c.id).where(
        cs.c.service_id == service_id(c, service),
        cs.c.reference == reference)).scalar()
    if found is None:
        raise ConsultationNotFound(
            _("unknown consultation {reference!r} in service {service!r}")
            .format(reference=reference, service=service))
    return load_consultation(c, int(found))


def problems(c: Connection) -> tuple[list[str], list[str]]:
    """The consultations that differ ("'REF' (service 'S')"), and one line per problem."""
    named: list[str] = []
    found: list[str] = []
    for cid in c.execute(sa.select(cs.c.id).order_by(cs.c.id)).scalars():
        consultation = load_consultation(c, cid)
        name = f"{consultation.reference!r} (service {consultation.service!r})"
        for problem in binding_problems(consultation):
            found.append(f"consultation {name}: {problem}")
            if name not in named:
                named.append(name)
    return named, found
