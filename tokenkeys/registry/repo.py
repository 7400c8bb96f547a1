"""The repository: every read and write the services need, each in one short transaction.

Write methods take the policy checks as a callback that runs inside the same
transaction, so a rule and the change it allows can never be split by another
process. Every write appends its audit row in that transaction too. The longer
transactions live beside it: removals (forgetting keys), consultation_rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys import keyalg
from tokenkeys.errors import CertificateRefused, KeyExists, KeyNotFound, UsageError
from tokenkeys.i18n import _
from tokenkeys.registry import audit as audit_log
from tokenkeys.registry import consultation_rows, removals
from tokenkeys.registry.audit import now_text
from tokenkeys.registry.bindings import load_consultation
from tokenkeys.registry.consultation_rows import BindingCheck
from tokenkeys.registry.db import Database
from tokenkeys.registry.key_rows import (
    add_location,
    backups_in_force,
    key_by_id,
    key_query,
    live_key,
    live_keys_by_public_key,
    live_keys_of,
    load_keys,
    successors,
)
from tokenkeys.registry.location import parse_location
from tokenkeys.registry.records import (
    Consultation,
    KeyFacts,
    KeyRow,
    ServiceRow,
    certificate_columns,
)
from tokenkeys.registry.removals import Removal
from tokenkeys.registry.schema import audit as audit_table
from tokenkeys.registry.schema import consultations as cs
from tokenkeys.registry.schema import keys as ks
from tokenkeys.registry.schema import services as sv
from tokenkeys.registry.service_rows import (
    DEFAULT_SERVICE,
    ensure_default,
    insert_row,
    service_id,
)

__all__ = ["DEFAULT_SERVICE", "BindingCheck", "Registry", "Removal"]


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
            ensure_default(c)
            return [ServiceRow(**r._mapping) for r in c.execute(sa.select(sv).order_by(sv.c.name))]
        return self.db.transaction(run)

    def service(self, name: str) -> ServiceRow:
        """The service, or ServiceNotFound (`default` is created on the way)."""
        def run(c: Connection) -> ServiceRow:
            sid = service_id(c, name)
            return ServiceRow(**c.execute(sa.select(sv).where(sv.c.id == sid)).one()._mapping)
        return self.db.transaction(run, write=name == DEFAULT_SERVICE)

    def create_service(self, name: str) -> ServiceRow:
        if not name.strip() or len(name) > 200:
            raise UsageError(_("a service name must be 1 to 200 characters"))

        def run(c: Connection) -> ServiceRow:
            if c.execute(sa.select(sv.c.id).where(sv.c.name == name)).first():
                raise UsageError(_("service {name!r} already exists").format(name=name))
            values = {"name": name, "created_at": now_text(), "created_by": audit_log.actor()}
            new_id = insert_row(c, sv.insert().values(**values))
            audit_log.append(c, "service-create", service=name, subject=name)
            return ServiceRow(id=new_id, **values)
        return self.db.transaction(run)

    # -- keys ---------------------------------------------------------------------
    def add_key(self, service: str, facts: KeyFacts, event: str,
                details: Mapping[str, Any] | None = None, *,
                successors_check: Callable[[Sequence[KeyRow]], None] | None = None
                ) -> KeyRow:
        """Record a key generated, adopted, renewed or imported on a token (with its audit
        row). A designation the service already gives the same key pair gains a
        location (one more copy); given to another key pair, it is refused. A renewal
        (facts.replaces_id) first shows `successors_check` the live rows that already
        replace the same key, in the same transaction."""

        def run(c: Connection) -> KeyRow:
            sid = service_id(c, service)
            if successors_check is not None and facts.replaces_id is not None:
                successors_check(successors(c, facts.replaces_id))
            existing = live_key(c, sid, facts.designation)
            if existing is not None and existing.public_key_sha256 != facts.public_key_sha256:
                raise KeyExists(_("a key named {designation!r} already exists in service "
                                  "{service!r} of the registry")
                                .format(designation=facts.designation, service=service))
            if existing is not None:
                key_id = existing.id
                if existing.awaiting_certificate and facts.certificate is not None:
                    c.execute(ks.update().where(ks.c.id == key_id).values(
                        **certificate_columns(facts.certificate)))
                if not any(loc.ckaid == facts.ckaid for loc in existing.located_on(
                        facts.token_uri)):
                    add_location(c, key_id, facts.token_uri, facts.ckaid)
            else:
                key_id = insert_row(c, ks.insert().values(
                    **facts.row(), service_id=sid, created_at=now_text(),
                    created_by=audit_log.actor()))
                add_location(c, key_id, facts.token_uri, facts.ckaid)
            row = key_by_id(c, key_id)
            audit_log.append(c, event, service=service, subject=facts.designation, details={
                "public_key": row.public_key_sha256, "fingerprint": row.fingerprint,
                "token": facts.token_uri, "ckaid": facts.ckaid, "backup": row.backup,
                "not_after": row.not_after, **({"copy": True} if existing else {}),
                **(details or {})})
            return row
        return self.db.transaction(run)

    def set_certificate(self, public_key_sha256: str, cert: Any, event: str,
                        details: Mapping[str, Any] | None = None) -> list[KeyRow]:
        """Make `cert` the current certificate of every live row of the key pair."""
        if keyalg.public_key_sha256(cert.public_key()) != public_key_sha256:
            raise CertificateRefused(_("the certificate is for another key pair"))
        columns = certificate_columns(cert)

        def run(c: Connection) -> list[KeyRow]:
            rows = live_keys_of(c, public_key_sha256)
            for row in rows:
                c.execute(ks.update().where(ks.c.id == row.id).values(**columns))
                audit_log.append(c, event, service=row.service, subject=row.designation,
                                 details={"public_key": public_key_sha256,
                                          "fingerprint": columns["fingerprint"],
                                          "previous_fingerprint": row.fingerprint,
                                          "not_after": columns["not_after"],
                                          **(details or {})})
            return [key_by_id(c, row.id) for row in rows]
        return self.db.transaction(run)

    def key(self, service: str, designation: str) -> KeyRow:
        def run(c: Connection) -> KeyRow:
            found = live_key(c, service_id(c, service), designation)
            if found is None:
                raise KeyNotFound(_("no key named {designation!r} in service {service!r} of "
                                    "the registry")
                                  .format(designation=designation, service=service))
            return found
        return self.db.transaction(run, write=False)

    def keys(self, service: str | None = None, *, include_deleted: bool = False) -> list[KeyRow]:
        def run(c: Connection) -> list[KeyRow]:
            query = key_query().order_by(sv.c.name, ks.c.designation, ks.c.id)
            if service is not None:
                query = query.where(ks.c.service_id == service_id(c, service))
            if not include_deleted:
                query = query.where(ks.c.deleted_at.is_(None))
            return load_keys(c, query)
        # `default` may be created on the way: a write transaction then.
        return self.db.transaction(run, write=service == DEFAULT_SERVICE)

    def successors(self, key_id: int) -> list[KeyRow]:
        """The live rows that replace the key row `key_id` (its renewals)."""
        return self.db.transaction(lambda c: successors(c, key_id), write=False)

    def keys_by_fingerprint(self, fingerprint: str) -> list[KeyRow]:
        """Every registry row (any service, deleted too) for a certificate's SHA-256."""
        def run(c: Connection) -> list[KeyRow]:
            query = key_query().where(ks.c.fingerprint == fingerprint.lower().replace(":", ""))
            return load_keys(c, query)
        return self.db.transaction(run, write=False)

    def keys_by_public_key(self, public_key_sha256: str) -> list[KeyRow]:
        """Every registry row (any service, deleted too) of a key pair."""
        return self.db.transaction(lambda c: load_keys(c, key_query().where(
            ks.c.public_key_sha256 == public_key_sha256).order_by(ks.c.id)), write=False)

    def live_keys_by_public_key(self, public_keys: Sequence[str]) -> dict[str, list[KeyRow]]:
        """The live rows of each key pair (any service), one transaction for them all."""
        return self.db.transaction(lambda c: live_keys_by_public_key(c, public_keys),
                                   write=False)

    def backups_in_force(self, service: str, at: str | None = None) -> list[KeyRow]:
        return self.db.transaction(
            lambda c: backups_in_force(c, service_id(c, service), at))

    def remove_location(self, public_key_sha256: str, token_uri: str, ckaid: str,
                        guard: Callable[[Removal], None], *, subject: str) -> Removal:
        """Forget one copy of a key pair, after `guard` has agreed, in one transaction:
        its location goes, and each row left with no location is marked deleted."""
        return self.db.transaction(lambda c: removals.remove_location(
            c, public_key_sha256, token_uri, ckaid, guard, subject=subject))

    def restore_location(self, removal: Removal, reason: str) -> None:
        """Undo remove_location when the token refused the deletion (audited)."""
        self.db.transaction(lambda c: removals.restore_location(c, removal, reason))

    def mark_deleted(self, keys: Sequence[tuple[str, str]],
                     guard: Callable[[KeyRow], None]) -> list[KeyRow]:
        """Check `guard` on each (service, designation) and mark them all deleted with
        their locations, in one transaction: one refusal leaves none marked."""
        return self.db.transaction(lambda c: removals.mark_deleted(c, keys, guard))

    # -- consultations ------------------------------------------------------------
    def create_consultation(self, service: str, reference: str, key_designation: str, *,
                            title: str | None, closes_at: str | None,
                            check: BindingCheck, details: Mapping[str, Any]) -> Consultation:
        """Bind a new consultation to a key and the backups in force. Never rebinds."""
        return self.db.transaction(lambda c: consultation_rows.create(
            c, service, reference, key_designation, title=title, closes_at=closes_at,
            check=check, details=details))

    def close_consultation(self, service: str, reference: str) -> Consultation:
        return self.db.transaction(lambda c: consultation_rows.close(c, service, reference))

    def consultation(self, service: str, reference: str) -> Consultation:
        return self.db.transaction(lambda c: consultation_rows.find(c, service, reference),
                                   write=False)

    def consultations(self, service: str, status: str | None = None) -> list[Consultation]:
        def run(c: Connection) -> list[Consultation]:
            query = sa.select(cs.c.id).where(cs.c.service_id == service_id(c, service))
            if status:
                query = query.where(cs.c.status == status)
            return [load_consultation(c, r[0]) for r in c.execute(query.order_by(cs.c.id))]
        return self.db.transaction(run, write=service == DEFAULT_SERVICE)

    def all_open_consultations(self) -> list[Consultation]:
        def run(c: Connection) -> list[Consultation]:
            query = sa.select(cs.c.id).where(cs.c.status == "open").order_by(cs.c.id)
            return [load_consultation(c, r[0]) for r in c.execute(query)]
        return self.db.transaction(run, write=False)

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
        """The chain, then every consultation against its pins and its creation's row."""
        def run(c: Connection) -> audit_log.Verdict:
            verdict = audit_log.verify(c)
            named, problems = consultation_rows.problems(c)
            return dataclasses.replace(verdict, ok=verdict.ok and not problems,
                                       problems=verdict.problems + tuple(problems),
                                       consultations=tuple(named))
        return self.db.transaction(run, write=False)

    def audit_state(self, marks: Collection[int] = ()) -> audit_log.ChainState:
        """The chain recomputed from its content (audit.recompute), for checkpoints."""
        return self.db.transaction(lambda c: audit_log.recompute(c, marks), write=False)

    def audit_first_hash(self) -> str | None:
        """Row 1's stored hash: which chain this is (a checkpoint names it)."""
        return self.db.transaction(lambda c: c.execute(
            sa.select(audit_table.c.hash).where(audit_table.c.seq == 1)
        ).scalar(), write=False)

    def consultation_problems(self) -> list[str]:
        """Every consultation that disagrees with its pins or its creation's audit row,
        one line per problem (what `audit verify` adds to the chain's check)."""
        return self.db.transaction(lambda c: consultation_rows.problems(c)[1], write=False)

