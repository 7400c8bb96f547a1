"""Row types the registry returns (plain values; no database handle inside)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tokenkeys import keyalg
from tokenkeys.certificates import certificate_cn
from tokenkeys.certificates import fingerprint as fingerprint  # a certificate's lookup key
from tokenkeys.keyalg import PublicKey
from tokenkeys.registry.audit import now_text
from tokenkeys.uri import same_token


def certificate_columns(cert: x509.Certificate | None) -> dict[str, Any]:
    """A key row's certificate columns (all None while the key awaits one)."""
    if cert is None:
        return dict.fromkeys(("cert_der", "fingerprint", "issuer", "not_before", "not_after",
                              "cn"))
    return {
        "cert_der": cert.public_bytes(serialization.Encoding.DER),
        "fingerprint": fingerprint(cert), "issuer": cert.issuer.rfc4514_string(),
        "not_before": now_text(cert.not_valid_before_utc.astimezone(UTC)),
        "not_after": now_text(cert.not_valid_after_utc.astimezone(UTC)),
        "cn": certificate_cn(cert),
    }


@dataclass(frozen=True)
class KeyFacts:
    """What is recorded about a key when it is generated, adopted, renewed or imported:
    the key pair, its designation, where it is (token, CKA_ID) and its certificate
    (None while it awaits one)."""

    designation: str
    token_uri: str
    ckaid: str
    public_key: PublicKey
    certificate: x509.Certificate | None
    algorithm: str
    envelope_kinds: tuple[str, ...]
    backup: bool = False
    shareable: bool = False
    replaces_id: int | None = None

    @property
    def public_key_sha256(self) -> str:
        return keyalg.public_key_sha256(self.public_key)

    def row(self) -> dict[str, Any]:
        return {
            "designation": self.designation, "public_key_sha256": self.public_key_sha256,
            **certificate_columns(self.certificate),
            "algorithm": self.algorithm, "backup": self.backup, "shareable": self.shareable,
            "envelope_kinds": ",".join(self.envelope_kinds), "replaces_id": self.replaces_id,
        }


@dataclass(frozen=True)
class KeyLocation:
    """One place a key pair lives: a token and the object's CKA_ID (hex)."""

    token_uri: str
    ckaid: str
    created_at: str
    deleted_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"token_uri": self.token_uri, "ckaid": self.ckaid,
                "created_at": self.created_at, "deleted_at": self.deleted_at}


@dataclass(frozen=True)
class KeyRow:
    id: int
    service: str
    designation: str
    cn: str | None
    public_key_sha256: str
    cert_der: bytes | None
    fingerprint: str | None
    issuer: str | None
    not_before: str | None
    not_after: str | None
    algorithm: str
    backup: bool
    shareable: bool
    envelope_kinds: tuple[str, ...]
    replaces_id: int | None
    created_at: str
    created_by: str
    deleted_at: str | None
    open_consultations: tuple[str, ...] = ()
    locations: tuple[KeyLocation, ...] = ()  # live ones (every one for a deleted row)

    @property
    def certificate(self) -> x509.Certificate | None:
        return None if self.cert_der is None else x509.load_der_x509_certificate(self.cert_der)

    @property
    def awaiting_certificate(self) -> bool:
        return self.cert_der is None

    def expired(self, at: str | None = None) -> bool:
        return self.not_after is not None and self.not_after <= (at or now_text())

    def located_on(self, token_uri: str) -> list[KeyLocation]:
        return [loc for loc in self.locations if same_token(loc.token_uri, token_uri)]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "service": self.service, "designation": self.designation,
            "cn": self.cn, "public_key_sha256": self.public_key_sha256,
            "fingerprint": self.fingerprint, "issuer": self.issuer,
            "not_before": self.not_before, "not_after": self.not_after,
            "status": "awaiting certificate" if self.awaiting_certificate else "certified",
            "algorithm": self.algorithm, "backup": self.backup, "shareable": self.shareable,
            "envelope_kinds": list(self.envelope_kinds), "replaces_id": self.replaces_id,
            "created_at": self.created_at, "created_by": self.created_by,
            "deleted_at": self.deleted_at, "open_consultations": list(self.open_consultations),
            "locations": [loc.to_json() for loc in self.locations],
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
    """A consultation as recorded: its bound key and the backup keys recorded at its
    creation, with the public keys pinned then (`key_pin`, `backup_pins`, aligned with
    `backups`), and the pins its creation's audit row holds (`audited`)."""

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
    key_pin: str = ""
    backup_pins: tuple[str, ...] = ()
    backup_count: int = 0
    audited: AuditedPins | None = None

    @property
    def recipients(self) -> tuple[KeyRow, ...]:
        return (self.key, *self.backups)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service, "reference": self.reference, "title": self.title,
            "closes_at": self.closes_at, "status": self.status,
            "key": {"designation": self.key.designation, "not_after": self.key.not_after,
                    "fingerprint": self.key.fingerprint, "public_key_sha256": self.key_pin},
            "backups": [{"designation": b.designation, "not_after": b.not_after,
                         "fingerprint": b.fingerprint, "public_key_sha256": pin}
                        for b, pin in zip(self.backups, self.backup_pins, strict=True)],
            "created_at": self.created_at, "created_by": self.created_by,
            "closed_at": self.closed_at,
        }


@dataclass(frozen=True)
class AuditedPins:
    """The pins a consultation's creation put in the audit log (a registry migrated
    from before pins has them in a `consultation-pin` row after the creation's)."""

    seq: int
    key: str
    backups: tuple[str, ...]  # sorted
