"""Certificates built through the KeyHandle.sign path, with a software-backed handle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tokenkeys.certificates import build_certificate, key_status, key_usage, validity
from tokenkeys.drivers.base import KeyHandle
from tokenkeys.errors import UsageError
from tokenkeys.services.signing import TokenRSAKey, self_signed, signer_for


class SoftHandle(KeyHandle):
    def __init__(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.id = b"id"
        self.label = "soft"
        self.certificate = None
        self.extractable = False
        self.signed = 0

    @property
    def uri(self) -> str:
        return "soft:test"

    def decrypt(self, ciphertext: bytes, pad: padding.AsymmetricPadding) -> bytes:
        raise NotImplementedError

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        self.signed += 1
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), algorithm)
        return self._key.sign(data, ec.ECDSA(algorithm))

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("key", "sig_hash", "usage"),
    [
        (rsa.generate_private_key(65537, 2048), "sha256", "key_encipherment"),
        (ec.generate_private_key(ec.SECP256R1()), "sha256", "key_agreement"),
        (ec.generate_private_key(ec.SECP384R1()), "sha384", "key_agreement"),
    ],
)
def test_self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, sig_hash: str,
                     usage: str) -> None:
    handle = SoftHandle(key)
    start = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    cert = self_signed(handle, "Consultation key", 365, not_before=start)
    assert handle.signed == 1
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=Consultation key"
    assert cert.not_valid_before_utc == start - timedelta(minutes=1)
    assert cert.not_valid_after_utc == start + timedelta(days=365)
    assert 0 < cert.serial_number < 2**159
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == sig_hash
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and usages(ku.value) == {usage}  # no dataEncipherment
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.value.ca is False
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(handle.public_key)
    cert.verify_directly_issued_by(cert)


def usages(usage: x509.KeyUsage) -> set[str]:
    names = ("digital_signature", "content_commitment", "key_encipherment",
             "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")
    return {n for n in names if getattr(usage, n)}


@pytest.mark.parametrize(("leaf_key", "usage"), [
    (rsa.generate_private_key(65537, 2048), "key_encipherment"),
    (ec.generate_private_key(ec.SECP256R1()), "key_agreement"),
])
def test_one_builder_for_self_signed_ca_and_issued(
        leaf_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, usage: str) -> None:
    ca_handle = SoftHandle(ec.generate_private_key(ec.SECP256R1()))
    ca = self_signed(ca_handle, "CA", 30, ca=True)
    leaf_public = leaf_key.public_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "leaf")])
    leaf = build_certificate(leaf_public, name, validity(10), signer_for(ca_handle), issuer=ca)
    own = self_signed(SoftHandle(leaf_key), "own", 10)
    assert usages(ca.extensions.get_extension_for_class(x509.KeyUsage).value) == {
        "key_cert_sign", "crl_sign"}
    for cert in (leaf, own):
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and usages(ku.value) == {usage} == usages(key_usage(leaf_public))
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    for cert in (ca, leaf):
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ca_ski.digest
    leaf.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(ca)


def test_token_key_refuses_private_material() -> None:
    signer = TokenRSAKey(SoftHandle(rsa.generate_private_key(65537, 2048)))
    with pytest.raises(UsageError):
        signer.private_numbers()
    with pytest.raises(UsageError):
        signer.sign(b"x", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())


def test_bad_days() -> None:
    with pytest.raises(UsageError):
        self_signed(SoftHandle(ec.generate_private_key(ec.SECP256R1())), "x", 0)


def test_key_status() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cert = self_signed(SoftHandle(ec.generate_private_key(ec.SECP256R1())), "x", 100,
                       not_before=start)
    end = cert.not_valid_after_utc
    assert key_status(cert, start) == "valid"
    assert key_status(cert, end - timedelta(days=30)) == "valid"
    assert key_status(cert, end - timedelta(days=29)) == "expiring"
    assert key_status(cert, end.replace(tzinfo=None) - timedelta(days=1)) == "expiring"
    assert key_status(cert, end) == "expired"
    assert key_status(cert, end + timedelta(days=1)) == "expired"
