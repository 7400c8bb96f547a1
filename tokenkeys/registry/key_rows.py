"""Reading key rows with their locations and the open consultations pinned to them,
and adding a location (one more copy of a key pair)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys.registry import audit as audit_log
from tokenkeys.registry.audit import now_text
from tokenkeys.registry.records import KeyLocation, KeyRow
from tokenkeys.registry.schema import consultation_backups as cb
from tokenkeys.registry.schema import consultations as cs
from tokenkeys.registry.schema import key_locations as kl
from tokenkeys.registry.schema import keys as ks
from tokenkeys.registry.schema import services as sv

KEY_COLUMNS = [c for c in ks.c if c.name != "service_id"]
BATCH = 500  # values per IN (...): well below SQLite's bound-parameter limit


def key_query() -> sa.Select[Any]:
    return sa.select(*KEY_COLUMNS, sv.c.name.label("service")).join(sv, sv.c.id == ks.c.service_id)


def _batches(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), BATCH):
        yield values[start:start + BATCH]


def open_refs_of(c: Connection, public_keys: Sequence[str]) -> dict[str, list[str]]:
    """Open consultations that pinned each public key, as bound key or recorded backup:
    a key pair's bindings, whatever its designation, service or token."""
    refs: dict[str, set[str]] = {}
    for pins in _batches(sorted(set(public_keys))):
        bound = sa.select(cs.c.key_public_key_sha256, cs.c.reference).where(
            cs.c.key_public_key_sha256.in_(pins), cs.c.status == "open")
        backed = (sa.select(cb.c.public_key_sha256, cs.c.reference)
                  .join(cb, cb.c.consultation_id == cs.c.id)
                  .where(cb.c.public_key_sha256.in_(pins), cs.c.status == "open"))
        for pin, reference in c.execute(bound.union(backed)):
            refs.setdefault(pin, set()).add(reference)
    return {pin: sorted(found) for pin, found in refs.items()}


def locations_of(c: Connection, key_ids: Sequence[int], *, live_only: bool = True
                 ) -> dict[int, list[KeyLocation]]:
    found: dict[int, list[KeyLocation]] = {}
    for ids in _batches(key_ids):
        query = sa.select(kl).where(kl.c.key_id.in_(ids)).order_by(kl.c.id)
        if live_only:
            query = query.where(kl.c.deleted_at.is_(None))
        for r in c.execute(query):
            found.setdefault(r.key_id, []).append(KeyLocation(
                token_uri=r.token_uri, ckaid=r.ckaid, created_at=r.created_at,
                deleted_at=r.deleted_at))
    return found


def load_keys(c: Connection, query: sa.Select[Any]) -> list[KeyRow]:
    """Rows of `query` (built on key_query) with locations (a deleted row: all it had,
    a live row: its live ones) and open consultations, in a few queries."""
    rows = c.execute(query).all()
    refs = open_refs_of(c, [r.public_key_sha256 for r in rows])
    live = locations_of(c, [r.id for r in rows if r.deleted_at is None])
    every = locations_of(c, [r.id for r in rows if r.deleted_at is not None], live_only=False)
    out = []
    for r in rows:
        data = dict(r._mapping)
        data["envelope_kinds"] = tuple(k for k in data["envelope_kinds"].split(",") if k)
        data["backup"], data["shareable"] = bool(data["backup"]), bool(data["shareable"])
        if data["cert_der"] is not None:
            data["cert_der"] = bytes(data["cert_der"])
        out.append(KeyRow(**data, open_consultations=tuple(refs.get(r.public_key_sha256, ())),
                          locations=tuple(live.get(r.id) or every.get(r.id) or ())))
    return out


def key_by_id(c: Connection, key_id: int) -> KeyRow:
    [row] = load_keys(c, key_query().where(ks.c.id == key_id))
    return row


def live_key(c: Connection, service_id: int, designation: str) -> KeyRow | None:
    found = load_keys(c, key_query().where(ks.c.service_id == service_id,
                                           ks.c.designation == designation,
                                           ks.c.deleted_at.is_(None)))
    return found[0] if found else None


def live_keys_of(c: Connection, public_key_sha256: str) -> list[KeyRow]:
    """Every live row of a key pair, in any service."""
    return live_keys_by_public_key(c, [public_key_sha256]).get(public_key_sha256, [])


def live_keys_by_public_key(c: Connection, public_keys: Sequence[str]
                            ) -> dict[str, list[KeyRow]]:
    """live_keys_of for many key pairs, in a few queries."""
    found: dict[str, list[KeyRow]] = {}
    for pins in _batches(sorted(set(public_keys))):
        for row in load_keys(c, key_query().where(ks.c.public_key_sha256.in_(pins),
                                                  ks.c.deleted_at.is_(None)).order_by(ks.c.id)):
            found.setdefault(row.public_key_sha256, []).append(row)
    return found


def successors(c: Connection, key_id: int) -> list[KeyRow]:
    """The live rows that replace the key row `key_id` (its renewals)."""
    return load_keys(c, key_query().where(ks.c.replaces_id == key_id,
                                          ks.c.deleted_at.is_(None)).order_by(ks.c.id))


def backups_in_force(c: Connection, sid: int, at: str | None) -> list[KeyRow]:
    """Live, certified, unexpired backup keys of the service that no live renewal
    has replaced."""
    successor = sa.select(ks.c.replaces_id).where(ks.c.replaces_id.is_not(None),
                                                  ks.c.deleted_at.is_(None))
    return load_keys(c, key_query().where(
        ks.c.service_id == sid, ks.c.backup.is_(True), ks.c.deleted_at.is_(None),
        ks.c.not_after > (at or now_text()), ks.c.id.not_in(successor),
    ).order_by(ks.c.designation))


def add_location(c: Connection, key_id: int, token_uri: str, ckaid: str) -> None:
    c.execute(kl.insert().values(key_id=key_id, token_uri=token_uri, ckaid=ckaid,
                                 created_at=now_text(), created_by=audit_log.actor()))
