"""The bounded PKCS#12 reader below the CLI: the
multi-block RFC 7292 KDF against files OpenSSL decrypts, no library warning on BER,
and keys hidden in an encrypted container counted before any is decrypted."""

from __future__ import annotations

import warnings

import pytest
from asn1crypto import cms as a1cms
from asn1crypto import pkcs12 as a1p12
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cli import p12_hostile as hostile
from tests.cli.share_support import PASSPHRASE
from tokenkeys.errors import FileMalformed
from tokenkeys.services import pkcs12_read, share_pkcs12
from tokenkeys.types import Secret


@pytest.fixture(scope="module")
def good() -> bytes:
    key = rsa.generate_private_key(65537, 2048)
    return hostile.p12(key, hostile.certificate("Agent", key))


def test_ber_opens_without_any_warning(good: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        contents = share_pkcs12.parse(hostile.ber(good), Secret(PASSPHRASE), "ber.p12")
    assert contents.certificate.subject.rfc4514_string() == "CN=Agent"


def test_keys_inside_an_encrypted_container_are_counted(good: bytes) -> None:
    """A second key hidden inside the (decrypted) certificate container is refused
    before the key bags are decrypted: re-encrypt the container with a key bag added."""
    import hashlib

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    pfx = a1p12.Pfx.load(good)
    infos = list(a1p12.AuthenticatedSafe.load(pfx["auth_safe"]["content"].native))
    enc = next(i for i in infos if i["content_type"].native == "encrypted_data")
    plain_bags = next(i for i in infos if i["content_type"].native == "data")
    key_bag = next(b for b in a1p12.SafeContents.load(plain_bags["content"].native))
    info = enc["content"]["encrypted_content_info"]
    alg = info["content_encryption_algorithm"]
    kdf = alg["parameters"]["key_derivation_func"]["parameters"]
    aes_key = hashlib.pbkdf2_hmac("sha256", PASSPHRASE.encode(), kdf["salt"].native,
                                  kdf["iteration_count"].native, 32)
    iv = alg["parameters"]["encryption_scheme"]["parameters"].native
    dec = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    unpad = padding.PKCS7(128).unpadder()
    raw = unpad.update(dec.update(info["encrypted_content"].native) + dec.finalize())
    bags = [*a1p12.SafeContents.load(raw + unpad.finalize()), key_bag]
    padder = padding.PKCS7(128).padder()
    data = a1p12.SafeContents([a1p12.SafeBag.load(b.dump(force=True)) for b in bags]).dump()
    enc_ = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    info["encrypted_content"] = enc_.update(padder.update(data) + padder.finalize()) + \
        enc_.finalize()
    rebuilt = [a1cms.ContentInfo.load(i.dump(force=True)) for i in infos]
    auth = a1cms.ContentInfo({"content_type": "data",
                              "content": a1p12.AuthenticatedSafe(rebuilt).dump()})
    two = a1p12.Pfx({"version": "v3", "auth_safe": auth}).dump(force=True)  # no MAC
    with pytest.raises(FileMalformed, match="holds 2 private keys"):
        pkcs12_read.read(two, Secret(PASSPHRASE), "two.p12")
