"""The hash-chained audit log.

Row n holds hash_n = SHA-256(hash_{n-1} || canonical JSON of row n's fields), with
hash_0 = 64 zeros; the single `audit_head` row holds the last seq and hash. An
append locks the head row (SELECT … FOR UPDATE on PostgreSQL; SQLite writers already
hold the database's write lock), so seq numbers never fork. Details are JSON facts:
names, digests, counts. Never a PIN, passphrase or plaintext.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys.registry.schema import GENESIS, audit, audit_head

EVENTS = frozenset({
    "generate", "adopt", "delete", "renew", "share-export", "share-import", "share-copy",
    "consultation-create", "consultation-close", "consultation-pin", "open-start", "open",
    "service-create", "certificate",
})
FORBIDDEN_DETAIL_WORDS = ("pin", "passphrase", "password", "plaintext", "secret")


@dataclass(frozen=True)
class AuditRow:
    seq: int
    at: str
    actor: str
    host: str
    event: str
    service: str | None
    subject: str | None
    details: str
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["details"] = json.loads(self.details)
        return out


def now_text(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def actor() -> str:
    """The OS user running tokenkeys (not an authentication, a record)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def chain_hash(prev_hash: str, seq: int, at: str, who: str, host: str, event: str,
               service: str | None, subject: str | None, details: str) -> str:
    body = json.dumps([seq, at, who, host, event, service, subject, details],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(prev_hash.encode("ascii") + body.encode("utf-8")).hexdigest()


def _check_details(details: Mapping[str, Any]) -> str:
    for key in details:
        if any(word in key.lower() for word in FORBIDDEN_DETAIL_WORDS):
            raise ValueError(f"audit details may not carry {key!r}")
    return json.dumps(details, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)


def append(conn: Connection, event: str, *, service: str | None = None,
           subject: str | None = None, details: Mapping[str, Any] | None = None) -> AuditRow:
    """Append one row inside the caller's (write) transaction."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    text = _check_details(details or {})
    head = conn.execute(
        sa.select(audit_head.c.seq, audit_head.c.hash)
        .where(audit_head.c.id == 1).with_for_update()
    ).one()
    seq, at, who, host = head.seq + 1, now_text(), actor(), socket.gethostname()
    digest = chain_hash(head.hash, seq, at, who, host, event, service, subject, text)
    row = AuditRow(seq, at, who, host, event, service, subject, text, head.hash, digest)
    conn.execute(audit.insert().values(**asdict(row)))
    conn.execute(audit_head.update().where(audit_head.c.id == 1)
                 .values(seq=seq, hash=digest))
    return row


def rows(conn: Connection, *, limit: int | None = None, event: str | None = None,
         service: str | None = None) -> list[AuditRow]:
    query = sa.select(audit).order_by(audit.c.seq.desc() if limit else audit.c.seq)
    if event:
        query = query.where(audit.c.event == event)
    if service:
        query = query.where(audit.c.service == service)
    if limit:
        query = query.limit(limit)
    found = [AuditRow(**r._asdict()) for r in conn.execute(query)]
    return sorted(found, key=lambda r: r.seq)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    problems: tuple[str, ...]
    consultations: tuple[str, ...] = ()  # those that differ: "'REF' (service 'S')"


def verify(conn: Connection) -> Verdict:
    """Walk the chain from the start; report every break (edited, missing, reordered row)."""
    problems: list[str] = []
    expected_prev, expected_seq, count = GENESIS, 1, 0
    for r in conn.execute(sa.select(audit).order_by(audit.c.seq)):
        count += 1
        if r.seq != expected_seq:
            problems.append(f"row {r.seq}: expected row {expected_seq} here "
                            "(a row was deleted or renumbered)")
        if r.prev_hash != expected_prev:
            problems.append(f"row {r.seq}: does not follow the previous row "
                            "(a row was deleted, reordered or edited)")
        recomputed = chain_hash(r.prev_hash, r.seq, r.at, r.actor, r.host, r.event,
                                r.service, r.subject, r.details)
        if recomputed != r.hash:
            problems.append(f"row {r.seq}: content does not match its hash (edited)")
        expected_prev, expected_seq = r.hash, r.seq + 1
    head = conn.execute(sa.select(audit_head).where(audit_head.c.id == 1)).one_or_none()
    if head is None:
        problems.append("the chain head is missing")
    elif head.seq != expected_seq - 1 or head.hash != expected_prev:
        problems.append(f"the chain head says row {head.seq} is last, but the log ends at "
                        f"row {expected_seq - 1} (rows deleted at the end, or head edited)")
    return Verdict(not problems, count, tuple(problems))
