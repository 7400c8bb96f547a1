"""Typed recipients parsed from RecipientInfos, and what is said of a recipient
tokenkeys cannot open (a named one, or a KEK one nobody can)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import x509 as a1x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15

from tokenkeys.envelope import SealOptions, describe_recipients, open_envelope, seal
from tokenkeys.envelope.cek import recover_cek
from tokenkeys.envelope.identity_view import IdentityView
from tokenkeys.envelope.recipients import (
    KeyAgreeRecipient,
    KeyTransRecipient,
    UnsupportedRecipient,
    parse_recipient_infos,
)
from tokenkeys.errors import MechanismUnsupported, NoMatchingRecipient
from tokenkeys.keyalg import OaepPadding

from .conftest import KeyPair, needs_openssl, openssl


def _ktri(pair: KeyPair, algorithm: dict[str, object]) -> bytes:
    cert = a1x509.Certificate.load(pair.cert.public_bytes(serialization.Encoding.DER))
    rid = cms.RecipientIdentifier({"issuer_and_serial_number": {
        "issuer": cert.issuer, "serial_number": cert.serial_number}})
    info = cms.RecipientInfo({"ktri": {"version": "v0", "rid": rid,
                                       "key_encryption_algorithm": algorithm,
                                       "encrypted_key": b"\x01" * 256}})
    return bytes(info.dump())


def test_each_recipient_has_its_own_type(keys: dict[str, KeyPair]) -> None:
    v15 = _ktri(keys["rsa"], {"algorithm": "rsaes_pkcs1v15"})
    oaep = _ktri(keys["rsa"], {"algorithm": "rsaes_oaep", "parameters": {
        "hash_algorithm": {"algorithm": "sha256"},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha1"}}}})
    other = _ktri(keys["rsa"], {"algorithm": "1.2.3.4"})
    first, second, third = parse_recipient_infos([v15, oaep, other])
    assert isinstance(first, KeyTransRecipient) and isinstance(first.padding, PKCS1v15)
    assert not first.detectable and first.transport == "rsa-pkcs1v15"
    assert isinstance(second, KeyTransRecipient) and isinstance(second.padding, OaepPadding)
    assert second.detectable and second.transport == "rsaes-oaep-sha256-mgf1-sha1"
    assert second.padding.mgf_algorithm.name == "sha1" and second.padding.label is None
    assert isinstance(third, UnsupportedRecipient)
    assert (third.kind, third.reason) == ("ktri", "key transport 1.2.3.4")


def test_a_named_but_unsupported_recipient_says_why(keys: dict[str, KeyPair]) -> None:
    recipients = parse_recipient_infos([_ktri(keys["rsa"], {"algorithm": "1.2.3.4"})])
    with pytest.raises(MechanismUnsupported) as caught:
        recover_cek(recipients, [IdentityView.of(keys["rsa"].identity())], 32)
    assert f"{recipients[0].rid_text()} uses key transport 1.2.3.4" in str(caught.value)
    assert "is not supported by tokenkeys" in str(caught.value)


def test_key_agreement_recipient(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    env = tmp_path / "e.p7m"
    seal(io.BytesIO(b"bid"), env, [keys["p256"].cert], SealOptions())
    infos = cms.ContentInfo.load(env.read_bytes())["content"]["recipient_infos"]
    (recipient,) = parse_recipient_infos([bytes(info.dump()) for info in infos])
    assert isinstance(recipient, KeyAgreeRecipient) and recipient.detectable
    view = IdentityView.of(keys["p256"].identity())
    assert recipient.matches(view) and not recipient.matches(
        IdentityView.of(keys["p384"].identity()))
    opened = recover_cek([recipient], [view], 32)
    assert opened.genuine and len(opened.cek) == 32
    assert recipient.transport_for(view) == f"ecdh-p256-{recipient.agreement.transport}"


@needs_openssl
def test_kek_recipient_is_described_and_never_opened(keys: dict[str, KeyPair],
                                                     tmp_path: Path) -> None:
    (tmp_path / "bid").write_bytes(b"bid")
    env = tmp_path / "kek.p7m"
    openssl("cms", "-encrypt", "-binary", "-in", tmp_path / "bid", "-out", env,
            "-outform", "DER", "-aes-256-gcm", "-secretkey", "00" * 32, "-secretkeyid", "01")
    assert describe_recipients(env) == ["kekri recipient [kekri recipient info]"]
    with pytest.raises(NoMatchingRecipient):
        open_envelope(env, tmp_path / "out", [keys["rsa"].identity()])

