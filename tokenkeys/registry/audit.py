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
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys.i18n import _
from tokenkeys.registry.schema import GENESIS, audit, audit_head

EVENTS = frozenset({
    "generate", "adopt", "delete", "renew", "share-export", "share-import", "share-copy",
    "consultation-create", "consultation-close", "consultation-pin", "open-start", "open",
    "service-create", "certificate", "checkpoint",
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
            raise ValueError(_("audit details may not carry {key!r}").format(key=key))
    return json.dumps(details, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)


def append(conn: Connection, event: str, *, service: str | None = None,
           subject: str | None = None, details: Mapping[str, Any] | None = None) -> AuditRow:
    """Append one row inside the caller's (write) transaction."""
    if event not in EVENTS:
        raise ValueError(_("unknown audit event {event!r}").format(event=event))
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
            problems.append(_("row {seq}: expected row {expected_seq} here (a row was "
                              "deleted or renumbered)")
                            .format(seq=r.seq, expected_seq=expected_seq))
        if r.prev_hash != expected_prev:
            problems.append(_("row {seq}: does not follow the previous row (a row was "
                              "deleted, reordered or edited)").format(seq=r.seq))
        recomputed = chain_hash(r.prev_hash, r.seq, r.at, r.actor, r.host, r.event,
                                r.service, r.subject, r.details)
        if recomputed != r.hash:
            problems.append(_("row {seq}: content does not match its hash (edited)")
                            .format(seq=r.seq))
        expected_prev, expected_seq = r.hash, r.seq + 1
    head = conn.execute(sa.select(audit_head).where(audit_head.c.id == 1)).one_or_none()
    if head is None:
        problems.append(_("the chain head is missing"))
    elif head.seq != expected_seq - 1 or head.hash != expected_prev:
        problems.append(_("the chain head says row {seq} is last, but the log ends at row "
                          "{value} (rows deleted at the end, or head edited)")
                        .format(seq=head.seq, value=expected_seq - 1))
    return Verdict(not problems, count, tuple(problems))


@dataclass(frozen=True)
class ChainState:
    """The chain as its content alone makes it: every hash recomputed from genesis,
    whatever the stored `prev_hash`/`hash` columns say (what a checkpoint is compared
    with). `hashes[n]`: the recomputed hash at row n, for each asked n that exists;
    `earliest_after[n]`: the earliest-dated row after row n, (seq, at)."""

    rows: int
    consistent: bool  # seqs 1..rows without gaps, stored hashes equal the recomputed ones
    first_hash: str | None
    last: tuple[int, str, str] | None  # (seq, at, recomputed hash) of the last row
    hashes: dict[int, str]
    earliest_after: dict[int, tuple[int, str]]


def recompute(conn: Connection, marks: Collection[int] = ()) -> ChainState:
    """One walk of the whole log, in one statement (one snapshot on both backends)."""
    wanted = sorted(set(marks))
    digest, count, consistent = GENESIS, 0, True
    first: str | None = None
    last: tuple[int, str, str] | None = None
    hashes: dict[int, str] = {}
    # The earliest row of each stretch between two marks; a mark's earliest later row
    # is then the earliest of the stretches after it.
    stretch: list[tuple[str, int] | None] = [None] * (len(wanted) + 1)
    index = 0
    for r in conn.execute(sa.select(audit).order_by(audit.c.seq)):
        count += 1
        consistent = consistent and r.seq == count and r.prev_hash == digest
        digest = chain_hash(digest, r.seq, r.at, r.actor, r.host, r.event, r.service,
                            r.subject, r.details)
        consistent = consistent and r.hash == digest
        first = first or digest
        last = (r.seq, r.at, digest)
        while index < len(wanted) and wanted[index] < r.seq:
            index += 1
        if index < len(wanted) and wanted[index] == r.seq:
            hashes[r.seq] = digest
        seen = stretch[index]  # rows in (mark before, this mark]
        if seen is None or r.at < seen[0]:
            stretch[index] = (r.at, r.seq)
    earliest: dict[int, tuple[int, str]] = {}
    best: tuple[str, int] | None = None
    for position in range(len(wanted), 0, -1):
        seen = stretch[position]
        if seen is not None and (best is None or seen < best):
            best = seen
        if best is not None:
            earliest[wanted[position - 1]] = (best[1], best[0])
    return ChainState(count, consistent, first, last, hashes, earliest)
