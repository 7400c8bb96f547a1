"""Provisioning workflows above the driver contract: generate, list, export, delete.

Every function takes an open Token; none knows which driver it is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tokenkeys.certificates import key_status, self_signed
from tokenkeys.drivers.base import KeyHandle, Token
from tokenkeys.errors import (
    KeyExists,
    KeyNotFound,
    MechanismUnsupported,
    TokenKeysError,
    UsageError,
)
from tokenkeys.files import write_atomic
from tokenkeys.services.envelope_kinds import kinds_for
from tokenkeys.services.key_certs import awaiting_certificate
from tokenkeys.types import DEFAULT_ALGORITHM, Algorithm, KeySpec
from tokenkeys.uri import Pkcs11Uri, SoftUri, parse

MAX_DAYS = 3650
AWAITING = "awaiting certificate"


@dataclass(frozen=True)
class KeyRecord:
    """What `key list` shows for one key."""

    designation: str
    cn: str | None
    algorithm: str
    id: str
    uri: str
    not_after: datetime | None
    status: str
    extractable: bool
    opens: tuple[str, ...] = ()  # envelope kinds the key can open on its device

    def to_json(self) -> dict[str, object]:
        return {
            "designation": self.designation,
            "cn": self.cn,
            "algorithm": self.algorithm,
            "id": self.id,
            "uri": self.uri,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "status": self.status,
            "extractable": self.extractable,
            "opens": list(self.opens),
        }


def certificate_cn(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def describe(key: KeyHandle, now: datetime | None = None,
             mechanisms: frozenset[str] | None = None) -> KeyRecord:
    cert = key.certificate
    return KeyRecord(
        designation=key.label,
        cn=certificate_cn(cert) if cert else None,
        algorithm=key.algorithm_name,
        id=key.id.hex(),
        uri=key.uri,
        not_after=cert.not_valid_after_utc if cert else None,
        status=key_status(cert, now or datetime.now(UTC)) if cert else AWAITING,
        extractable=key.extractable,
        opens=kinds_for(key, mechanisms) if mechanisms is not None else (),
    )


def generate_key(
    token: Token,
    name: str,
    *,
    cn: str | None = None,
    algorithm: Algorithm = DEFAULT_ALGORITHM,
    days: int = 365,
    shareable: bool = False,
    self_sign: bool | None = None,
) -> KeyRecord:
    """Generate a key pair on the token with a self-signed certificate signed there.

    `self_sign=False` stores no certificate (the key awaits one from a CA); None
    (the default) self-signs where the key can sign and otherwise keeps the key
    awaiting a certificate. Requires login. On any other failure after
    generation, the new objects are destroyed.
    """
    if not name.strip():
        raise UsageError("the key name (designation) must not be empty")
    if not 1 <= days <= MAX_DAYS:
        raise UsageError(f"--days must be between 1 and {MAX_DAYS}, not {days}")
    try:
        token.find_key(label=name)
    except KeyNotFound:
        pass
    else:
        raise KeyExists(f"a key named {name!r} already exists on this token")
    key = token.generate_keypair(KeySpec(label=name, algorithm=algorithm, shareable=shareable))
    if self_sign is False:
        return describe(key, mechanisms=token.mechanisms())
    try:
        cert = self_signed(key, cn or name, days)
    except MechanismUnsupported:
        if self_sign is None:
            return describe(key, mechanisms=token.mechanisms())  # cannot sign: awaits a CA
        _destroy_quietly(token, key)
        raise
    except BaseException:
        _destroy_quietly(token, key)
        raise
    try:
        token.store_certificate(key, cert)
        key.certificate = cert
    except BaseException:
        _destroy_quietly(token, key)
        raise
    return describe(key, mechanisms=token.mechanisms())


def _destroy_quietly(token: Token, key: KeyHandle) -> None:
    # The original error matters more than a clean-up failure.
    with contextlib.suppress(TokenKeysError):
        token.delete(key)


def list_keys(token: Token) -> list[KeyRecord]:
    return [record for _, record in key_inventory(token)]


def key_inventory(token: Token) -> list[tuple[KeyHandle, KeyRecord]]:
    """Every key with what `key list` shows for it (including the envelope kinds)."""
    now = datetime.now(UTC)
    mechanisms = token.mechanisms()
    return [(key, describe(key, now, mechanisms)) for key in token.list_keys()]


def resolve_key(token: Token, name_or_uri: str) -> KeyHandle:
    """A key by designation, or by a URI naming an object/id on this token."""
    if name_or_uri.startswith(("pkcs11:", "soft:")):
        parsed = parse(name_or_uri)
        if isinstance(parsed, SoftUri):
            if not parsed.name:
                raise UsageError(f"the URI names no key (soft:DIR#NAME): {name_or_uri}")
            return token.find_key(label=parsed.name)
        return _find_by_pkcs11_uri(token, parsed)
    return token.find_key(label=name_or_uri)


def _find_by_pkcs11_uri(token: Token, uri: Pkcs11Uri) -> KeyHandle:
    if uri.object is None and uri.id is None:
        raise UsageError(f"the URI names no key (add object= or id=): {uri}")
    return token.find_key(label=uri.object, key_id=uri.id)


def key_token_uri(name_or_uri: str) -> str | None:
    """The token part of a key URI, or None for a bare designation."""
    if not name_or_uri.startswith(("pkcs11:", "soft:")):
        return None
    parsed = parse(name_or_uri)
    if isinstance(parsed, SoftUri):
        return str(SoftUri(parsed.directory))
    return str(parsed.token_only())


def export_certificate(key: KeyHandle, path: Path, *, der: bool = False) -> None:
    if key.certificate is None:
        raise awaiting_certificate(key)
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    write_atomic(path, key.certificate.public_bytes(encoding))


def delete_key(token: Token, key: KeyHandle) -> KeyRecord:
    """Delete private key, public key and certificate. Requires login."""
    record = describe(key)
    token.delete(key)
    return record
