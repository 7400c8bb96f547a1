"""The repository: every read and write the services need, each in one short transaction.

Write methods take the policy checks as a callback that runs inside the same
transaction, so a rule and the change it allows can never be split by another
process. Every write appends its audit row in that transaction too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys.errors import (
    ConsultationNotFound,
    KeyExists,
    KeyNotFound,
    PolicyRefused,
    ServiceNotFound,
    UsageError,
)
from tokenkeys.registry import audit as audit_log
from tokenkeys.registry.audit import now_text
from tokenkeys.registry.db import Database
from tokenkeys.registry.location import parse_location
from tokenkeys.registry.records import Consultation, KeyFacts, KeyRow, ServiceRow
from tokenkeys.registry.schema import consultation_backups as cb
from tokenkeys.registry.schema import consultations as cs
from tokenkeys.registry.schema import keys as ks
from tokenkeys.registry.schema import services as sv

DEFAULT_SERVICE = "default"
KEY_COLUMNS = [c for c in ks.c if c.name != "service_id"]
REFS_BATCH = 500  # keys per IN (...): well below SQLite's bound-parameter limit
BindingCheck = Callable[[KeyRow, Sequence[KeyRow]], None]


def _key(row: Any, open_refs: Sequence[str] = ()) -> KeyRow:
    data = dict(row._mapping)
    data["envelope_kinds"] = tuple(k for k in data["envelope_kinds"].split(",") if k)
    data["backup"], data["shareable"] = bool(data["backup"]), bool(data["shareable"])
    return KeyRow(**data, open_consultations=tuple(open_refs))


def _insert(c: Connection, statement: sa.Insert) -> int:
    key = c.execute(statement).inserted_primary_key
    assert key is not None
    return int(key[0])


def _key_query() -> sa.Select[Any]:
    return sa.select(*KEY_COLUMNS, sv.c.name.label("service")).join(sv, sv.c.id == ks.c.service_id)


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, location: str) -> Registry:
        return cls(Database(parse_location(location)))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- services -----------------------------------------------------------------
    def services(self) -> list[ServiceRow]:
        def run(c: Connection) -> list[ServiceRow]:
            self._ensure_default(c)
            return [ServiceRow(**r._mapping) for r in c.execute(sa.select(sv).order_by(sv.c.name))]
        return self.db.transaction(run)

    def create_service(self, name: str) -> ServiceRow:
        if not name.strip() or len(name) > 200:
            raise UsageError("a service name must be 1 to 200 characters")

        def run(c: Connection) -> ServiceRow:
            if c.execute(sa.select(sv.c.id).where(sv.c.name == name)).first():
                raise UsageError(f"service {name!r} already exists")
            values = {"name": name, "created_at": now_text(), "created_by": audit_log.actor()}
            new_id = _insert(c, sv.insert().values(**values))
            audit_log.append(c, "service-create", service=name, subject=name)
            return ServiceRow(id=new_id, **values)
        return self.db.transaction(run)

    def _ensure_default(self, c: Connection) -> None:
        # The `default` service exists without asking; others are created explicitly.
        if not c.execute(sa.select(sv.c.id).where(sv.c.name == DEFAULT_SERVICE)).first():
            c.execute(sv.insert().values(name=DEFAULT_SERVICE, created_at=now_text(),
                                         created_by=audit_log.actor()))

    def _service_id(self, c: Connection, name: str) -> int:
        if name == DEFAULT_SERVICE:
            self._ensure_default(c)
        found = c.execute(sa.select(sv.c.id).where(sv.c.name == name)).scalar()
        if found is None:
            raise ServiceNotFound(f"unknown service {name!r} (see `tokenkeys service list`)")
        return int(found)

    # -- keys ---------------------------------------------------------------------
    def add_key(self, service: str, facts: KeyFacts, event: str,
                details: Mapping[str, Any] | None = None) -> KeyRow:
        """Record a key generated, adopted or renewed on a token (with its audit row)."""

        def run(c: Connection) -> KeyRow:
            sid = self._service_id(c, service)
            if self._live_key(c, sid, facts.designation) is not None:
                raise KeyExists(f"a key named {facts.designation!r} already exists in "
                                f"service {service!r} of the registry")
            values = {**facts.row(), "service_id": sid, "created_at": now_text(),
                      "created_by": audit_log.actor()}
            new_id = _insert(c, ks.insert().values(**values))
            row = self._key_by_id(c, new_id)
            audit_log.append(c, event, service=service, subject=facts.designation, details={
                "fingerprint": row.fingerprint, "token": row.token_uri, "ckaid": row.ckaid,
                "backup": row.backup, "not_after": row.not_after, **(details or {})})
            return row
        return self.db.transaction(run)

    def _live_key(self, c: Connection, sid: int, designation: str) -> KeyRow | None:
        row = c.execute(_key_query().where(ks.c.service_id == sid,
                                           ks.c.designation == designation,
                                           ks.c.deleted_at.is_(None))).first()
        return None if row is None else _key(row, self._open_refs(c, row.id))

    def _key_by_id(self, c: Connection, key_id: int) -> KeyRow:
        return _key(c.execute(_key_query().where(ks.c.id == key_id)).one(),
                    self._open_refs(c, key_id))

    def _open_refs(self, c: Connection, key_id: int) -> list[str]:
        """Open consultations bound to the key, or that recorded it as a backup."""
        return self._open_refs_of(c, [key_id]).get(key_id, [])

    def _open_refs_of(self, c: Connection, key_ids: Sequence[int]) -> dict[int, list[str]]:
        """_open_refs of many keys, a query per REFS_BATCH keys instead of one per key."""
        refs: dict[int, set[str]] = {}
        for start in range(0, len(key_ids), REFS_BATCH):
            ids = key_ids[start:start + REFS_BATCH]
            bound = sa.select(cs.c.key_id, cs.c.reference).where(
                cs.c.key_id.in_(ids), cs.c.status == "open")
            backed = (sa.select(cb.c.key_id, cs.c.reference)
                      .join(cb, cb.c.consultation_id == cs.c.id)
                      .where(cb.c.key_id.in_(ids), cs.c.status == "open"))
            for key_id, reference in c.execute(bound.union(backed)):
                refs.setdefault(key_id, set()).add(reference)
        return {key_id: sorted(found) for key_id, found in refs.items()}

    def _keys(self, c: Connection, query: sa.Select[Any]) -> list[KeyRow]:
        rows = c.execute(query).all()
        refs = self._open_refs_of(c, [r.id for r in rows])
        return [_key(r, refs.get(r.id, ())) for r in rows]

    def key(self, service: str, designation: str) -> KeyRow:
        def run(c: Connection) -> KeyRow:
            found = self._live_key(c, self._service_id(c, service), designation)
            if found is None:
                raise KeyNotFound(f"no key named {designation!r} in service {service!r} "
                                  "of the registry")
            return found
        return self.db.transaction(run, write=False)

    def keys(self, service: str | None = None, *, include_deleted: bool = False) -> list[KeyRow]:
        def run(c: Connection) -> list[KeyRow]:
            query = _key_query().order_by(sv.c.name, ks.c.designation, ks.c.id)
            if service is not None:
                query = query.where(ks.c.service_id == self._service_id(c, service))
            if not include_deleted:
                query = query.where(ks.c.deleted_at.is_(None))
            return self._keys(c, query)
        # `default` may be created on the way: a write transaction then.
        return self.db.transaction(run, write=service == DEFAULT_SERVICE)

    def keys_by_fingerprint(self, fingerprint: str) -> list[KeyRow]:
        """Every registry row (any service, deleted too) for a certificate's SHA-256."""
        def run(c: Connection) -> list[KeyRow]:
            query = _key_query().where(ks.c.fingerprint == fingerprint.lower().replace(":", ""))
            return self._keys(c, query)
        return self.db.transaction(run, write=False)

    def backups_in_force(self, service: str, at: str | None = None) -> list[KeyRow]:
        return self.db.transaction(lambda c: self._backups(c, self._service_id(c, service), at))

    def _backups(self, c: Connection, sid: int, at: str | None) -> list[KeyRow]:
        """Live, unexpired backup keys of the service that no live renewal has replaced."""
        successor = sa.select(ks.c.replaces_id).where(ks.c.replaces_id.is_not(None),
                                                      ks.c.deleted_at.is_(None))
        query = _key_query().where(
            ks.c.service_id == sid, ks.c.backup.is_(True), ks.c.deleted_at.is_(None),
            ks.c.not_after > (at or now_text()), ks.c.id.not_in(successor),
        ).order_by(ks.c.designation)
        return [_key(r) for r in c.execute(query)]

    def mark_deleted(self, keys: Sequence[tuple[str, str]],
                     guard: Callable[[KeyRow], None]) -> list[KeyRow]:
        """Check `guard` on each (service, designation) and mark them all deleted, in one
        transaction: one refusal leaves none marked (the rows stay)."""

        def run(c: Connection) -> list[KeyRow]:
            marked = []
            for service, designation in keys:
                row = self._live_key(c, self._service_id(c, service), designation)
                if row is None:
                    raise KeyNotFound(f"no key named {designation!r} in service {service!r}")
                guard(row)
                c.execute(ks.update().where(ks.c.id == row.id).values(deleted_at=now_text()))
                audit_log.append(c, "delete", service=service, subject=designation, details={
                    "fingerprint": row.fingerprint, "token": row.token_uri,
                    "ckaid": row.ckaid})
                marked.append(row)
            return marked
        return self.db.transaction(run)

    def unmark_deleted(self, rows: Sequence[KeyRow], reason: str) -> None:
        """Undo mark_deleted when the token refused the deletion (audited)."""
        def run(c: Connection) -> None:
            for row in rows:
                c.execute(ks.update().where(ks.c.id == row.id).values(deleted_at=None))
                audit_log.append(c, "delete", service=row.service, subject=row.designation,
                                 details={"fingerprint": row.fingerprint, "undone": reason})
        self.db.transaction(run)

    # -- consultations ------------------------------------------------------------
    def create_consultation(self, service: str, reference: str, key_designation: str, *,
                            title: str | None, closes_at: str | None,
                            check: BindingCheck, details: Mapping[str, Any]) -> Consultation:
        """Bind a new consultation to a key and the backups in force. Never rebinds."""

        def run(c: Connection) -> Consultation:
            sid = self._service_id(c, service)
            existing = c.execute(sa.select(cs.c.id).where(
                cs.c.service_id == sid, cs.c.reference == reference)).scalar()
            if existing is not None:
                old = self._consultation(c, int(existing))
                raise PolicyRefused(
                    f"consultation {reference!r} already exists in service {service!r}, bound "
                    f"to key {old.key.designation!r}: a binding is never changed")
            key = self._live_key(c, sid, key_designation)
            if key is None:
                raise KeyNotFound(f"no key named {key_designation!r} in service {service!r}")
            backups = self._backups(c, sid, None)
            check(key, backups)
            new_id = _insert(c, cs.insert().values(
                service_id=sid, reference=reference, title=title, closes_at=closes_at,
                status="open", key_id=key.id, created_at=now_text(),
                created_by=audit_log.actor()))
            for b in backups:
                c.execute(cb.insert().values(consultation_id=new_id, key_id=b.id))
            audit_log.append(c, "consultation-create", service=service, subject=reference,
                             details={"key": key.designation, "key_fingerprint": key.fingerprint,
                                      "backups": [b.fingerprint for b in backups],
                                      "closes_at": closes_at, **details})
            return self._consultation(c, new_id)
        return self.db.transaction(run)

    def close_consultation(self, service: str, reference: str) -> Consultation:
        def run(c: Connection) -> Consultation:
            found = self._find_consultation(c, service, reference)
            if found.status == "closed":
                raise PolicyRefused(f"consultation {reference!r} is already closed")
            c.execute(cs.update().where(cs.c.id == found.id)
                      .values(status="closed", closed_at=now_text()))
            audit_log.append(c, "consultation-close", service=service, subject=reference,
                             details={"key": found.key.designation})
            return self._consultation(c, found.id)
        return self.db.transaction(run)

    def consultation(self, service: str, reference: str) -> Consultation:
        return self.db.transaction(lambda c: self._find_consultation(c, service, reference),
                                   write=False)

    def consultations(self, service: str, status: str | None = None) -> list[Consultation]:
        def run(c: Connection) -> list[Consultation]:
            query = sa.select(cs.c.id).where(cs.c.service_id == self._service_id(c, service))
            if status:
                query = query.where(cs.c.status == status)
            return [self._consultation(c, r[0]) for r in c.execute(query.order_by(cs.c.id))]
        return self.db.transaction(run, write=service == DEFAULT_SERVICE)

    def all_open_consultations(self) -> list[Consultation]:
        def run(c: Connection) -> list[Consultation]:
            query = sa.select(cs.c.id).where(cs.c.status == "open").order_by(cs.c.id)
            return [self._consultation(c, r[0]) for r in c.execute(query)]
        return self.db.transaction(run, write=False)

    def _find_consultation(self, c: Connection, service: str, reference: str) -> Consultation:
        found = c.execute(sa.select(cs.c.id).where(
            cs.c.service_id == self._service_id(c, service),
            cs.c.reference == reference)).scalar()
        if found is None:
            raise ConsultationNotFound(
                f"unknown consultation {reference!r} in service {service!r}")
        return self._consultation(c, int(found))

    def _consultation(self, c: Connection, cid: int) -> Consultation:
        row = c.execute(sa.select(cs, sv.c.name.label("service_name"))
                        .join(sv, sv.c.id == cs.c.service_id).where(cs.c.id == cid)).one()
        backup_ids = [r[0] for r in c.execute(
            sa.select(cb.c.key_id).where(cb.c.consultation_id == cid).order_by(cb.c.key_id))]
        return Consultation(
            id=row.id, service=row.service_name, reference=row.reference, title=row.title,
            closes_at=row.closes_at, status=row.status, key=self._key_by_id(c, row.key_id),
            backups=tuple(self._key_by_id(c, k) for k in backup_ids),
            created_at=row.created_at, created_by=row.created_by, closed_at=row.closed_at)

    # -- audit --------------------------------------------------------------------
    def record_event(self, event: str, *, service: str | None = None,
                     subject: str | None = None,
                     details: Mapping[str, Any] | None = None) -> audit_log.AuditRow:
        """Append one audit row in its own transaction (public: sharing, open batches)."""
        return self.db.transaction(lambda c: audit_log.append(
            c, event, service=service, subject=subject, details=details))

    def audit_rows(self, *, limit: int | None = None, event: str | None = None,
                   service: str | None = None) -> list[audit_log.AuditRow]:
        return self.db.transaction(
            lambda c: audit_log.rows(c, limit=limit, event=event, service=service), write=False)

    def verify_audit(self) -> audit_log.Verdict:
        return self.db.transaction(audit_log.verify, write=False)
