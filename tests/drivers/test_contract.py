"""The driver contract, run against every combination: the software keystore, the
one PKCS#11 token on SoftHSM2 through python-pkcs11 and through PyKCS11, on an
emulated TPM 2.0 (tpm2-pkcs11) and on opencryptoki's software token. (PyKCS11 on
the emulated card: tests/smartcard; the fake port: test_fake_port.py.)

What a device does not offer (EC on opencryptoki, ECDH on the TPM) is skipped,
naming the missing mechanism from the device's own list.

Everything above the driver layer relies on exactly these behaviours.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.cli.share_support import FAST_KDF
from tests.conftest import new_tpm_token, reset_opencryptoki
from tokenkeys.config import Config
from tokenkeys.drivers import Token, open_token, software
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.drivers.software import SoftwareToken
from tokenkeys.errors import (
    DeviceError,
    KeyExists,
    KeyNotFound,
    MechanismUnsupported,
    PinIncorrect,
    TokenKeysError,
)
from tokenkeys.services import token_keys
from tokenkeys.types import Algorithm, PinSource, Secret

PIN = "123456"
SOFT_PIN = "contract keystore PIN"  # the software keystore refuses short PINs


# "tpm2" and "opencryptoki" are devices, through python-pkcs11 (their default binding).
@pytest.fixture(params=["software", "python-pkcs11", "pykcs11", "tpm2",
                        pytest.param("opencryptoki", marks=pytest.mark.serial)])
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def token_uri(binding: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty token whose user PIN is PIN (SOFT_PIN for the software keystore)."""
    if binding == "software":
        with mock.patch.object(software, "ARGON2ID", FAST_KDF):  # cheap; see share_support
            SoftwareToken.init(tmp_path / "ks", "contract", Secret(SOFT_PIN))
        return f"soft:{tmp_path / 'ks'}"
    if binding == "tpm2":
        tpm = request.getfixturevalue("tpm2")
        return str(tpm.uri(new_tpm_token(tpm, "contract")))
    if binding == "opencryptoki":
        return reset_opencryptoki(request.getfixturevalue("opencryptoki"))
    softhsm: Any = request.getfixturevalue("softhsm")
    return str(softhsm.uri(request.getfixturevalue("token_label")))


def _open(uri: str, binding: str) -> Token:
    device = binding in ("software", "tpm2", "opencryptoki")
    return open_token(uri, Config(), binding=None if device else binding)


def _needs(token: Token, *mechanisms: str) -> None:
    """Skip, naming what the device lacks (its own mechanism list)."""
    missing = [m for m in mechanisms if m not in token.mechanisms()]
    if missing:
        pytest.skip(f"{token.info().label}: the device offers no {', '.join(missing)}")


def _ec_or_rsa(token: Token) -> Algorithm:
    """EC P-256 where the device makes EC encryption keys, else RSA-2048."""
    mechs = token.mechanisms()
    return (Algorithm.EC_P256 if {"EC_KEY_PAIR_GEN", "ECDH1_DERIVE"} <= mechs
            else Algorithm.RSA2048)


@pytest.fixture
def token(token_uri: str, binding: str, tmp_path: Path) -> Iterator[Token]:
    with _open(token_uri, binding) as tok:
        tok.login(_pins(SOFT_PIN if binding == "software" else PIN, tmp_path))
        yield tok


def _pins(pin: str, tmp_path: Path) -> PinSource:
    pin_file = tmp_path / "pin"
    pin_file.write_text(pin + "\n")
    return PinSource(file=pin_file, interactive=False)


@pytest.mark.parametrize("algorithm", [Algorithm.RSA2048, Algorithm.EC_P256, Algorithm.EC_P384])
def test_generate_signs_certificate_on_token(token: Token, algorithm: Algorithm) -> None:
    if not algorithm.is_rsa:
        _needs(token, "EC_KEY_PAIR_GEN", "ECDH1_DERIVE")
    record = token_keys.generate_key(token, "bid-key", cn="Buyer CN", algorithm=algorithm, days=60)
    key = token.find_key(label="bid-key")
    cert = key.certificate
    assert cert is not None
    cert.verify_directly_issued_by(cert)
    assert record.cn == "Buyer CN" and record.algorithm == algorithm.value
    assert cert.public_key() == key.public_key
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest == key.id == x509.SubjectKeyIdentifier.from_public_key(key.public_key).digest
    days = (cert.not_valid_after_utc - datetime.now(UTC)) / timedelta(days=1)
    assert 59.9 < days <= 60.01
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment if algorithm.is_rsa else usage.key_agreement
    assert not key.extractable
    assert record.status == "valid"
    # The URI it prints names the designation, not the provisional label it was made under.
    assert record.uri == key.uri and token_keys.PROVISIONAL not in record.uri
    assert token_keys.resolve_key(token, record.uri).id == key.id


def test_shareable_key_is_extractable(token: Token) -> None:
    if isinstance(token, P11Token) and "AES_KEY_WRAP_PAD" not in token.mechanisms():
        # A key this device cannot wrap out could never be shared: refused, nothing made.
        with pytest.raises(MechanismUnsupported, match="AES_KEY_WRAP_PAD"):
            token_keys.generate_key(token, "shared", algorithm=Algorithm.RSA2048,
                                    shareable=True)
        assert token.list_keys() == []
        return
    token_keys.generate_key(token, "shared", algorithm=_ec_or_rsa(token), shareable=True)
    assert token.find_key(label="shared").extractable


def test_find_list_delete(token: Token) -> None:
    token_keys.generate_key(token, "a", algorithm=_ec_or_rsa(token))
    token_keys.generate_key(token, "b", algorithm=_ec_or_rsa(token))
    assert sorted(k.label for k in token.list_keys()) == ["a", "b"]
    b = token.find_key(label="b")
    assert token.find_key(key_id=b.id).label == "b"
    token.delete(b)
    with pytest.raises(KeyNotFound):
        token.find_key(label="b")
    assert [k.label for k in token.list_keys()] == ["a"]
    with pytest.raises(KeyNotFound):
        token.find_key(label="nope")


def test_duplicate_name_changes_nothing(token: Token) -> None:
    token_keys.generate_key(token, "dup", algorithm=_ec_or_rsa(token))
    before = [(k.label, k.id) for k in token.list_keys()]
    with pytest.raises(KeyExists):
        token_keys.generate_key(token, "dup", algorithm=_ec_or_rsa(token))
    assert [(k.label, k.id) for k in token.list_keys()] == before


def test_rsa_decrypt_every_padding(token: Token) -> None:
    token_keys.generate_key(token, "rsa", algorithm=Algorithm.RSA2048)
    key = token.find_key(label="rsa")
    public = key.public_key
    assert isinstance(public, rsa.RSAPublicKey)
    cek = bytes(range(32))
    for pad in (
        padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None),
        padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
        padding.OAEP(padding.MGF1(hashes.SHA512()), hashes.SHA384(), None),
        padding.PKCS1v15(),
    ):
        assert key.decrypt(public.encrypt(cek, pad), pad) == cek


def test_ecdh_matches_software(token: Token) -> None:
    _needs(token, "EC_KEY_PAIR_GEN", "ECDH1_DERIVE")
    token_keys.generate_key(token, "ec", algorithm=Algorithm.EC_P384)
    key = token.find_key(label="ec")
    assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
    peer = ec.generate_private_key(ec.SECP384R1())
    assert key.derive_ecdh(peer.public_key()) == peer.exchange(ec.ECDH(), key.public_key)


def test_sign_verifies(token: Token) -> None:
    token_keys.generate_key(token, "s", algorithm=_ec_or_rsa(token))
    key = token.find_key(label="s")
    for algorithm in (hashes.SHA256(), hashes.SHA384()):
        signature = key.sign(b"data", algorithm)
        if isinstance(key.public_key, ec.EllipticCurvePublicKey):
            key.public_key.verify(signature, b"data", ec.ECDSA(algorithm))
        else:
            key.public_key.verify(signature, b"data", padding.PKCS1v15(), algorithm)


def test_wrong_pin(token_uri: str, binding: str, tmp_path: Path) -> None:
    with pytest.raises(PinIncorrect) as info, _open(token_uri, binding) as tok:
        tok.login(_pins("999999", tmp_path))
    assert "999999" not in str(info.value)
    assert isinstance(info.value, TokenKeysError)


def test_generation_failing_half_way_leaves_nothing(token: Token,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The certificate cannot be stored: the new key pair is destroyed again."""
    token_keys.generate_key(token, "kept", algorithm=_ec_or_rsa(token))
    before = [(k.label, k.id) for k in token.list_keys()]

    def refuse(*_: object) -> None:
        raise DeviceError("simulated: the token is full")

    monkeypatch.setattr(token, "store_certificate", refuse)
    with pytest.raises(DeviceError, match="simulated"):
        token_keys.generate_key(token, "doomed", algorithm=_ec_or_rsa(token))
    assert [(k.label, k.id) for k in token.list_keys()] == before
    with pytest.raises(KeyNotFound):
        token.find_key(label="doomed")
