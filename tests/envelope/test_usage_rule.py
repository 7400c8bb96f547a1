"""The one keyUsage rule (certificates.forbidden_encryption_usage), used by seal and by
key import-cert (services/key_certs.py), for every key type and usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tokenkeys.certificates import forbidden_encryption_usage

_FLAGS = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
          "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


def _cert(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
          usage: tuple[str, ...] | None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "u")])
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + timedelta(days=1)))
    if usage is not None:
        flags = {f: f in usage for f in _FLAGS}
        flags["encipher_only"] = flags["decipher_only"] = False
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize("usage", [None, ("digital_signature",), ("key_encipherment",),
                                   ("key_agreement",), ("key_encipherment", "key_agreement")])
def test_one_rule(usage: tuple[str, ...] | None) -> None:
    for key, needed in ((rsa.generate_private_key(65537, 1024), "keyEncipherment"),
                        (ec.generate_private_key(ec.SECP256R1()), "keyAgreement")):
        cert = _cert(key, usage)
        found = forbidden_encryption_usage(cert, cert.public_key())
        bit = {"keyEncipherment": "key_encipherment", "keyAgreement": "key_agreement"}[needed]
        allowed = usage is None or bit in usage
        assert found == (None if allowed else needed)
