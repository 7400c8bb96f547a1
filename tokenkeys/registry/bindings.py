"""A consultation's record, and whether it still agrees with its pins and its audit row.

A consultation pins, at creation, the public keys of its bound key and of each
recorded backup key; its creation's audit row holds the same pins. The database
refuses to change them, but someone who can switch its triggers off (a database
superuser) can; `binding_problems` finds that, and every use refuses it.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys import keyalg
from tokenkeys.i18n import _
from tokenkeys.registry.key_rows import key_by_id
from tokenkeys.registry.records import AuditedPins, Consultation
from tokenkeys.registry.schema import audit
from tokenkeys.registry.schema import consultation_backups as cb
from tokenkeys.registry.schema import consultations as cs
from tokenkeys.registry.schema import services as sv

CREATED = "consultation-create"
PINNED = "consultation-pin"  # the pins of a consultation created before pins existed


def audited_pins(c: Connection, service: str, reference: str) -> AuditedPins | None:
    """The pins of the consultation's creation row; None when there is no such row.
    A creation row without pins takes them from the first pin row after it."""
    rows = c.execute(sa.select(audit.c.seq, audit.c.event, audit.c.details).where(
        audit.c.event.in_((CREATED, PINNED)), audit.c.service == service,
        audit.c.subject == reference).order_by(audit.c.seq)).all()
    creation = next((r for r in rows if r.event == CREATED), None)
    if creation is None:
        return None
    for r in rows:
        if r.seq < creation.seq:
            continue
        details: dict[str, Any] = json.loads(r.details)
        if "key_public_key" in details:
            return AuditedPins(r.seq, str(details["key_public_key"]),
                               tuple(sorted(details.get("backup_public_keys", []))))
    return AuditedPins(creation.seq, "", ())


def load_consultation(c: Connection, cid: int) -> Consultation:
    row = c.execute(sa.select(cs, sv.c.name.label("service_name"))
                    .join(sv, sv.c.id == cs.c.service_id).where(cs.c.id == cid)).one()
    recorded = c.execute(sa.select(cb.c.key_id, cb.c.public_key_sha256)
                         .where(cb.c.consultation_id == cid).order_by(cb.c.key_id)).all()
    return Consultation(
        id=row.id, service=row.service_name, reference=row.reference, title=row.title,
        closes_at=row.closes_at, status=row.status, key=key_by_id(c, row.key_id),
        backups=tuple(key_by_id(c, r.key_id) for r in recorded),
        created_at=row.created_at, created_by=row.created_by, closed_at=row.closed_at,
        key_pin=row.key_public_key_sha256,
        backup_pins=tuple(r.public_key_sha256 for r in recorded),
        backup_count=row.backup_count,
        audited=audited_pins(c, row.service_name, row.reference))


def binding_problems(consultation: Consultation) -> list[str]:
    """Every way the consultation's record disagrees with its pins or its creation's
    audit row; empty when it can be used."""
    found = []
    audited = consultation.audited
    if audited is None:
        found.append(_("it has no creation row in the audit log (it was not created by "
                       "tokenkeys)"))
    else:
        if audited.key != consultation.key_pin:
            found.append(_("its bound key's pin differs from the one its creation recorded "
                           "in the audit log"))
        if audited.backups != tuple(sorted(consultation.backup_pins)):
            found.append(_("its recorded backup keys differ from those its creation recorded "
                           "in the audit log"))
    if len(consultation.backups) != consultation.backup_count:
        found.append(_("it records {count} backup key(s), its creation recorded {backup_count}")
                     .format(count=len(consultation.backups),
                             backup_count=consultation.backup_count))
    roles = [(_("bound key"), consultation.key, consultation.key_pin)] + [
        (_("backup key"), row, pin)
        for row, pin in zip(consultation.backups, consultation.backup_pins, strict=True)]
    for role, row, pin in roles:
        cert = row.certificate
        if row.public_key_sha256 != pin:
            found.append(_("{role} {designation!r} is not the key pair pinned at creation")
                         .format(role=role, designation=row.designation))
        elif cert is None:
            found.append(_("{role} {designation!r} has no certificate")
                         .format(role=role, designation=row.designation))
        elif keyalg.public_key_sha256(cert.public_key()) != pin:
            found.append(_("the certificate of {role} {designation!r} holds another public "
                           "key than the one pinned at creation")
                         .format(role=role, designation=row.designation))
    return found
