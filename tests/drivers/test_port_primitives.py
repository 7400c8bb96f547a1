"""The port's key-sharing primitives on SoftHSM2, through both adapters: secret
(AES) key generation, create, wrap and unwrap (AES key wrap with padding, RSA
OAEP), destroy. Key export/import/transport build on exactly these calls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tokenkeys.config import Config
from tokenkeys.drivers.p11 import ck, templates
from tokenkeys.drivers.p11.ckr import CkrError
from tokenkeys.drivers.p11.port import Mech, OaepParam, Session
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.services.signing import self_signed
from tokenkeys.types import Algorithm, KeySpec, PinSource
from tokenkeys.uri import parse_pkcs11

pytestmark = pytest.mark.softhsm
WRAP_PAD = Mech(ck.CKM_AES_KEY_WRAP_PAD)
OAEP_SHA1 = Mech(ck.CKM_RSA_PKCS_OAEP, oaep=OaepParam(ck.CKM_SHA_1, ck.CKG_MGF1_SHA1))


@pytest.fixture(params=["python-pkcs11", "pykcs11"])
def token(request: pytest.FixtureRequest, softhsm: Any, token_label: str,
          tmp_path: Path) -> Iterator[P11Token]:
    pin = tmp_path / "pin"
    pin.write_text(softhsm.pin)
    tok = P11Token.open(parse_pkcs11(softhsm.uri(token_label)), Config(), binding=request.param)
    with tok:
        tok.login(PinSource(file=pin, interactive=False))
        yield tok


def _aes(session: Session, *, extractable: bool = False) -> Any:
    mech, tpl = templates.aes_key(256, extractable=extractable)
    return session.generate_key(mech, tpl)


def _private_template() -> dict[int, Any]:
    return {ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_KEY_TYPE: ck.CKK_RSA, ck.CKA_TOKEN: False,
            ck.CKA_PRIVATE: True, ck.CKA_SENSITIVE: True, ck.CKA_EXTRACTABLE: False,
            ck.CKA_DECRYPT: True, ck.CKA_SIGN: False, ck.CKA_UNWRAP: False}


def test_aes_key_wrap_pad_round_trip(token: P11Token) -> None:
    key = token.generate_keypair(KeySpec("shared", Algorithm.RSA2048, shareable=True))
    session = token.session()
    aes = _aes(session)
    assert session.get(aes, [ck.CKA_VALUE_LEN, ck.CKA_EXTRACTABLE]) == {
        ck.CKA_VALUE_LEN: 32, ck.CKA_EXTRACTABLE: False}
    wrapped = session.wrap(aes, key.private_object, WRAP_PAD)
    copy = session.unwrap(aes, WRAP_PAD, wrapped, _private_template())
    public = key.public_key
    assert isinstance(public, rsa.RSAPublicKey)
    ct = public.encrypt(b"content key", padding.PKCS1v15())
    assert session.decrypt(copy, Mech(ck.CKM_RSA_PKCS), ct) == b"content key"
    session.destroy(copy)
    session.destroy(aes)
    with pytest.raises(CkrError):
        session.get(aes, [ck.CKA_VALUE_LEN])


def test_non_extractable_key_does_not_wrap(token: P11Token) -> None:
    key = token.generate_keypair(KeySpec("kept", Algorithm.EC_P256))
    session = token.session()
    with pytest.raises(CkrError) as caught:
        session.wrap(_aes(session), key.private_object, WRAP_PAD)
    assert "UNEXTRACTABLE" in str(caught.value) or "NOT_WRAPPABLE" in str(caught.value)


def test_rsa_oaep_wraps_an_aes_key(token: P11Token) -> None:
    key = token.generate_keypair(KeySpec("transport", Algorithm.RSA2048))
    session = token.session()
    (pub,) = token.find({ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_ID: key.id})
    aes = _aes(session, extractable=True)
    wrapped = session.wrap(pub, aes, OAEP_SHA1)
    assert len(wrapped) == 256
    _, tpl = templates.aes_key(256, for_unwrap=True)
    copy = session.unwrap(key.private_object, OAEP_SHA1, wrapped, tpl)
    # The same key: AES key wrap is deterministic, so both wrap a third key alike.
    other = _aes(session, extractable=True)
    assert session.wrap(aes, other, WRAP_PAD) == session.wrap(copy, other, WRAP_PAD)


def test_create_and_destroy_an_object(token: P11Token) -> None:
    key = token.generate_keypair(KeySpec("c", Algorithm.EC_P256))
    session = token.session()
    cert = self_signed(key, "c", 1)
    obj = session.create(templates.certificate("c", key.id, cert))
    assert session.get(obj, [ck.CKA_LABEL, ck.CKA_ID]) == {ck.CKA_LABEL: "c", ck.CKA_ID: key.id}
    session.destroy(obj)
    assert token.find({ck.CKA_CLASS: ck.CKO_CERTIFICATE, ck.CKA_ID: key.id}) == []


def test_both_bindings_name_the_mechanisms_alike(softhsm: Any, token_label: str) -> None:
    """PyKCS11 calls 0x1040 ECDSA_KEY_PAIR_GEN (PKCS#11 2.11): rules that ask for
    EC_KEY_PAIR_GEN (an EC encryption key needs ECDH too) must see it either way."""
    seen = []
    for binding in ("python-pkcs11", "pykcs11"):
        with P11Token.open(parse_pkcs11(softhsm.uri(token_label)), Config(),
                           binding=binding) as tok:
            seen.append(tok.mechanisms())
    for names in seen:
        assert "EC_KEY_PAIR_GEN" in names and "ECDSA_KEY_PAIR_GEN" not in names
    # PyKCS11 may know more (SoftHSM2 2.7's ML_DSA); never another name for the same.
    assert seen[0] <= seen[1]
