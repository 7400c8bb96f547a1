"""A certificate-less RSA identity (a card key whose certificate is not on the card)
facing PKCS#1 v1.5 envelopes sealed to several recipients: nothing names its own
recipient, so every candidate block is decrypted and the content's check decides."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from tokenkeys.envelope import SealOptions, open_envelope, seal
from tokenkeys.errors import EnvelopeIntegrity

from .conftest import KeyPair


class BareKey:
    """An RSA identity without a certificate. With `implicit_rejection`, a block it
    cannot decrypt gives a synthetic key-sized value instead of an error, as a device
    with implicit rejection (the emulated card, OpenSSL 3.2+) does by chance 1 time in
    about 250: the worst case, a wrong candidate that looks right."""

    certificate = None

    def __init__(self, key: rsa.RSAPrivateKey, implicit_rejection: bool = False) -> None:
        self._key = key
        self.public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = key.public_key()
        self.label = "card key without certificate"
        self._implicit = implicit_rejection
        self.calls = 0

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        self.calls += 1
        try:
            out: bytes = self._key.decrypt(ciphertext, padding)
            if not self._implicit or len(out) == 32:
                return out
        except ValueError:
            if not self._implicit:
                raise
        return os.urandom(32)

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        raise TypeError("not an EC key")


@pytest.mark.parametrize("authenticated", [True, False], ids=["gcm", "cbc"])
@pytest.mark.parametrize("implicit", [False, True], ids=["padding-error", "implicit-rejection"])
@pytest.mark.parametrize("mine_first", [True, False], ids=["mine-first", "mine-last"])
def test_finds_its_own_recipient_among_several(keys: dict[str, KeyPair], tmp_path: Path,
                                               authenticated: bool, implicit: bool,
                                               mine_first: bool) -> None:
    plain = os.urandom(5000)
    mine, other = keys["rsa"].cert, keys["rsa2"].cert
    env = tmp_path / "bid.p7m"
    seal(io.BytesIO(plain), env, [mine, other] if mine_first else [other, mine],
         SealOptions(authenticated=authenticated, key_transport="pkcs1v15"))
    identity = BareKey(keys["rsa"].key, implicit)  # type: ignore[arg-type]
    result = open_envelope(env, tmp_path / "bid", [identity])
    assert (tmp_path / "bid").read_bytes() == plain
    assert result.identity_label == identity.label and identity.calls == 2


@pytest.mark.parametrize("authenticated", [True, False], ids=["gcm", "cbc"])
def test_an_envelope_not_sealed_to_it_is_an_integrity_failure(
        keys: dict[str, KeyPair], tmp_path: Path, authenticated: bool) -> None:
    """Without a certificate a wrong card cannot be told from a damaged envelope
    (the v1.5 countermeasure); nothing is written."""
    env = tmp_path / "bid.p7m"
    stranger = rsa.generate_private_key(65537, 2048)
    seal(io.BytesIO(b"bid" * 100), env, [keys["rsa2"].cert, keys["rsa2"].cert],
         SealOptions(authenticated=authenticated, key_transport="pkcs1v15"))
    for implicit in (False, True):
        with pytest.raises(EnvelopeIntegrity, match="integrity"):
            open_envelope(env, tmp_path / "bid", [BareKey(stranger, implicit)])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bid.p7m"]
