"""KeyExport, KeyImport and KeyTransport of the one PKCS#11 token on SoftHSM2, through
both bindings (python-pkcs11 and PyKCS11): attributes of what arrives, no session
object left behind on either side, nothing left on a target after a failure."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tokenkeys.config import Config
from tokenkeys.drivers.capabilities import KeyExport, KeyImport, KeyTransport
from tokenkeys.drivers.p11 import ck, templates
from tokenkeys.drivers.p11.share import session_objects
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.errors import CopyFailed, KeyExists, NotExtractable, PolicyRefused, TokenKeysError
from tokenkeys.keyalg import same_key
from tokenkeys.services.share import check_decryption
from tokenkeys.services.share_copy import copy_key
from tokenkeys.services.signing import self_signed
from tokenkeys.types import Algorithm, KeySpec, PinSource
from tokenkeys.uri import parse_pkcs11

pytestmark = pytest.mark.softhsm
Pair = tuple[P11Token, P11Token]


@pytest.fixture(params=["python-pkcs11", "pykcs11"])
def tokens(request: pytest.FixtureRequest, softhsm: Any, tmp_path: Path) -> Iterator[Pair]:
    pin = tmp_path / "pin"
    pin.write_text(softhsm.pin)
    opened = []
    for prefix in ("shs", "shd"):
        tok = P11Token.open(parse_pkcs11(softhsm.uri(softhsm.new_token(prefix))), Config(),
                            binding=request.param)
        tok.login(PinSource(file=pin, interactive=False))
        opened.append(tok)
    yield opened[0], opened[1]
    for tok in opened:
        tok.close()


def _objects(token: P11Token) -> list[tuple[int, bytes]]:
    """(class, CKA_ID) of every token object."""
    found = token.find({ck.CKA_TOKEN: True})
    attrs = [token.session().get(o, [ck.CKA_CLASS, ck.CKA_ID]) for o in found]
    return sorted((a[ck.CKA_CLASS], a[ck.CKA_ID] or b"") for a in attrs)


def _flags(token: P11Token, key_id: bytes) -> dict[int, Any]:
    [obj] = token.find({ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_ID: key_id})
    return token.session().get(obj, [ck.CKA_SENSITIVE, ck.CKA_EXTRACTABLE, ck.CKA_TOKEN])


@pytest.mark.parametrize("algorithm", [Algorithm.RSA2048, Algorithm.EC_P256])
def test_export_import_transport(tokens: Pair, algorithm: Algorithm) -> None:
    src, dst = tokens
    assert isinstance(src, KeyExport | KeyImport | KeyTransport)
    key = src.generate_keypair(KeySpec("K", algorithm, shareable=True))

    pkcs8 = src.export_private_key(key)
    private = serialization.load_der_private_key(bytes(pkcs8), password=None)
    assert same_key(private.public_key(), key.public_key)  # type: ignore[arg-type]
    imported = dst.import_private_key(pkcs8, label="I", shareable=False)
    assert imported.id == key.id and not imported.extractable
    assert _flags(dst, key.id) == {ck.CKA_SENSITIVE: True, ck.CKA_EXTRACTABLE: False,
                                   ck.CKA_TOKEN: True}
    check_decryption(imported)
    with pytest.raises(KeyExists):
        dst.import_private_key(pkcs8, label="again", shareable=False)
    dst.delete(imported)
    assert _objects(dst) == []

    transport = dst.create_transport_key()
    assert len(session_objects(dst)) == 2  # the check below can see session objects
    wrapped = src.wrap_for_transport(key, transport.public_key)
    assert wrapped.oaep_hash == "sha1" and bytes(pkcs8) not in wrapped.wrapped_key
    copy = dst.unwrap_transported(transport, wrapped, label="C", shareable=True)
    dst.destroy_transport_key(transport)
    dst.destroy_transport_key(transport)  # idempotent
    assert _flags(dst, key.id)[ck.CKA_EXTRACTABLE] is True
    check_decryption(copy)
    assert session_objects(src) == [] and session_objects(dst) == []
    assert [c for c, _ in _objects(dst)] == [ck.CKO_PUBLIC_KEY, ck.CKO_PRIVATE_KEY]
    if isinstance(key.public_key, ec.EllipticCurvePublicKey):
        assert copy.public_key.public_numbers() == key.public_key.public_numbers()


def test_refusals_leave_nothing(tokens: Pair) -> None:
    src, dst = tokens
    locked = src.generate_keypair(KeySpec("L", Algorithm.RSA2048))
    with pytest.raises(NotExtractable):
        src.export_private_key(locked)
    transport = dst.create_transport_key()
    with pytest.raises(NotExtractable):
        src.wrap_for_transport(locked, transport.public_key)
    key = src.generate_keypair(KeySpec("K", Algorithm.RSA2048, shareable=True))
    wrapped = src.wrap_for_transport(key, transport.public_key)
    damaged = dataclasses.replace(wrapped, wrapped_key=wrapped.wrapped_key[:-8] + bytes(8))
    with pytest.raises(TokenKeysError):
        dst.unwrap_transported(transport, damaged, label="C", shareable=False)
    dst.destroy_transport_key(transport)
    assert _objects(dst) == []
    assert session_objects(src) == [] and session_objects(dst) == []


def test_wrap_with_trusted_is_refused_with_its_reason(tokens: Pair) -> None:
    src, _ = tokens
    spec = KeySpec("T", Algorithm.RSA2048, shareable=True)
    mech, public_t, private_t = templates.keygen(spec, b"\x42" * 20)
    src.session().generate_key_pair(mech, public_t, {**private_t, ck.CKA_WRAP_WITH_TRUSTED: True})
    key = src.find_key(label="T")
    assert key.extractable
    with pytest.raises(PolicyRefused, match="CKA_WRAP_WITH_TRUSTED"):
        src.export_private_key(key)
    assert session_objects(src) == []


def test_copy_names_the_step_a_device_refuses(tokens: Pair, softhsm: Any) -> None:
    src, _ = tokens
    key = src.generate_keypair(KeySpec("K", Algorithm.EC_P256, shareable=True))
    src.store_certificate(key, self_signed(key, "K", 1))
    # A target nobody logged in to: the device refuses the transport key pair.
    with P11Token.open(parse_pkcs11(softhsm.uri(softhsm.new_token("nol"))), Config(),
                       binding=src.port.binding) as target:
        with pytest.raises(CopyFailed, match=r"step 1/5 create the transport key pair"):
            copy_key(src, "K", target)
        assert _objects(target) == [] and session_objects(target) == []
    assert session_objects(src) == []
