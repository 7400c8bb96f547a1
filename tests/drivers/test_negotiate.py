"""Mechanism negotiation and the software OAEP decoder: pure unit tests, no device."""

from __future__ import annotations

import functools
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tokenkeys.drivers.negotiate import (
    SHA1_ONLY,
    MechanismRefused,
    OaepSpec,
    RsaNegotiator,
    oaep_spec,
)
from tokenkeys.drivers.oaep import DecryptFailed, oaep_decode
from tokenkeys.errors import EnvelopeIntegrity, MechanismUnsupported, UsageError
from tokenkeys.keyalg import OaepPadding


@functools.cache
def _key() -> rsa.RSAPrivateKey:
    """Generated on first use, not at import (collection stays fast and side-effect free)."""
    return rsa.generate_private_key(65537, 2048)

K = 256
HASHES = [hashes.SHA1, hashes.SHA224, hashes.SHA256, hashes.SHA384, hashes.SHA512]


def raw_decrypt(ct: bytes) -> bytes:
    n = _key().private_numbers()
    m = pow(int.from_bytes(ct, "big"), n.d, n.public_numbers.n)
    return m.to_bytes(K, "big")


def oaep(h: hashes.HashAlgorithm, mgf: hashes.HashAlgorithm | None = None,
         label: bytes | None = None) -> padding.OAEP:
    return padding.OAEP(padding.MGF1(mgf or h), h, label)


class FakeOps:
    """Records which primitive was used; OAEP only accepts SHA-1 like SoftHSM."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def oaep(self, ct: bytes, h: str, mgf: str, label: bytes | None) -> bytes:
        self.calls.append("oaep")
        if (h, mgf, label) != ("sha1", "sha1", None):
            raise MechanismRefused()
        return _key().decrypt(ct, oaep(hashes.SHA1()))

    def raw(self, ct: bytes) -> bytes:
        self.calls.append("raw")
        return raw_decrypt(ct)

    def pkcs1(self, ct: bytes) -> bytes:
        self.calls.append("pkcs1")
        if ct == b"\x01" * K:  # OpenSSL's implicit rejection never fails: simulate a device
            raise DecryptFailed()
        return _key().decrypt(ct, padding.PKCS1v15())


ALL = frozenset({"RSA_PKCS_OAEP", "RSA_X_509", "RSA_PKCS"})


@pytest.mark.parametrize("h", HASHES)
@pytest.mark.parametrize("label", [None, b"a label"])
def test_decoder_matches_cryptography(h: type[hashes.HashAlgorithm], label: bytes | None) -> None:
    for msg in (b"", b"k" * 32, b"x" * (K - 2 * h.digest_size - 2)):
        ct = _key().public_key().encrypt(msg, oaep(h(), label=label))
        assert oaep_decode(raw_decrypt(ct), K, h.name, h.name, label) == msg


def test_decoder_mixed_mgf_hash() -> None:
    ct = _key().public_key().encrypt(b"cek", oaep(hashes.SHA256(), hashes.SHA1()))
    assert oaep_decode(raw_decrypt(ct), K, "sha256", "sha1") == b"cek"


def test_decoder_stripped_leading_zero() -> None:
    ct = _key().public_key().encrypt(b"cek", oaep(hashes.SHA256()))
    assert oaep_decode(raw_decrypt(ct).lstrip(b"\x00"), K, "sha256") == b"cek"


def _errors(block: bytes, **kw: object) -> str:
    with pytest.raises(DecryptFailed) as info:
        oaep_decode(block, K, "sha256", **kw)  # type: ignore[arg-type]
    return str(info.value)


def test_decoder_uniform_error() -> None:
    good = raw_decrypt(_key().public_key().encrypt(b"cek", oaep(hashes.SHA256())))
    messages = {
        _errors(b"\x01" + good[1:]),  # Y != 0
        _errors(good, label=b"other"),  # lHash mismatch
        _errors(good[:100] + bytes([good[100] ^ 1]) + good[101:]),  # masked DB damaged
        _errors(good[:5] + bytes([good[5] ^ 1]) + good[6:]),  # seed damaged
        _errors(b"\x00" * K),  # no separator
        _errors(b"\x01" * (K + 1)),  # too long
        # wrong hash
        _errors(raw_decrypt(_key().public_key().encrypt(b"cek", oaep(hashes.SHA1())))),
    }
    assert len(messages) == 1
    assert issubclass(DecryptFailed, EnvelopeIntegrity)


def test_sha1_goes_to_device_oaep() -> None:
    ops = FakeOps()
    neg = RsaNegotiator(ops, ALL, K, SHA1_ONLY)
    ct = _key().public_key().encrypt(b"cek", oaep(hashes.SHA1()))
    assert neg.decrypt(ct, oaep(hashes.SHA1())) == b"cek"
    assert ops.calls == ["oaep"]


def test_softhsm_sha256_goes_straight_to_raw() -> None:
    ops = FakeOps()
    neg = RsaNegotiator(ops, ALL, K, SHA1_ONLY)
    ct = _key().public_key().encrypt(b"cek", oaep(hashes.SHA256()))
    assert neg.decrypt(ct, oaep(hashes.SHA256())) == b"cek"
    assert ops.calls == ["raw"]


def test_unknown_device_refusal_is_remembered() -> None:
    ops = FakeOps()
    neg = RsaNegotiator(ops, ALL, K, None)
    pad = oaep(hashes.SHA384())
    for _ in range(3):
        ct = _key().public_key().encrypt(b"cek", pad)
        assert neg.decrypt(ct, pad) == b"cek"
    assert ops.calls == ["oaep", "raw", "raw", "raw"]


def test_no_oaep_no_raw_is_unsupported_and_names_offer() -> None:
    neg = RsaNegotiator(FakeOps(), frozenset({"RSA_PKCS", "ECDSA"}), K)
    ct = _key().public_key().encrypt(b"cek", oaep(hashes.SHA256()))
    with pytest.raises(MechanismUnsupported) as info:
        neg.decrypt(ct, oaep(hashes.SHA256()))
    assert info.value.offered == ("RSA_PKCS",)
    assert "RSA_PKCS" in str(info.value)


def test_raw_only_device() -> None:
    ops = FakeOps()
    neg = RsaNegotiator(ops, frozenset({"RSA_X_509"}), K)
    ct = _key().public_key().encrypt(b"cek", oaep(hashes.SHA1()))
    assert neg.decrypt(ct, oaep(hashes.SHA1())) == b"cek"
    assert ops.calls == ["raw"]


def test_pkcs1() -> None:
    ops = FakeOps()
    neg = RsaNegotiator(ops, ALL, K)
    ct = _key().public_key().encrypt(b"cek", padding.PKCS1v15())
    assert neg.decrypt(ct, padding.PKCS1v15()) == b"cek"
    with pytest.raises(DecryptFailed):
        neg.decrypt(b"\x01" * K, padding.PKCS1v15())
    with pytest.raises(MechanismUnsupported):
        RsaNegotiator(ops, frozenset({"RSA_X_509"}), K).decrypt(ct, padding.PKCS1v15())


def test_wrong_length_is_uniform_failure() -> None:
    neg = RsaNegotiator(FakeOps(), ALL, K)
    with pytest.raises(DecryptFailed):
        neg.decrypt(b"\x00" * (K - 1), oaep(hashes.SHA256()))


def test_oaep_padding_carries_its_label_to_the_decoder() -> None:
    ops = FakeOps()
    neg = RsaNegotiator(ops, ALL, K, SHA1_ONLY)
    pad = OaepPadding(hashes.SHA256(), hashes.SHA1(), b"a label")
    ct = _key().public_key().encrypt(b"cek", pad)
    assert neg.decrypt(ct, pad) == b"cek"
    assert ops.calls == ["raw"]
    assert oaep_spec(pad) == OaepSpec("sha256", "sha1", b"a label")


@pytest.mark.parametrize(("pad", "spec"), [
    (oaep(hashes.SHA384(), hashes.SHA512()), OaepSpec("sha384", "sha512")),
    (oaep(hashes.SHA1(), label=b""), OaepSpec("sha1", "sha1")),
    (OaepPadding(hashes.SHA256(), hashes.SHA256(), b""), OaepSpec("sha256", "sha256")),
])
def test_plain_oaep_read_through_public_members(pad: padding.OAEP, spec: OaepSpec) -> None:
    assert oaep_spec(pad) == spec


def test_plain_oaep_mixed_mgf_hash_decrypts() -> None:
    neg = RsaNegotiator(FakeOps(), ALL, K, SHA1_ONLY)
    pad = oaep(hashes.SHA256(), hashes.SHA1())
    ct = _key().public_key().encrypt(b"cek", pad)
    assert neg.decrypt(ct, pad) == b"cek"


def test_plain_oaep_label_or_unknown_mgf_hash_is_refused() -> None:
    with pytest.raises(UsageError, match="OaepPadding"):
        oaep_spec(oaep(hashes.SHA256(), label=b"a label"))
    with pytest.raises(MechanismUnsupported, match="sha256/an unknown mask generation"):
        oaep_spec(oaep(hashes.SHA256(), hashes.SHA3_256()))


def _encoded(db_rest: bytes) -> bytes:
    """EM for DB = lHash(sha256, no label) || db_rest, with a fixed seed."""
    from tokenkeys.drivers.oaep import mgf1

    l_hash = hashlib.sha256(b"").digest()
    db = l_hash + db_rest
    assert len(db) == K - 32 - 1
    seed = bytes(range(32))
    masked_db = bytes(a ^ b for a, b in zip(db, mgf1(seed, len(db), "sha256"), strict=True))
    masked_seed = bytes(a ^ b for a, b in zip(seed, mgf1(masked_db, 32, "sha256"), strict=True))
    return b"\x00" + masked_seed + masked_db


@pytest.mark.parametrize("rest, message", [
    (b"\x00" * 100 + b"\x01" + b"m" * 90, b"m" * 90),
    (b"\x01" + b"m" * 190, b"m" * 190),  # no PS
    (b"\x00" * 190 + b"\x01", b""),  # empty message
    (b"\x00" * 100 + b"\x02" + b"m" * 90, None),  # another byte before the separator
    (b"\x00" * 100 + b"\x03\x01" + b"m" * 89, None),
    (b"\x00" * 191, None),  # no separator
    (b"\xff" + b"\x00" * 189 + b"\x01", None),
])
def test_decoder_separator(rest: bytes, message: bytes | None) -> None:
    em = _encoded(rest)
    if message is None:
        _errors(em)
    else:
        assert oaep_decode(em, K, "sha256") == message
