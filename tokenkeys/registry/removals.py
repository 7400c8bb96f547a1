"""Forgetting keys: one copy of a key pair (a token and CKA_ID), its undoing when the
token refuses, and whole key rows. Each runs inside the caller's transaction, after
its guard has agreed, and appends its audit rows there."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys.errors import KeyNotFound
from tokenkeys.i18n import _
from tokenkeys.registry import audit as audit_log
from tokenkeys.registry.audit import now_text
from tokenkeys.registry.key_rows import add_location, live_key, live_keys_of, open_refs_of
from tokenkeys.registry.records import KeyLocation, KeyRow
from tokenkeys.registry.schema import key_locations as kl
from tokenkeys.registry.schema import keys as ks
from tokenkeys.registry.service_rows import service_id


@dataclass(frozen=True)
class Removal:
    """What deleting one copy of a key pair (a token and CKA_ID) would change: the live
    rows of that key pair, the locations that go, those that stay, and the open
    consultations pinned to it. `known`: the registry has ever recorded the key pair."""

    public_key_sha256: str
    rows: tuple[KeyRow, ...]
    here: tuple[tuple[int, KeyLocation], ...]  # (key row id, location)
    remaining: tuple[KeyLocation, ...]
    bound_to: tuple[str, ...]
    known: bool
    deleted_rows: tuple[int, ...] = ()


def remove_location(c: Connection, public_key_sha256: str, token_uri: str, ckaid: str,
                    guard: Callable[[Removal], None], *, subject: str) -> Removal:
    """Registry.remove_location's transaction."""
    rows = live_keys_of(c, public_key_sha256)
    here = tuple((r.id, loc) for r in rows for loc in r.located_on(token_uri)
                 if loc.ckaid == ckaid)
    gone = {loc for _, loc in here}
    known = bool(rows) or c.execute(sa.select(ks.c.id).where(
        ks.c.public_key_sha256 == public_key_sha256).limit(1)).first() is not None
    removal = Removal(
        public_key_sha256, tuple(rows), here,
        tuple(loc for r in rows for loc in r.locations if loc not in gone),
        tuple(open_refs_of(c, [public_key_sha256]).get(public_key_sha256, ())), known)
    guard(removal)
    at = now_text()
    deleted = []
    for key_id, loc in here:
        c.execute(kl.update().where(kl.c.key_id == key_id, kl.c.token_uri == loc.token_uri,
                                    kl.c.ckaid == loc.ckaid, kl.c.deleted_at.is_(None))
                  .values(deleted_at=at))
    for row in rows:
        if row.locations and all(loc in gone for loc in row.locations):
            c.execute(ks.update().where(ks.c.id == row.id).values(deleted_at=at))
            deleted.append(row.id)
    services: list[str | None] = [*sorted({r.service for r in rows})] or [None]
    for service in services:
        audit_log.append(c, "delete", service=service, subject=subject, details={
            "public_key": public_key_sha256, "token": token_uri, "ckaid": ckaid,
            "registered": bool(here), "rows_deleted": [
                r.designation for r in rows if r.id in deleted and r.service == service]})
    return dataclasses.replace(removal, deleted_rows=tuple(deleted))


def restore_location(c: Connection, removal: Removal, reason: str) -> None:
    """Registry.restore_location's transaction."""
    for key_id, loc in removal.here:
        add_location(c, key_id, loc.token_uri, loc.ckaid)
    for key_id in removal.deleted_rows:
        c.execute(ks.update().where(ks.c.id == key_id).values(deleted_at=None))
    audit_log.append(c, "delete", subject=None, details={
        "public_key": removal.public_key_sha256, "undone": reason})


def mark_deleted(c: Connection, keys: Sequence[tuple[str, str]],
                 guard: Callable[[KeyRow], None]) -> list[KeyRow]:
    """Registry.mark_deleted's transaction."""
    marked = []
    at = now_text()
    for service, designation in keys:
        row = live_key(c, service_id(c, service), designation)
        if row is None:
            raise KeyNotFound(_("no key named {designation!r} in service {service!r}")
                              .format(designation=designation, service=service))
        guard(row)
        c.execute(ks.update().where(ks.c.id == row.id).values(deleted_at=at))
        c.execute(kl.update().where(kl.c.key_id == row.id, kl.c.deleted_at.is_(None))
                  .values(deleted_at=at))
        audit_log.append(c, "delete", service=service, subject=designation, details={
            "public_key": row.public_key_sha256, "fingerprint": row.fingerprint})
        marked.append(row)
    return marked
