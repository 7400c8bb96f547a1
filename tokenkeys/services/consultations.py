"""Consultation rules: bind once, backups always recipients, envelopes checked at opening.

Rules (docs/security-officer.md explains why):
- a consultation is bound to one key for good; a reference is never reused;
- the bound key must be valid until the closing date and must not be a backup key;
- the service's backup keys in force at creation are recorded and always sealed to;
- with no valid backup key, creation needs an explicit --no-backup.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tokenkeys.envelope import recipient_ids
from tokenkeys.errors import BindingMismatch, PolicyRefused, UsageError
from tokenkeys.files import write_atomic
from tokenkeys.i18n import N_, _, ngettext
from tokenkeys.registry import Consultation, KeyRow, Registry
from tokenkeys.registry.audit import now_text
from tokenkeys.registry.bindings import binding_problems
from tokenkeys.services.envelope_kinds import choose_key_transport

NO_BACKUP_WARNING = (N_("no valid backup key in this service: bids of this consultation will "
                        "depend on one key only"))


def parse_closing(text: str | None) -> str | None:
    """YYYY-MM-DD (end of that day, UTC) or a full ISO-8601 time; stored as UTC text."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(23, 59, 59), UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(_("--closes must be a date (YYYY-MM-DD) or an ISO time, not {text!r}")
                         .format(text=text)
                         ) from None
    return now_text(moment)


@dataclass(frozen=True)
class Created:
    consultation: Consultation
    warnings: tuple[str, ...]


def create(registry: Registry, service: str, reference: str, key: str, *,
           closes: str | None, title: str | None, no_backup: bool) -> Created:
    if not reference.strip() or len(reference) > 200:
        raise UsageError(_("a consultation reference must be 1 to 200 characters"))
    closes_at = parse_closing(closes)
    now = now_text()
    if closes_at is not None and closes_at <= now:
        raise UsageError(_("the closing date {closes_at} is already past")
                         .format(closes_at=closes_at))
    warnings: list[str] = []

    def check(bound: KeyRow, backups: Sequence[KeyRow]) -> None:
        if bound.awaiting_certificate:
            raise PolicyRefused(_("key {designation!r} is awaiting its certificate: import "
                                  "it first (`tokenkeys key import-cert`)")
                                .format(designation=bound.designation))
        if bound.expired(now):
            raise PolicyRefused(_("key {designation!r} expired on {not_after}: an expired "
                                  "key cannot be bound (renew it: `tokenkeys key renew`)")
                                .format(designation=bound.designation, not_after=bound.not_after))
        if closes_at is not None and (bound.not_after or "") < closes_at:
            raise PolicyRefused(
                _("key {designation!r} expires on {not_after}, before the closing date "
                  "{closes_at}: bids could not be opened after it; renew the key first")
                .format(designation=bound.designation, not_after=bound.not_after,
                        closes_at=closes_at))
        if bound.backup:
            raise PolicyRefused(_("key {designation!r} is a backup key: backup keys are "
                                  "added to every consultation, bind a regular key")
                                .format(designation=bound.designation))
        if not backups and not no_backup:
            raise PolicyRefused(
                _("service {service!r} has no valid backup key: generate one (`key generate "
                  "--backup`) or give --no-backup to accept that bids depend on one key only")
                .format(service=service))
        if not backups:
            warnings.append(_(NO_BACKUP_WARNING))

    made = registry.create_consultation(service, reference, key, title=title,
                                        closes_at=closes_at, check=check,
                                        details={"no_backup": no_backup})
    return Created(made, tuple(dict.fromkeys(warnings)))


def load_for_use(registry: Registry, service: str, reference: str) -> Consultation:
    """The consultation, refused unless its record agrees with the public keys pinned at
    its creation and with its creation's audit row: every path that serves or uses its
    certificates (recipients, seal, open) goes through here."""
    found = registry.consultation(service, reference)
    problems = binding_problems(found)
    if problems:
        problem = problems[0]
        if len(problems) > 1:
            problem = ngettext("{text} (and {count} more)", "{text} (and {count} more)",
                               len(problems) - 1).format(text=problem, count=len(problems) - 1)
        raise BindingMismatch(
            _("consultation {reference!r} (service {service!r}) cannot be used: {problem}; the "
              "registry was changed outside tokenkeys: run `tokenkeys audit verify`")
            .format(reference=reference, service=service, problem=problem))
    return found


def problems(consultation: Consultation) -> list[str]:
    """Why the consultation cannot be used (empty: it can); for `show` and `doctor`."""
    return binding_problems(consultation)


def certificates(consultation: Consultation) -> list[x509.Certificate]:
    """The bound key's certificate, then the recorded backups' (checked by load_for_use)."""
    found = [k.certificate for k in consultation.recipients]
    return [c for c in found if c is not None]


def write_bundle(consultation: Consultation, path: Path, *, force: bool) -> None:
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates(consultation))
    write_atomic(path, pem, overwrite=force)


def seal_transport(consultation: Consultation, wanted: str | None) -> str:
    return choose_key_transport(
        [(k.designation, k.envelope_kinds) for k in consultation.recipients], wanted)


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return bytes(cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest)
    except x509.ExtensionNotFound:
        return None


def check_envelope(consultation: Consultation, path: Path) -> None:
    """Refuse an envelope whose recipients are not exactly the consultation's: its bound
    key and recorded backup keys, no more and no fewer."""
    rids = recipient_ids(path)
    missing, known = [], 0
    for cert in certificates(consultation):
        ski = _ski(cert)
        found = sum(1 for r in rids if r == (cert.issuer.public_bytes(), cert.serial_number)
                    or (ski is not None and r == ski))
        known += found
        if not found:
            missing.append(cert)
    strangers = len(rids) - known
    if strangers or missing:
        why = (_("{strangers} recipient(s) are not its key or its backup keys")
               .format(strangers=strangers) if strangers
               else _("{count} of its keys are not recipients").format(count=len(missing)))
        raise PolicyRefused(_("{name!r} is not sealed to consultation {reference!r}: {why}; "
                              "nothing was opened")
                            .format(name=path.name, reference=consultation.reference, why=why))


def file_digest(path: Path) -> str | None:
    """SHA-256 of a regular file; None for anything else (a FIFO would block)."""
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        except OSError:
            return None
    return digest.hexdigest()


def record_opening(registry: Registry, service: str, reference: str | None, token_uri: str,
                   results: Sequence[Any], *, batch: str | None = None,
                   error: str | None = None, left: int = 0,
                   origin: str | None = None) -> None:
    """The end row of an `open` batch ("open"): envelope digests, outcomes, the key used.

    An opened envelope's digest was computed while it was read; skipped and
    failed ones are read here. A batch that stopped names the error's type and how
    many planned envelopes have no result (its "open-start" row lists them all).
    `origin`: the web origin that asked for the opening, through the assistant."""
    envelopes = [{"file": Path(r.input).name,
                  "sha256": getattr(r, "sha256", None) or file_digest(Path(r.input)),
                  "status": r.status, "key": r.recipient, "error": r.error_type}
                 for r in results]
    counts = {s: sum(r.status == s for r in results) for s in ("opened", "skipped", "failed")}
    details: dict[str, Any] = {"token": token_uri, "envelopes": envelopes, **counts}
    if batch is not None:
        details["batch"] = batch
    if origin is not None:
        details["origin"] = origin
    if error is not None:
        details.update(error=error, left=left)
    registry.record_event("open", service=service, subject=reference, details=details)
