"""Plain X.509 helpers: fingerprint, common name, validity status, writing a file.

Nothing here touches a device: the registry and the CLI use these without
loading a driver. Signing on a device is services/signing.py.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tokenkeys.files import write_atomic

EXPIRING_DAYS = 30
KeyStatus = Literal["valid", "expiring", "expired"]


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lowercase hex: the registry's lookup key."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_cn(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def key_status(cert: x509.Certificate, now: datetime | None = None) -> KeyStatus:
    """"expired" past notAfter, "expiring" under 30 days left, else "valid"."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    left = cert.not_valid_after_utc - now
    if left <= timedelta(0):
        return "expired"
    if left < timedelta(days=EXPIRING_DAYS):
        return "expiring"
    return "valid"


def write_certificate(path: Path, cert: x509.Certificate, *, der: bool = False,
                      overwrite: bool = False) -> None:
    """Write `cert`, PEM or DER, in one atomic step; an existing file is refused
    unless `overwrite`."""
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    write_atomic(path, cert.public_bytes(encoding), overwrite=overwrite)
