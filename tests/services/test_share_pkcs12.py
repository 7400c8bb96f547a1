"""PKCS#12 building blocks: the MAC key derivation, passphrase rules, chain order."""

from __future__ import annotations

import datetime
import hmac

import pytest
from asn1crypto import pkcs12 as a1p12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tokenkeys.errors import FileMalformed, PassphraseIncorrect, PassphraseWeak
from tokenkeys.services import share_pkcs12 as p12
from tokenkeys.types import Secret

PASS = Secret("a passphrase ok for tests")


def _cert(cn: str, key: rsa.RSAPrivateKey, issuer: str | None = None,
          signer: rsa.RSAPrivateKey | None = None, *, ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder()
    if ca:  # only CA certificates are kept as a key's chain
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return (builder
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or cn)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(signer or key, hashes.SHA256()))


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(65537, 2048) for _ in range(3)]


@pytest.mark.parametrize("mac_hash", [hashes.SHA1(), hashes.SHA256()])
def test_kdf_reproduces_the_mac_openssl_writes(keys: list[rsa.RSAPrivateKey],
                                               mac_hash: hashes.HashAlgorithm) -> None:
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .hmac_hash(mac_hash).build(PASS.reveal().encode()))
    der = pkcs12.serialize_key_and_certificates(b"k", keys[0], _cert("k", keys[0]), None,
                                                encryption)
    mac = a1p12.Pfx.load(der)["mac_data"]
    key = p12.p12read.pkcs12_kdf(mac_hash.name, PASS, mac["mac_salt"].native, 3,
                         mac["iterations"].native, mac_hash.digest_size)
    content = a1p12.Pfx.load(der)["auth_safe"]["content"].native
    assert hmac.new(key, content, mac_hash.name).digest() == mac["mac"]["digest"].native
    wrong = p12.p12read.pkcs12_kdf(mac_hash.name, Secret("x"), mac["mac_salt"].native, 3,
                           mac["iterations"].native, mac_hash.digest_size)
    assert wrong != key


def test_build_parse_with_chain(keys: list[rsa.RSAPrivateKey]) -> None:
    root = _cert("root", keys[2], ca=True)
    mid = _cert("mid", keys[1], "root", keys[2], ca=True)
    leaf = _cert("leaf", keys[0], "mid", keys[1])
    der = p12.build(keys[0], leaf, [root, mid], "DESIGNATION", PASS)
    assert a1p12.Pfx.load(der)["mac_data"]["iterations"].native == p12.ITERATIONS
    got = p12.parse(der, PASS, "f.p12")
    assert got.certificate == leaf and got.chain == (mid, root)
    assert got.friendly_name == "DESIGNATION"
    with pytest.raises(PassphraseIncorrect):
        p12.parse(der, Secret("another passphrase"), "f.p12")
    with pytest.raises(FileMalformed):
        p12.parse(der[:-1], PASS, "f.p12")
    with pytest.raises(FileMalformed):
        p12.parse(b"", PASS, "f.p12")


@pytest.mark.parametrize(("text", "why"), [
    ("short", "fewer than 12 characters"),
    ("abababababababab", "fewer than 6 different characters"),
    ("the key Bicle-2026 of ours", "contains the key's name"),
])
def test_weak_passphrases(text: str, why: str) -> None:
    with pytest.raises(PassphraseWeak, match=why) as caught:
        p12.check_strength(Secret(text), "BICLE-2026")
    assert text not in str(caught.value)


def test_good_passphrase() -> None:
    p12.check_strength(Secret("correct horse battery staple"), "BICLE-2026")
