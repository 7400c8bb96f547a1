"""Row types the registry returns (plain values; no database handle inside)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tokenkeys.certificates import certificate_cn
from tokenkeys.certificates import fingerprint as fingerprint  # the registry's lookup key
from tokenkeys.registry.audit import now_text


@dataclass(frozen=True)
class KeyFacts:
    """What is recorded about a key when it is generated, adopted or renewed."""

    designation: str
    token_uri: str
    ckaid: str
    certificate: x509.Certificate
    algorithm: str
    envelope_kinds: tuple[str, ...]
    backup: bool = False
    shareable: bool = False
    replaces_id: int | None = None

    @property
    def cn(self) -> str | None:
        return certificate_cn(self.certificate)

    def row(self) -> dict[str, Any]:
        cert = self.certificate
        return {
            "designation": self.designation, "cn": self.cn, "token_uri": self.token_uri,
            "ckaid": self.ckaid, "cert_der": cert.public_bytes(serialization.Encoding.DER),
            "fingerprint": fingerprint(cert), "issuer": cert.issuer.rfc4514_string(),
            "not_before": now_text(cert.not_valid_before_utc.astimezone(UTC)),
            "not_after": now_text(cert.not_valid_after_utc.astimezone(UTC)),
            "algorithm": self.algorithm, "backup": self.backup, "shareable": self.shareable,
            "envelope_kinds": ",".join(self.envelope_kinds), "replaces_id": self.replaces_id,
        }


@dataclass(frozen=True)
class KeyRow:
    id: int
    service: str
    designation: str
    cn: str | None
    token_uri: str
    ckaid: str
    cert_der: bytes
    fingerprint: str
    issuer: str
    not_before: str
    not_after: str
    algorithm: str
    backup: bool
    shareable: bool
    envelope_kinds: tuple[str, ...]
    replaces_id: int | None
    created_at: str
    created_by: str
    deleted_at: str | None
    open_consultations: tuple[str, ...] = ()

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.cert_der)

    def expired(self, at: str | None = None) -> bool:
        return self.not_after <= (at or now_text())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "service": self.service, "designation": self.designation,
            "cn": self.cn, "token_uri": self.token_uri, "ckaid": self.ckaid,
            "fingerprint": self.fingerprint, "issuer": self.issuer,
            "not_before": self.not_before, "not_after": self.not_after,
            "algorithm": self.algorithm, "backup": self.backup, "shareable": self.shareable,
            "envelope_kinds": list(self.envelope_kinds), "replaces_id": self.replaces_id,
            "created_at": self.created_at, "created_by": self.created_by,
            "deleted_at": self.deleted_at, "open_consultations": list(self.open_consultations),
        }


@dataclass(frozen=True)
class ServiceRow:
    id: int
    name: str
    created_at: str
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at, "created_by": self.created_by}


@dataclass(frozen=True)
class Consultation:
    id: int
    service: str
    reference: str
    title: str | None
    closes_at: str | None
    status: str
    key: KeyRow
    backups: tuple[KeyRow, ...] = field(default_factory=tuple)
    created_at: str = ""
    created_by: str = ""
    closed_at: str | None = None

    @property
    def recipients(self) -> tuple[KeyRow, ...]:
        return (self.key, *self.backups)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service, "reference": self.reference, "title": self.title,
            "closes_at": self.closes_at, "status": self.status,
            "key": {"designation": self.key.designation, "not_after": self.key.not_after,
                    "fingerprint": self.key.fingerprint},
            "backups": [{"designation": b.designation, "not_after": b.not_after,
                         "fingerprint": b.fingerprint} for b in self.backups],
            "created_at": self.created_at, "created_by": self.created_by,
            "closed_at": self.closed_at,
        }
