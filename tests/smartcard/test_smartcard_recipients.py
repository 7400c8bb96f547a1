"""A card key whose certificate is NOT on the card (generated with pkcs11-tool, its
certificate from a throw-away CA kept off the card), opening PKCS#1 v1.5 envelopes
sealed to several recipients. Another recipient's block is no business of the card:
it must neither stop the batch as a device failure nor break the card session for
the next envelope (OpenSC 0.23 left C_Decrypt active after PyKCS11's failed length
query: CKR_OPERATION_ACTIVE ever after)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.smartcard.conftest import EmulatedCard, card_cli
from tokenkeys.config import Config
from tokenkeys.drivers import open_token
from tokenkeys.drivers.oaep import DecryptFailed
from tokenkeys.drivers.p11.keys import P11Key
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.envelope.seal import SealOptions, seal
from tokenkeys.types import Secret, given_pin

pytestmark = pytest.mark.smartcard


def _cert(public: rsa.RSAPublicKey, cn: str) -> x509.Certificate:
    ca = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "throw-away CA")]))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .sign(ca, hashes.SHA256()))


def _erase() -> None:
    done = subprocess.run(["openpgp-tool", "--erase"], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def bare_card_key(card: EmulatedCard, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[dict[str, Any]]:
    """A fresh RSA-2048 key in slot 02, no certificate on the card; the card is erased
    again afterwards (factory state for the modules that follow)."""
    tmp = tmp_path_factory.mktemp("bare")
    _erase()
    try:
        gen = card.tool("--login", "--login-type", "so", "--so-pin", card.so_pin,
                        "--keypairgen", "--key-type", "rsa:2048", "--id", "02")
        assert gen.returncode == 0, gen.stderr
        read = card.tool("--read-object", "--type", "pubkey", "--id", "02", "-o",
                         str(tmp / "card.der"))
        assert read.returncode == 0, read.stderr
        public = serialization.load_der_public_key((tmp / "card.der").read_bytes())
        assert isinstance(public, rsa.RSAPublicKey)
        assert "Certificate Object" not in card.tool("-O").stdout
        n = public.public_numbers().n
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        yield {"public": public, "cert": _cert(public, "card"), "n": n,
               "other": _cert(other.public_key(), "other")}
    finally:
        _erase()


def _seal_with_a_block_above(directory: Path, name: str, plain: bytes,
                             certs: list[x509.Certificate], other: x509.Certificate,
                             n: int) -> None:
    """Seal v1.5, then give recipient `other` a block not below the card's modulus n
    (a damaged one, or another key's that happens to exceed n): the block the emulated
    card answers 6F00 (CKR_GENERAL_ERROR)."""
    src = directory.parent / f"{name}.plain"
    src.write_bytes(plain)
    seal(src, directory / name, certs, SealOptions(key_transport="pkcs1v15"))
    info = cms.ContentInfo.load((directory / name).read_bytes())
    [ktri] = [ri.chosen for ri in info["content"]["recipient_infos"]  # a SET: DER order
              if ri.chosen["rid"].chosen["serial_number"].native == other.serial_number]
    ktri["encrypted_key"] = (n + secrets.randbelow((1 << 2048) - n)).to_bytes(256, "big")
    (directory / name).write_bytes(info.dump(force=True))


def test_batch_of_multi_recipient_v15_envelopes_opens(
        card: EmulatedCard, bare_card_key: dict[str, Any], tmp_path: Path) -> None:
    mine, other, n = bare_card_key["cert"], bare_card_key["other"], bare_card_key["n"]
    bids = tmp_path / "bids"
    bids.mkdir()
    plains = {f"bid{i}.p7m": os.urandom(3000) for i in range(4)}
    # The other recipient first and last, with blocks the card cannot decrypt, and a
    # plain one: each is tried by the certificate-less card key.
    _seal_with_a_block_above(bids, "bid0.p7m", plains["bid0.p7m"], [other, mine], other, n)
    _seal_with_a_block_above(bids, "bid1.p7m", plains["bid1.p7m"], [mine, other], other, n)
    _seal_with_a_block_above(bids, "bid2.p7m", plains["bid2.p7m"], [other, mine], other, n)
    (tmp_path / "p3").write_bytes(plains["bid3.p7m"])
    seal(tmp_path / "p3", bids / "bid3.p7m", [mine, other], SealOptions(key_transport="pkcs1v15"))
    one = card_cli(card, tmp_path, "open", bids / "bid0.p7m", "-o", tmp_path / "one",
                   "--token", card.uri)
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "one" / "bid0").read_bytes() == plains["bid0.p7m"]
    done = card_cli(card, tmp_path, "--json", "open", bids, "-o", tmp_path / "out",
                    "--token", card.uri)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["opened"] == 4 and report["failed"] == 0, report
    for name, plain in plains.items():
        assert (tmp_path / "out" / name.removesuffix(".p7m")).read_bytes() == plain


def test_a_block_the_card_refuses_leaves_the_session_usable(
        card: EmulatedCard, bare_card_key: dict[str, Any]) -> None:
    """Straight to the card (past the negotiator's modulus check): its CKR_GENERAL_ERROR,
    the card still in, is a bad block; and the same session decrypts next."""
    public: rsa.RSAPublicKey = bare_card_key["public"]
    good = public.encrypt(b"k" * 32, padding.PKCS1v15())
    with open_token(card.uri, Config()) as token:
        assert isinstance(token, P11Token)
        token.reinitialise()  # the card was erased and regenerated behind this process
        token.login(given_pin(Secret(card.pin)))
        key = token.find_key(key_id=b"\x02")
        assert isinstance(key, P11Key) and key.certificate is None
        for _ in range(2):
            with pytest.raises(DecryptFailed):
                key.pkcs1((bare_card_key["n"] + 1).to_bytes(256, "big"))
            assert key.pkcs1(good) == b"k" * 32
            assert key.decrypt(good, padding.PKCS1v15()) == b"k" * 32
