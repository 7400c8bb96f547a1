"""Opening the registry the configuration names, and the public audit entry point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from tokenkeys import keyalg
from tokenkeys.config import Config
from tokenkeys.registry import AuditRow, KeyRow, Registry


def open_registry(config: Config) -> Registry:
    """TOKENKEYS_REGISTRY, else the configuration's `registry`, else the user data dir.

    Migrations run by themselves on first use.
    """
    return Registry.open(config.registry)


def record_event(config: Config, event: str, *, service: str | None = None,
                 subject: str | None = None,
                 details: Mapping[str, Any] | None = None) -> AuditRow:
    """Append one audit row (e.g. "share-export", "share-import").

    `details` holds facts only: names, fingerprints, digests, counts. Keys that look
    like secrets ("pin", "passphrase", "password", "plaintext", "secret") are refused.
    """
    with open_registry(config) as registry:
        return registry.record_event(event, service=service, subject=subject, details=details)


def keys_for_certificate(config: Config, certificate: x509.Certificate) -> list[KeyRow]:
    """Registry rows (any service, deleted ones too) of the key pair this certificate is
    for, whichever certificate they hold now."""
    with open_registry(config) as registry:
        return registry.keys_by_public_key(keyalg.public_key_sha256(certificate.public_key()))


@dataclass(frozen=True)
class Migrated:
    registry: str  # where, any password removed
    before: str | None
    after: str


def migrate(config: Config) -> Migrated:
    """Bring the registry's schema to this tokenkeys' version (`registry migrate`)."""
    from tokenkeys.registry import parse_location

    where = parse_location(config.registry).display
    with open_registry(config) as registry:
        before, after = registry.db.migrate()
    return Migrated(where, before, after)
