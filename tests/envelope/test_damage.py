"""Damaged, hostile and wrong inputs: always a TokenKeysError, never a stray file."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tokenkeys.envelope import (
    SealOptions,
    SoftwareIdentity,
    describe_recipients,
    open_envelope,
    seal,
)
from tokenkeys.envelope.algorithms import ContentCipher, encode_content_cipher
from tokenkeys.envelope.ber import encode_oid, tlv
from tokenkeys.envelope.seal import build_recipient_infos
from tokenkeys.errors import (
    DeviceError,
    EnvelopeIntegrity,
    EnvelopeMalformed,
    KeyNotFound,
    MechanismUnsupported,
    NoMatchingRecipient,
    OutputExists,
    TokenKeysError,
    TokenNotFound,
)

from .conftest import KeyPair, leftovers, needs_openssl, openssl

PLAINTEXT = bytes(range(256)) * 3
FULL = os.environ.get("TOKENKEYS_STRESS") == "full"


@pytest.fixture(scope="module")
def sealed(keys: dict[str, KeyPair], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("sealed")
    seal(io.BytesIO(PLAINTEXT), d / "e", [keys["rsa"].cert])
    return (d / "e").read_bytes()


def _try_open(tmp_path: Path, data: bytes,
              identities: Sequence[SoftwareIdentity]) -> Exception | None:
    """Open `data`; returns the error, or None if it opened to exactly PLAINTEXT."""
    env = tmp_path / "env.p7m"
    env.write_bytes(data)
    dst = tmp_path / "out.bin"
    try:
        open_envelope(env, dst, identities)
    except TokenKeysError as exc:
        assert leftovers(tmp_path, {"env.p7m"}) == [], "output or temp file left behind"
        return exc
    # Unauthenticated header fields (version, identifiers, ...) may change and
    # still open; but the content released must be the original, byte for byte.
    assert dst.read_bytes() == PLAINTEXT
    dst.unlink()
    return None


def _flip_positions(sealed: bytes) -> list[int]:
    """Every byte with TOKENKEYS_STRESS=full; by default every byte of the framing and
    recipient header (where the parser's decisions are), and every 7th byte after it."""
    if FULL:
        return list(range(len(sealed)))
    header = sealed.index(bytes([0x04, 0x82, 0x03, 0x00]))  # first ciphertext chunk
    return [*range(header + 4), *range(header + 4, len(sealed), 7), len(sealed) - 1]


@pytest.mark.parametrize("mode", [pytest.param("sample"),
                                  pytest.param("full", marks=pytest.mark.stress)])
def test_flip_every_byte(keys: dict[str, KeyPair], tmp_path: Path, sealed: bytes,
                         mode: str) -> None:
    if mode == "full" and not FULL:
        pytest.skip("the full sweep runs with TOKENKEYS_STRESS=full")
    ident = [keys["rsa"].identity()]
    positions = _flip_positions(sealed)
    failures = 0
    for pos in positions:
        for mask in (0x01, 0x80):
            mutated = bytearray(sealed)
            mutated[pos] ^= mask
            if _try_open(tmp_path, bytes(mutated), ident) is not None:
                failures += 1
    assert failures > len(positions)  # nearly every flip is caught


def test_flip_tag_and_ciphertext_is_integrity(keys: dict[str, KeyPair], tmp_path: Path,
                                             sealed: bytes) -> None:
    ident = [keys["rsa"].identity()]
    # The tag is the last OCTET STRING before the three closing EOCs.
    tag_start = len(sealed) - 6 - 16
    ct_start = sealed.index(bytes([0x04, 0x82, 0x03, 0x00]))  # 768-byte ciphertext chunk
    for pos in (tag_start, tag_start + 15, ct_start + 4, ct_start + 400, ct_start + 771):
        mutated = bytearray(sealed)
        mutated[pos] ^= 0x40
        assert isinstance(_try_open(tmp_path, bytes(mutated), ident), EnvelopeIntegrity), pos


def test_truncate_everywhere(keys: dict[str, KeyPair], tmp_path: Path, sealed: bytes) -> None:
    ident = [keys["rsa"].identity()]
    for cut in range(len(sealed)):
        assert _try_open(tmp_path, sealed[:cut], ident) is not None, cut


@needs_openssl
def test_damage_openssl_stream(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    src = tmp_path / "p"
    src.write_bytes(PLAINTEXT)
    openssl("cms", "-encrypt", "-binary", "-stream", "-aes-256-gcm", "-outform", "DER",
            "-in", src, "-out", tmp_path / "s", "-recip", keys["rsa"].cert_pem)
    data = (tmp_path / "s").read_bytes()
    src.unlink()
    (tmp_path / "s").unlink()
    ident = [keys["rsa"].identity()]
    for pos in range(0, len(data), 3):
        mutated = bytearray(data)
        mutated[pos] ^= 0x10
        _try_open(tmp_path, bytes(mutated), ident)
    for cut in range(0, len(data), 5):
        assert _try_open(tmp_path, data[:cut], ident) is not None


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (random.Random(20).randbytes(4096), "not a CMS"),  # fixed: 1 in 150 looks like BER
    (b"\x30" + os.urandom(4095), ""),
    (b"-----BEGIN CMS-----\nMIIB!!!notbase64\n-----END CMS-----\n", "base64"),
    (b"-----BEGIN CMS-----\nMIIBiwYJKoZIhvcNAQcDoIIBfDCCAXgCAQAx\n", "END"),
    (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "not a CMS"),
    (b"Content-Type: text/plain\n\nhello\n", "pkcs7-mime"),
    (b"Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: 7bit\n\nhi\n", "base64"),
    (b"\x30\x0f" + encode_oid("1.2.840.113549.1.7.1") + b"\xa0\x02\x04\x00", "id-data"),
    (b"\x30\x80\x06\x03\x2a\x03\x04", "not an encrypted envelope"),
])
def test_garbage_inputs(keys: dict[str, KeyPair], tmp_path: Path, data: bytes,
                        message: str) -> None:
    exc = _try_open(tmp_path, data, [keys["rsa"].identity()])
    assert isinstance(exc, EnvelopeMalformed), exc
    assert message in str(exc)
    assert "\n" not in str(exc)
    with pytest.raises(EnvelopeMalformed):
        describe_recipients(tmp_path / "env.p7m")


def test_trailing_garbage(keys: dict[str, KeyPair], tmp_path: Path, sealed: bytes) -> None:
    exc = _try_open(tmp_path, sealed + b"\x00", [keys["rsa"].identity()])
    assert isinstance(exc, EnvelopeMalformed) and "trailing" in str(exc)


@needs_openssl
def test_unsupported_cipher(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    src = tmp_path / "p"
    src.write_bytes(b"hello")
    openssl("cms", "-encrypt", "-binary", "-des3", "-outform", "DER", "-in", src,
            "-out", tmp_path / "d", "-recip", keys["rsa"].cert_pem)
    data = (tmp_path / "d").read_bytes()
    src.unlink()
    (tmp_path / "d").unlink()
    exc = _try_open(tmp_path, data, [keys["rsa"].identity()])
    assert isinstance(exc, MechanismUnsupported) and "1.2.840.113549.3.7" in str(exc)


def test_v15_wrong_key_is_integrity(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    """Bleichenbacher countermeasure: a failed v1.5 decrypt looks like a bad tag/padding."""
    impostor = SoftwareIdentity(keys["rsa2"].key, keys["rsa"].cert, "impostor")
    for auth in (False, True):
        env = tmp_path / "e"
        seal(io.BytesIO(PLAINTEXT), env, [keys["rsa"].cert],
             SealOptions(authenticated=auth, key_transport="pkcs1v15"))
        data = env.read_bytes()
        env.unlink()
        for _ in range(20):  # CBC padding is "valid" by chance 1 in 256: must not matter
            exc = _try_open(tmp_path, data, [impostor])
            assert isinstance(exc, EnvelopeIntegrity), exc


@pytest.mark.parametrize("padding_name", ["pkcs1v15", "oaep-sha256"])
def test_device_failure_is_not_a_damaged_envelope(keys: dict[str, KeyPair], tmp_path: Path,
                                                  padding_name: str) -> None:
    """The v1.5 countermeasure hides a bad padding only: a device that fails is raised."""
    failures = [TokenNotFound("simulated: the device was removed"),
                DeviceError("simulated: CKR_DEVICE_ERROR"), KeyNotFound("simulated: key gone")]

    class Failing(SoftwareIdentity):
        error: Exception = failures[0]

        def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
            raise self.error

    env = tmp_path / "e"
    seal(io.BytesIO(PLAINTEXT), env, [keys["rsa"].cert], SealOptions(key_transport=padding_name))
    data = env.read_bytes()
    env.unlink()
    for error in failures:
        ident = Failing(keys["rsa"].key, keys["rsa"].cert, "failing")
        ident.error = error
        exc = _try_open(tmp_path, data, [ident])
        assert exc is error, exc
        assert not leftovers(tmp_path, {"env.p7m"})


def test_v15_bad_padding_is_integrity(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    class BadPadding(SoftwareIdentity):
        def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
            raise EnvelopeIntegrity("RSA decryption failed")  # what a device key raises

    env = tmp_path / "e"
    seal(io.BytesIO(PLAINTEXT), env, [keys["rsa"].cert], SealOptions(key_transport="pkcs1v15"))
    data = env.read_bytes()
    env.unlink()
    exc = _try_open(tmp_path, data, [BadPadding(keys["rsa"].key, keys["rsa"].cert, "bad")])
    assert isinstance(exc, EnvelopeIntegrity)


def test_no_matching_recipient(keys: dict[str, KeyPair], tmp_path: Path, sealed: bytes) -> None:
    exc = _try_open(tmp_path, sealed, [keys["rsa2"].identity("card A"),
                                       keys["p384"].identity("card B")])
    assert isinstance(exc, NoMatchingRecipient)
    assert exc.tried == ("card A", "card B")
    assert len(exc.recipients) == 1 and "rsaes-oaep-sha256" in exc.recipients[0]
    assert "card A" in str(exc)


def test_open_refuses_existing_output(keys: dict[str, KeyPair], tmp_path: Path,
                                      sealed: bytes) -> None:
    env = tmp_path / "env.p7m"
    env.write_bytes(sealed)
    dst = tmp_path / "out"
    dst.write_bytes(b"old")
    with pytest.raises(OutputExists):
        open_envelope(env, dst, [keys["rsa"].identity()])
    assert dst.read_bytes() == b"old"
    open_envelope(env, dst, [keys["rsa"].identity()], overwrite=True)
    assert dst.read_bytes() == PLAINTEXT


def test_interrupt_leaves_nothing(keys: dict[str, KeyPair], tmp_path: Path,
                                  sealed: bytes) -> None:
    class Interrupted(SoftwareIdentity):
        def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
            raise KeyboardInterrupt

    env = tmp_path / "env.p7m"
    env.write_bytes(sealed)
    with pytest.raises(KeyboardInterrupt):
        open_envelope(env, tmp_path / "out", [Interrupted(keys["rsa"].key, keys["rsa"].cert)])
    assert leftovers(tmp_path, {"env.p7m"}) == []


def _auth_enveloped_with_attrs(keys: dict[str, KeyPair]) -> tuple[bytes, int]:
    """RFC 5083 AuthEnvelopedData with authAttrs (AAD), built by hand."""
    cek, nonce = os.urandom(32), os.urandom(12)
    ris, _ = build_recipient_infos([keys["rsa"].cert], cek, SealOptions())
    attrs = cms.CMSAttributes([{"type": "content_type", "values": ["data"]}]).dump()
    sealed = AESGCM(cek).encrypt(nonce, PLAINTEXT, attrs)
    ct, tag = sealed[:-16], sealed[-16:]
    eci = tlv(0x30, encode_oid("1.2.840.113549.1.7.1")
              + encode_content_cipher(ContentCipher("gcm", 32, nonce)) + tlv(0x80, ct))
    auth_attrs = b"\xa1" + attrs[1:]
    body = tlv(0x30, tlv(0x02, b"\x00") + ris + eci + auth_attrs + tlv(0x04, tag))
    data = tlv(0x30, encode_oid("1.2.840.113549.1.9.16.1.23") + tlv(0xA0, body))
    return data, data.index(auth_attrs)


def test_auth_attrs_are_authenticated(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    data, at = _auth_enveloped_with_attrs(keys)
    assert _try_open(tmp_path, data, [keys["rsa"].identity()]) is None
    mutated = bytearray(data)
    mutated[-16 - 2 - 3] ^= 1  # inside the OID value of the content-type attribute
    assert at < len(data) - 21
    exc = _try_open(tmp_path, bytes(mutated), [keys["rsa"].identity()])
    assert isinstance(exc, (EnvelopeIntegrity, EnvelopeMalformed))


def test_bad_cipher_parameters_message_names_no_exception(keys: dict[str, KeyPair],
                                                          tmp_path: Path, sealed: bytes) -> None:
    """Regression: "malformed content encryption algorithm (ValueError)" named a Python class."""
    nonce_param = sealed.index(bytes([0x30, 0x11, 0x04, 0x0C]))  # GCMParameters, 12-byte nonce
    mutated = bytearray(sealed)
    mutated[nonce_param + 2] = 0x02  # the nonce becomes an INTEGER
    exc = _try_open(tmp_path, bytes(mutated), [keys["rsa"].identity()])
    assert isinstance(exc, EnvelopeMalformed)
    assert "content encryption algorithm" in str(exc)
    assert "Error" not in str(exc) and "(" + "ValueError" not in str(exc)
