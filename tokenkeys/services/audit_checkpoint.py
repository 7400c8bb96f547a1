"""Audit checkpoints: the chain's head signed on a token and kept off the database.

A checkpoint is a CMS SignedData (RFC 5652, PEM) whose content is a small JSON
document: the number of rows covered, the hash of the last one recomputed from the
rows' content, the first row's hash (which chain), when it was taken. The signer's
certificate travels inside, so `openssl cms -verify` checks one offline. Whoever
can write the database can rebuild a consistent chain; he cannot make it agree with
a checkpoint signed on a token he does not hold (docs/registry.md says what is and
is not detected). cryptography builds the SignedData (the key signs on its device,
services/signing.py); services/signed_data.py verifies one.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from tokenkeys.certificates import fingerprint
from tokenkeys.config import Config
from tokenkeys.drivers.base import Token
from tokenkeys.errors import (
    AuditChainBroken,
    FileMalformed,
    RegistryError,
    UsageError,
)
from tokenkeys.files import prepare_output, read_limited, write_atomic
from tokenkeys.i18n import N_, _, ngettext
from tokenkeys.registry import AuditRow, Registry, parse_location
from tokenkeys.registry.audit import actor, now_text
from tokenkeys.services.access import open_registry
from tokenkeys.services.signed_data import verify_signed_data
from tokenkeys.services.signing import signer_for

FORMAT = "tokenkeys-audit-checkpoint/1"
MAX_FILE_BYTES = 1 << 20  # a checkpoint is about 2 kB; a trust bundle a few certificates
# A row after a checkpoint dated this much before it was added later with a false date
# (workstations' clocks may disagree by less).
CLOCK_TOLERANCE = timedelta(minutes=10)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@dataclass(frozen=True)
class Head:
    """What a checkpoint signs: the chain read and found consistent."""

    seq: int
    head_hash: str
    head_at: str
    first_hash: str
    at: str  # when it was read: every later row is dated after this
    registry: str  # where (informative: a registry may move)


@dataclass(frozen=True)
class Checkpoint:
    head: Head
    actor: str
    host: str
    signer: x509.Certificate
    source: str = ""  # the file it was read from or written to

    def to_json(self) -> dict[str, Any]:
        return {"file": self.source, "rows": self.head.seq, "head_hash": self.head.head_hash,
                "head_at": self.head.head_at, "first_hash": self.head.first_hash,
                "at": self.head.at, "registry": self.head.registry, "actor": self.actor,
                "host": self.host, "signer": self.signer.subject.rfc4514_string(),
                "signer_sha256": fingerprint(self.signer)}


@dataclass(frozen=True)
class Taken:
    checkpoint: Checkpoint
    record_error: str | None  # the registry refused the `checkpoint` row: why


@dataclass(frozen=True)
class CheckedVerdict:
    """`audit verify`: the chain, the consultations' pins, and each checkpoint."""

    ok: bool
    rows: int
    problems: tuple[str, ...]
    consultations: tuple[str, ...]
    checkpoints: tuple[Checkpoint, ...] = field(default=())

    def message(self) -> str:
        first, more = self.problems[0], len(self.problems) - 1
        text = _("audit chain broken: {first}").format(first=first)
        if more:
            text = ngettext("{text} (and {count} more)", "{text} (and {count} more)",
                            more).format(text=text, count=more)
        if self.consultations:
            text = _("{text}; consultations that differ from their pins or their creation's "
                     "row: {consultations}").format(text=text,
                                                    consultations=", ".join(self.consultations))
        return text


# -- taking one ---------------------------------------------------------------------
def read_head(config: Config) -> Head:
    """The chain's head, refused unless the whole log verifies (a checkpoint of a broken
    chain would vouch for the damage). Read before any PIN is asked."""
    at = now_text()
    with open_registry(config) as registry:
        verdict = registry.verify_audit()
        state = registry.audit_state()
    if not verdict.ok or not state.consistent:
        problem = verdict.problems[0] if verdict.problems else _("the log changed while read")
        raise AuditChainBroken(_("audit chain broken: {problem}; no checkpoint was taken (it "
                                 "would vouch for the damage)").format(problem=problem))
    if state.last is None or state.first_hash is None:
        raise UsageError(_("the audit log is empty: there is nothing to checkpoint yet"))
    seq, head_at, digest = state.last
    return Head(seq, digest, head_at, state.first_hash, at,
                parse_location(config.registry).display)


def _payload(cp: Checkpoint) -> bytes:
    head = cp.head
    document = {"format": FORMAT, "rows": head.seq, "head_hash": head.head_hash,
                "head_at": head.head_at, "first_hash": head.first_hash, "at": head.at,
                "registry": head.registry, "actor": cp.actor, "host": cp.host}
    return json.dumps(document, sort_keys=True, indent=1).encode("utf-8") + b"\n"


def write_checkpoint(config: Config, token: Token, key_name: str, head: Head, output: Path,
                     *, force: bool = False) -> Taken:
    """Sign `head` with the key `key_name` on `token` (requires login), write the
    checkpoint to `output` in one step, then record a `checkpoint` audit row (its
    failure is reported, not raised: the file is valid without it)."""
    prepare_output(output, force)
    key = token.find_key(label=key_name)
    cert = key.certificate
    if cert is None:
        raise UsageError(_("key {key_name!r} has no certificate: a checkpoint carries its "
                           "signer's certificate (use a CA, `tokenkeys ca create`)")
                         .format(key_name=key_name))
    cp = Checkpoint(head, actor(), socket.gethostname(), cert, str(output))
    signer, digest = signer_for(key)
    signed = (pkcs7.PKCS7SignatureBuilder().set_data(_payload(cp))
              .add_signer(cert, signer, digest)
              .sign(serialization.Encoding.PEM, [pkcs7.PKCS7Options.Binary]))
    load_checkpoint_bytes(signed, str(output))  # what we write must read back
    write_atomic(output, signed, overwrite=force)
    try:
        with open_registry(config) as registry:
            registry.record_event("checkpoint", subject=output.name, details={
                "rows": head.seq, "head_hash": head.head_hash, "at": head.at,
                "file": str(output.resolve()), "signer_sha256": fingerprint(cert)})
    except RegistryError as exc:
        return Taken(cp, str(exc))
    return Taken(cp, None)


# -- reading one --------------------------------------------------------------------
def load_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint file, its signature checked against the certificate it carries
    (trust in that certificate is `check_trust`'s question)."""
    return load_checkpoint_bytes(read_limited(path, MAX_FILE_BYTES, "checkpoint"), str(path))


def load_checkpoint_bytes(data: bytes, source: str) -> Checkpoint:
    content, signer = verify_signed_data(data, source)
    bad = FileMalformed(_("{source} is not a tokenkeys audit checkpoint").format(source=source))
    try:
        doc = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad
    rows, texts = doc.get("rows"), [doc.get(k) for k in (
        "head_hash", "head_at", "first_hash", "at", "registry", "actor", "host")]
    if (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1
            or not all(isinstance(t, str) for t in texts)
            or not _HEX64.match(str(texts[0])) or not _HEX64.match(str(texts[2]))):
        raise bad
    head_hash, head_at, first_hash, at, registry, who, host = (str(t) for t in texts)
    _parse_time(at, source)
    return Checkpoint(Head(rows, head_hash, head_at, first_hash, at, registry), who, host,
                      signer, source)


def _parse_time(text: str, source: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise FileMalformed(_("{source} is not a tokenkeys audit checkpoint")
                            .format(source=source)) from None


# -- trusting and verifying --------------------------------------------------------
def read_trust(path: Path) -> list[x509.Certificate]:
    """The trust anchors: PEM certificates (the signer's own, or its CA's)."""
    data = read_limited(path, MAX_FILE_BYTES, _("trust file"))
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise UsageError(
            _("trust file {path} holds no PEM certificate").format(path=path)) from None


def check_trust(cp: Checkpoint, anchors: list[x509.Certificate]) -> str | None:
    """Why `cp`'s signer is not trusted, or None: it must be an anchor, or be issued by
    an anchor that is a CA, and be valid when the checkpoint says it was taken."""
    signer = cp.signer
    at = _parse_time(cp.head.at, cp.source)
    if not signer.not_valid_before_utc <= at <= signer.not_valid_after_utc:
        return (_("its signer's certificate was not valid at {at}, when it says it was taken")
                .format(at=cp.head.at))
    mine = fingerprint(signer)
    for anchor in anchors:
        if fingerprint(anchor) == mine:
            return None
        try:
            ca = anchor.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            if ca:
                signer.verify_directly_issued_by(anchor)
                return None
        except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
            continue
    return (_("its signer {rfc4514_string!r} (SHA-256 {mine}…) is not in the trust file, nor "
              "issued by a CA there")
            .format(rfc4514_string=signer.subject.rfc4514_string(), mine=mine[:16]))


def _trust_path(config: Config, trust: Path | None) -> Path:
    if trust is not None:
        return trust
    if config.audit_trust:
        return Path(config.audit_trust).expanduser()
    raise UsageError(_("a checkpoint is only as good as its signer: give --trust CERT.pem "
                       "(the certificate of the CA or key that signs checkpoints, from "
                       "`tokenkeys ca export-cert`), or set audit_trust in the configuration"))


def verify(config: Config, checkpoints: list[Path], trust: Path | None = None
           ) -> CheckedVerdict:
    """The chain (every row and the head), every consultation against its pins, and each
    checkpoint: signed by a trusted signer, the log up to its row recomputes to its
    hash, and every later row extends it and is dated after it."""
    loaded = [load_checkpoint(p) for p in checkpoints]
    anchors = read_trust(_trust_path(config, trust)) if loaded else []
    with open_registry(config) as registry:
        verdict = registry.verify_audit()
        state = registry.audit_state([cp.head.seq for cp in loaded])
    found: list[str] = []
    for cp in loaded:
        problem = check_trust(cp, anchors) or _against(cp, state)
        if problem:
            found.append(f"checkpoint {cp.source} (row {cp.head.seq}, taken {cp.head.at}): "
                         f"{problem}")
    chain = [p for p in verdict.problems if not p.startswith("consultation ")]
    others = [p for p in verdict.problems if p.startswith("consultation ")]
    problems = tuple(chain + found + others)
    return CheckedVerdict(not problems, verdict.rows, problems, verdict.consultations,
                          tuple(loaded))


def _against(cp: Checkpoint, state: Any) -> str | None:
    seq = cp.head.seq
    other = state.first_hash != cp.head.first_hash
    if state.rows < seq or seq not in state.hashes:
        return (_("the log has {rows} rows, the checkpoint covers {seq}: rows were removed "
                  "(a truncated tail)").format(rows=state.rows, seq=seq)
                + (_(_OTHER) if other else ""))
    if state.hashes[seq] != cp.head.head_hash:
        return (_("the log up to row {seq} differs from the checkpoint: a row up to there "
                  "was edited, removed or inserted, and the chain rebuilt").format(seq=seq)
                + (_(_OTHER) if other else ""))
    later = state.earliest_after.get(seq)
    if later and _parse_time(later[1], _("the log")) < _parse_time(cp.head.at, cp.source) \
            - CLOCK_TOLERANCE:
        return (_("row {later}, added after it, is dated {later2}: before the checkpoint was "
                  "taken, so added later with a false date (or on a workstation whose clock "
                  "was more than {value} minutes off)")
                .format(later=later[0], later2=later[1], value=CLOCK_TOLERANCE.seconds // 60))
    return None


_OTHER = N_("; its first row differs too: another registry's checkpoint, or a log rewritten "
            "from its start")


# -- how old is the newest? (doctor) -----------------------------------------------
@dataclass(frozen=True)
class Age:
    problems: list[str]
    notes: list[str]


def checkpoint_age(config: Config, registry: Registry, now: datetime | None = None) -> Age:
    """doctor's check: the newest checkpoint it knows is at most
    `audit_checkpoint_days` old. It knows the checkpoint files of this registry in
    `audit_checkpoints` (when set: only those, off the database), else the
    registry's `checkpoint` rows (which the database's owner controls)."""
    now = now or datetime.now(UTC)
    first = registry.audit_first_hash()
    if first is None:
        return Age([], [])
    notes: list[str] = []
    if config.audit_checkpoints:
        where = f"in {config.audit_checkpoints}"
        times = _times_in(Path(config.audit_checkpoints).expanduser(), first, notes)
    else:
        where = _("recorded in the registry")
        times = [_row_time(r) for r in registry.audit_rows(limit=1, event="checkpoint")]
    if not times:
        notes.append(_("no audit checkpoint {where}: take one with `tokenkeys audit "
                       "checkpoint` and keep it off the database server").format(where=where))
        return Age([], notes)
    newest = max(times)
    age = now - _parse_time(newest, _("the log"))
    days = config.audit_checkpoint_days
    if age > timedelta(days=days):
        return Age([_("the newest audit checkpoint {where} was taken on {newest}, more than "
                      "{days} days ago: take one with `tokenkeys audit checkpoint`")
                    .format(where=where, newest=newest, days=days)], notes)
    return Age([], notes)


def _row_time(row: AuditRow) -> str:
    taken = json.loads(row.details).get("at")
    return taken if isinstance(taken, str) and _TIME.match(taken) else row.at


def _times_in(directory: Path, first: str, notes: list[str]) -> list[str]:
    try:
        entries = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError as exc:
        notes.append(_("cannot read the checkpoint directory {directory}: {strerror}")
                     .format(directory=directory, strerror=exc.strerror))
        return []
    times: list[str] = []
    for path in entries:
        try:
            cp = load_checkpoint(path)
        except (FileMalformed, UsageError, AuditChainBroken):
            continue  # other files, or another registry's: not ours to judge here
        if cp.head.first_hash == first:
            times.append(cp.head.at)
    return times
