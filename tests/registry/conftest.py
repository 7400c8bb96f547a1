"""Registry fixtures: raw SQL on either backend, and key facts without a token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import RawSql
from tokenkeys.registry import KeyFacts

__all__ = ["RawSql", "soft_facts"]


def soft_facts(name: str, *, days: int = 365, backup: bool = False,
               start: datetime | None = None) -> KeyFacts:
    """A key's facts with a software certificate (the registry never needs the token)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    begin = start or datetime.now(UTC) - timedelta(minutes=1)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(begin).not_valid_after(begin + timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256()))
    return KeyFacts(designation=name, token_uri="soft:/nowhere", ckaid=name.encode().hex(),
                    public_key=key.public_key(), certificate=cert, algorithm="ec-p256",
                    envelope_kinds=("ecdh",), backup=backup)
