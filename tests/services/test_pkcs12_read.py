"""The bounded PKCS#12 reader below the CLI: RC2 against RFC 2268's vectors, the
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
from tokenkeys.services.pkcs12_rc2 import PITABLE, _rc2_block, _rc2_schedule
from tokenkeys.types import Secret

# RFC 2268 section 5: key, effective bits, plaintext, ciphertext.
RC2_VECTORS = [
    ("0000000000000000", 63, "0000000000000000", "ebb773f993278eff"),
    ("ffffffffffffffff", 64, "ffffffffffffffff", "278b27e42e2f0d49"),
    ("3000000000000000", 64, "1000000000000001", "30649edf9be7d2c2"),
    ("88", 64, "0000000000000000", "61a8a244adacccf0"),
    ("88bca90e90875a", 64, "0000000000000000", "6ccf4308974c267f"),
    ("88bca90e90875a7f0f79c384627bafb2", 64, "0000000000000000", "1a807d272bbe5db1"),
    ("88bca90e90875a7f0f79c384627bafb2", 128, "0000000000000000", "2269552ab0f85ca6"),
]


@pytest.mark.parametrize(("key", "bits", "plain", "cipher"), RC2_VECTORS)
def test_rc2_decrypts_rfc2268_vectors(key: str, bits: int, plain: str, cipher: str) -> None:
    assert sorted(PITABLE) == list(range(256))
    schedule = _rc2_schedule(bytes.fromhex(key), bits)
    assert _rc2_block(schedule, bytes.fromhex(cipher)).hex() == plain


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
