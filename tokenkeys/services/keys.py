"""Key workflows that keep the registry in step with the token: record, adopt, renew, delete.

Each takes an open (logged-in) Token and a Registry. The token is changed only
after the registry has agreed, and a registry refusal afterwards undoes the token
change, so neither holds a key the other does not know about.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime

from cryptography import x509

from tokenkeys import keyalg, manager
from tokenkeys.certificates import self_signed
from tokenkeys.drivers import KeyHandle, Token
from tokenkeys.drivers.capabilities import CertificateStore, require
from tokenkeys.errors import (
    CertificateRefused,
    KeyExists,
    KeyNotFound,
    PolicyRefused,
    TokenKeysError,
    UsageError,
)
from tokenkeys.registry import KeyFacts, KeyRow, Registry, fingerprint
from tokenkeys.services.kinds import envelope_kinds
from tokenkeys.types import Algorithm

DATED_SUFFIX = re.compile(r"-\d{8}(-\d+)?$")


def facts_for(token: Token, key: KeyHandle, *, backup: bool = False,
              replaces_id: int | None = None) -> KeyFacts:
    if key.certificate is None:
        raise KeyNotFound(f"key {key.label!r} has no certificate on the token")
    return KeyFacts(
        designation=key.label, token_uri=token.uri, ckaid=key.id.hex(),
        certificate=key.certificate, algorithm=key.algorithm_name,
        envelope_kinds=envelope_kinds(key.key_type, token.mechanisms()),
        backup=backup, shareable=key.extractable, replaces_id=replaces_id)


def check_free(registry: Registry, service: str, designation: str) -> None:
    """Refuse before touching the token when the registry already has the name."""
    try:
        registry.key(service, designation)
    except KeyNotFound:
        return
    raise KeyExists(f"a key named {designation!r} already exists in service {service!r} "
                    "of the registry")


def record_generated(registry: Registry, service: str, token: Token, record_id: str, *,
                     backup: bool) -> KeyRow:
    """Record a key `manager.generate_key` just made; on refusal, destroy it again."""
    key = token.find_key(key_id=bytes.fromhex(record_id))
    try:
        return registry.add_key(service, facts_for(token, key, backup=backup), "generate")
    except BaseException:
        with contextlib.suppress(TokenKeysError):
            token.delete(key)
        raise


def is_recorded(registry: Registry, service: str, designation: str) -> bool:
    """Whether the service records `designation`. Raises when the registry cannot be
    reached or the service is unknown: `key import-cert` asks this before the device
    changes."""
    try:
        registry.key(service, designation)
    except KeyNotFound:
        return False
    return True


def record_certified(registry: Registry, service: str, token: Token,
                     key: KeyHandle, *, backup: bool = False) -> KeyRow | None:
    """After `key import-cert`: record a key the service does not know yet (one that
    awaited its certificate), as `key adopt` would. A known designation is left as is."""
    if is_recorded(registry, service, key.label):
        return None
    return registry.add_key(service, facts_for(token, key, backup=backup), "adopt",
                            {"via": "import-cert"})


def adopt(registry: Registry, service: str, token: Token, name_or_uri: str, *,
          cert: x509.Certificate | None, self_sign_days: int | None, backup: bool) -> KeyRow:
    """Reference a key pair that already exists on the token (made elsewhere)."""
    key = manager.resolve_key(token, name_or_uri)
    if not key.label:
        raise UsageError("the key has no label on the token: give it one to adopt it")
    check_free(registry, service, key.label)
    store: CertificateStore | None = None
    had = key.certificate
    if cert is not None:
        if not keyalg.same_key(cert.public_key(), key.public_key):
            raise CertificateRefused(
                f"the certificate given ({cert.subject.rfc4514_string()}) holds another "
                f"public key than key {key.label!r} on the token: refused")
        if key.certificate is None or key.certificate != cert:
            store = require(token, CertificateStore, "storing certificates")
            key.certificate = cert
    elif key.certificate is None:
        if self_sign_days is None:
            raise KeyNotFound(f"key {key.label!r} has no certificate on the token: give "
                              "--cert FILE, or --self-sign to make one on the device")
        store = require(token, CertificateStore, "storing certificates")
        key.certificate = self_signed(key, key.label, self_sign_days)
    elif not keyalg.same_key(key.certificate.public_key(), key.public_key):
        raise CertificateRefused(f"the certificate stored with key {key.label!r} holds "
                                  "another public key: refused")
    # The registry first: the token changes only once the registry has agreed.
    try:
        row = registry.add_key(service, facts_for(token, key, backup=backup), "adopt")
    except BaseException:
        key.certificate = had
        raise
    if store is not None:
        try:
            store.store_certificate(key, key.certificate)
        except BaseException:
            key.certificate = had
            with contextlib.suppress(TokenKeysError):
                registry.mark_deleted([(service, row.designation)], lambda _: None)
            raise
    return row


def renewal_name(old: str, registry: Registry, service: str, today: datetime) -> str:
    """`NAME-YYYYMMDD` (an earlier dated suffix is replaced); `-2`, `-3`… if taken."""
    base = DATED_SUFFIX.sub("", old)
    candidate = f"{base}-{today:%Y%m%d}"
    n = 1
    while True:
        try:
            registry.key(service, candidate)
        except KeyNotFound:
            return candidate
        n += 1
        candidate = f"{base}-{today:%Y%m%d}-{n}"


def renew(registry: Registry, service: str, token: Token, old: KeyRow, *,
          days: int | None, algorithm: Algorithm | None, name: str | None) -> KeyRow:
    """A new key pair and certificate on the token; the old key stays, linked to it."""
    new_name = name or renewal_name(old.designation, registry, service, datetime.now(UTC))
    check_free(registry, service, new_name)
    if days is None:
        span = (datetime.fromisoformat(old.not_after.replace("Z", "+00:00"))
                - datetime.fromisoformat(old.not_before.replace("Z", "+00:00")))
        days = max(1, round(span.total_seconds() / 86400))
    alg = algorithm or Algorithm.parse(old.algorithm)
    cn = new_name if old.cn in (None, old.designation) else old.cn
    record = manager.generate_key(token, new_name, cn=cn, algorithm=alg, days=days,
                                  shareable=old.shareable)
    key = token.find_key(key_id=bytes.fromhex(record.id))
    try:
        return registry.add_key(
            service, facts_for(token, key, backup=old.backup, replaces_id=old.id), "renew",
            details={"replaces": old.designation, "replaces_fingerprint": old.fingerprint})
    except BaseException:
        with contextlib.suppress(TokenKeysError):
            token.delete(key)
        raise


def deletion_guard(row: KeyRow) -> None:
    if row.open_consultations:
        refs = ", ".join(row.open_consultations)
        raise PolicyRefused(
            f"key {row.designation!r} is bound to consultations not yet closed ({refs}), as "
            "their key or a recorded backup key: their bids can only be opened with it. "
            "Close them first")


def delete(registry: Registry, service: str, token: Token, key: KeyHandle) -> list[KeyRow]:
    """Delete a key from the token unless an open consultation needs it; rows are kept."""
    rows: list[KeyRow] = []
    if key.certificate is not None:
        rows = [r for r in registry.keys_by_fingerprint(fingerprint(key.certificate))
                if r.deleted_at is None]
    if not rows:
        with contextlib.suppress(KeyNotFound):
            rows = [registry.key(service, key.label)]
    for row in rows:
        deletion_guard(row)
    marked = registry.mark_deleted([(r.service, r.designation) for r in rows],
                                   deletion_guard)
    try:
        manager.delete_key(token, key)
    except BaseException as exc:
        if marked:
            registry.unmark_deleted(marked, type(exc).__name__)
        raise
    if not marked:
        registry.record_event("delete", service=service, subject=key.label, details={
            "token": token.uri, "ckaid": key.id.hex(), "registered": False})
    return marked
