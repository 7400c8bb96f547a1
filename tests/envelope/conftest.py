"""Software keys and self-signed certificates for the envelope tests (no token needed)."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tokenkeys.envelope import SoftwareIdentity

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")


@dataclass
class KeyPair:
    name: str
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key_pem: Path
    cert_pem: Path

    def identity(self, label: str | None = None) -> SoftwareIdentity:
        return SoftwareIdentity(self.key, self.cert, label or self.name)


def _make(name: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, d: Path) -> KeyPair:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tokenkeys test {name}"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acheteur public")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                                     data_encipherment=False,
                                     key_agreement=isinstance(key, ec.EllipticCurvePrivateKey),
                                     key_cert_sign=False, crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = d / f"{name}.key.pem"
    cert_pem = d / f"{name}.cert.pem"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return KeyPair(name, key, cert, key_pem, cert_pem)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    d = tmp_path_factory.mktemp("keys")
    return {
        "rsa": _make("rsa", rsa.generate_private_key(65537, 2048), d),
        "rsa2": _make("rsa2", rsa.generate_private_key(65537, 2048), d),
        "p256": _make("p256", ec.generate_private_key(ec.SECP256R1()), d),
        "p384": _make("p384", ec.generate_private_key(ec.SECP384R1()), d),
    }


def openssl(*args: str | Path, input: bytes | None = None) -> bytes:
    assert OPENSSL is not None
    proc = subprocess.run([OPENSSL, *map(str, args)], input=input, capture_output=True,
                          check=False)
    if proc.returncode:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed: {proc.stderr.decode()}")
    return proc.stdout


def leftovers(d: Path, keep: set[str]) -> list[str]:
    """Files in d other than the expected ones (temp files, partial outputs)."""
    return sorted(p.name for p in d.iterdir() if p.name not in keep)
