"""The PKCS#11 token over PyKCS11 against OpenSC and the emulated OpenPGP card.

Tests share one card and run in file order: key-less checks first, then key
generation, then tests that pull the card out (the card keeps its keys in
state/card.fs across remove/insert, like a real card).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.smartcard.conftest import EmulatedCard, card_cli, run_until_card_inserted
from tokenkeys.config import Config
from tokenkeys.drivers import open_token
from tokenkeys.drivers.capabilities import CertificateStore, SoAdministration
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.envelope.seal import SealOptions, seal
from tokenkeys.errors import (
    DeviceRemoved,
    KeyExists,
    KeyNotFound,
    MechanismUnsupported,
    PinIncorrect,
    TokenNotFound,
)
from tokenkeys.services import token_keys
from tokenkeys.types import Algorithm, KeySpec, Secret, given_pin

pytestmark = pytest.mark.smartcard
TIMINGS: dict[str, float] = {}


def _open(card: EmulatedCard) -> P11Token:
    token = open_token(card.uri, Config())
    assert isinstance(token, P11Token)
    return token


def test_found_by_label_and_serial(card: EmulatedCard) -> None:
    with _open(card) as token:
        info = token.info()
        assert (info.label, info.manufacturer) == (card.label, "OpenPGP project")
        assert "RSA_PKCS" in token.mechanisms() and "RSA_PKCS_OAEP" not in token.mechanisms()
    # One card, two PIN slots: by serial alone the decryption-PIN slot is chosen.
    by_serial = f"pkcs11:serial={info.serial}?module-path={card.module}"
    with open_token(by_serial, Config()) as token:
        assert token.info().label == card.label


def test_unknown_card_lists_present_ones(card: EmulatedCard) -> None:
    with pytest.raises(TokenNotFound, match=r"present: 'OpenPGP card \(User PIN\)'"):
        open_token(f"pkcs11:token=nope?module-path={card.module}", Config())


def test_wrong_pin_reports_and_costs_one_try(card: EmulatedCard) -> None:
    before = card.pw1_tries()
    with _open(card) as token:
        with pytest.raises(PinIncorrect) as caught:
            token.login(given_pin(Secret("000000")))
        assert "000000" not in str(caught.value)
        assert caught.value.tries_left == token.profile.tries_hint
        assert card.pw1_tries() == before - 1
        token.login(given_pin(Secret(card.pin)))  # the right PIN still works...
    assert card.pw1_tries() == before  # ...and resets the counter


def test_cli_key_generate_needs_the_so_pin(card: EmulatedCard, tmp_path: Path) -> None:
    """Generation on an OpenPGP card is under the admin (SO) PIN: a wrong one stops it,
    card unchanged. (The whole provisioning flow: test_smartcard_provisioning.py.)"""
    done = card_cli(card, tmp_path, "key", "generate", "--token", card.uri, "--name", "bid",
                    "--algorithm", "rsa2048", env={"TOKENKEYS_SO_PIN": "87654321"})
    assert done.returncode == 4, done.stderr
    assert "SO PIN incorrect" in done.stderr and "87654321" not in done.stderr
    assert "this card puts a new key into its fixed key slot 02" in done.stderr
    assert "Public Key Object" not in card.tool("-O").stdout


def test_ec_key_derives_on_card(card: EmulatedCard) -> None:
    """ECDH on the card equals the software ECDH; then the card is erased for the RSA tests."""
    try:
        with _open(card) as token:
            token.login(given_pin(Secret(card.pin)))
            token.set_so_pin_source(given_pin(Secret(card.so_pin)))
            key = token.generate_keypair(KeySpec("ec", Algorithm.EC_P256))
            assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
            peer = ec.generate_private_key(ec.SECP256R1())
            assert key.derive_ecdh(peer.public_key()) == peer.exchange(ec.ECDH(), key.public_key)
            with pytest.raises(MechanismUnsupported, match="openpgp-tool"):
                token.delete(key)  # OpenSC cannot really delete it: refused, card unchanged
    finally:
        erase = subprocess.run(["openpgp-tool", "--erase"], capture_output=True, check=False)
        assert erase.returncode == 0
    assert "Key Object" not in card.tool("-O").stdout


def test_card_pulled_right_after_keygen_says_the_key_was_created(
        card: EmulatedCard, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pulled out once C_GenerateKeyPair has returned (before the user is logged back in,
    the key read back and recorded): the card keeps the key in slot 02, and the error
    says so and what comes next, not "login ... CKR_GENERAL_ERROR"."""
    out: list[bool] = []  # the card is out of its reader
    try:
        with _open(card) as token:
            token.reinitialise()  # the card was erased behind this process's OpenSC
            token.login(given_pin(Secret(card.pin)))
            token.set_so_pin_source(given_pin(Secret(card.so_pin)))
            session = token.session()
            generate = session.generate_key_pair

            def then_pulled(*args: Any) -> Any:
                pair = generate(*args)
                card.remove()
                out.append(True)
                return pair

            monkeypatch.setattr(session, "generate_key_pair", then_pulled)
            with pytest.raises(DeviceRemoved) as caught:
                token_keys.generate_key(token, "PULLED", algorithm=Algorithm.EC_P256)
        message = str(caught.value)
        assert "Key 'PULLED' was created, but its certificate is not stored yet" in message
        assert "insert the card again" in message and "key import-cert" in message
        assert "CKR_" not in message, message
        assert caught.value.created is not None and "id=%02" in caught.value.created
        card.insert()
        out.clear()
        assert "ID:         02" in card.tool("-O").stdout  # the key is on the card
    finally:
        if out:
            card.insert()
        erase = subprocess.run(["openpgp-tool", "--erase"], capture_output=True, check=False)
        assert erase.returncode == 0


def _issue(public: rsa.RSAPublicKey, cn: str) -> x509.Certificate:
    """A certificate for the card key, issued by a throwaway software CA (the
    OpenPGP decryption key cannot sign its own)."""
    ca = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=30))
            .sign(ca, hashes.SHA256()))


@pytest.fixture(scope="module")
def card_key(card: EmulatedCard) -> Iterator[dict[str, Any]]:
    """RSA-2048 generated on the card under the SO PIN, with a stored certificate."""
    with _open(card) as token:
        # openpgp-tool erased the card behind this process's OpenSC: make it read again.
        token.reinitialise()
        token.login(given_pin(Secret(card.pin)))
        token.set_so_pin_source(given_pin(Secret(card.so_pin)))
        start = time.perf_counter()
        key = token.generate_keypair(KeySpec("bid", Algorithm.RSA2048))
        TIMINGS["keygen_s"] = time.perf_counter() - start
        assert isinstance(key.public_key, rsa.RSAPublicKey)
        cert = _issue(key.public_key, "bid")
        token.store_certificate(key, cert)
        with pytest.raises(KeyExists):
            token.generate_keypair(KeySpec("again", Algorithm.RSA2048))
        yield {"id": key.id, "label": key.label, "public": key.public_key, "cert": cert}


def test_keygen_public_key_matches_pkcs11_tool(card: EmulatedCard, card_key: dict[str, Any],
                                               tmp_path: Path) -> None:
    assert card_key["id"] == b"\x02" and card_key["label"] == "Encryption key"
    out = tmp_path / "pub.der"
    done = card.tool("--read-object", "--type", "pubkey", "--id", "02", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert serialization.load_der_public_key(out.read_bytes()) == card_key["public"]
    assert TIMINGS["keygen_s"] < 30


def test_new_process_sees_key_and_certificate(card: EmulatedCard,
                                              card_key: dict[str, Any]) -> None:
    with _open(card) as token:
        (key,) = token.list_keys()
        assert key.public_key == card_key["public"]
        assert key.certificate == card_key["cert"]


def test_contract_and_capabilities_on_card(card: EmulatedCard,
                                           card_key: dict[str, Any]) -> None:
    """The contract where a card can meet it, and its capabilities (PyKCS11 adapter)."""
    with _open(card) as token:
        assert token.port.binding == "pykcs11"
        assert isinstance(token, CertificateStore) and isinstance(token, SoAdministration)
        assert token.keygen_slot() == b"\x02"
        assert "token-initialized" in token.info().flags
        token.login(given_pin(Secret(card.pin)))
        assert [k.id for k in token.list_keys()] == [b"\x02"] and token.unusable_keys() == []
        key = token.find_key(key_id=b"\x02")
        assert key.certificate == card_key["cert"] and token.certificate_chain(key) == []
        with pytest.raises(MechanismUnsupported, match="chain"):
            token.store_certificate(key, card_key["cert"], [card_key["cert"]])
        with pytest.raises(KeyNotFound):
            token.find_key(label="nothing")
        ct = card_key["public"].encrypt(b"k" * 32, padding.PKCS1v15())
        assert key.decrypt(ct, padding.PKCS1v15()) == b"k" * 32


def test_decrypt_rate_and_oaep_refused(card: EmulatedCard, card_key: dict[str, Any]) -> None:
    public: rsa.RSAPublicKey = card_key["public"]
    cts = [public.encrypt(os.urandom(32), padding.PKCS1v15()) for _ in range(20)]
    with _open(card) as token:
        token.login(given_pin(Secret(card.pin)))
        key = token.find_key(key_id=b"\x02")
        start = time.perf_counter()
        for ct in cts:
            assert len(key.decrypt(ct, padding.PKCS1v15())) == 32
        TIMINGS["decrypts_per_s"] = len(cts) / (time.perf_counter() - start)
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        with pytest.raises(MechanismUnsupported, match="it offers: RSA_PKCS"):
            key.decrypt(public.encrypt(b"k" * 32, oaep), oaep)
    print(f"\nemulated card: keygen {TIMINGS['keygen_s']:.2f} s, "
          f"{TIMINGS['decrypts_per_s']:.0f} RSA-2048 decrypts/s")


def _seal_batch(directory: Path, cert: x509.Certificate, n: int) -> dict[str, bytes]:
    directory.mkdir()
    plain: dict[str, bytes] = {}
    for i in range(n):
        data = os.urandom(1000 + i)
        src = directory.parent / f"bid{i}.pdf"
        src.write_bytes(data)
        seal(src, directory / f"bid{i}.pdf.p7m", [cert], SealOptions(key_transport="pkcs1v15"))
        plain[f"bid{i}.pdf"] = data
    src = directory.parent / "oaep.pdf"
    src.write_bytes(b"oaep")
    seal(src, directory / "oaep.pdf.p7m", [cert])  # default: RSA-OAEP SHA-256
    return plain


def test_cli_opens_batch_on_card(card: EmulatedCard, card_key: dict[str, Any],
                                 tmp_path: Path) -> None:
    plain = _seal_batch(tmp_path / "in", card_key["cert"], 5)
    out = tmp_path / "out"
    done = card_cli(card, tmp_path, "--json", "open", tmp_path / "in", "-o", out,
                    "--token", card.uri)
    assert done.returncode == 11, done.stderr  # BatchIncomplete: the OAEP one
    report = json.loads(done.stdout)
    assert report["opened"] == 5 and report["failed"] == 1
    (failed,) = [f for f in report["files"] if f["status"] == "failed"]
    assert failed["error_type"] == "MechanismUnsupported"
    assert MechanismUnsupported.exit_code == 6
    for name, data in plain.items():
        assert (out / name).read_bytes() == data
    assert not (out / "oaep.pdf").exists()


def test_card_removed_gives_token_not_found(card: EmulatedCard, card_key: dict[str, Any]) -> None:
    ct = card_key["public"].encrypt(b"x" * 32, padding.PKCS1v15())
    try:
        with _open(card) as token:
            token.login(given_pin(Secret(card.pin)))
            key = token.find_key(key_id=b"\x02")
            card.remove()
            with pytest.raises(TokenNotFound, match="removed"):
                key.decrypt(ct, padding.PKCS1v15())
        with pytest.raises(TokenNotFound, match="no card in the reader"):
            open_token(card.uri, Config())
    finally:
        card.insert()


def test_open_waits_for_card(card: EmulatedCard, card_key: dict[str, Any],
                             tmp_path: Path) -> None:
    _seal_batch(tmp_path / "in", card_key["cert"], 1)
    (tmp_path / "in" / "oaep.pdf.p7m").unlink()
    card.remove()
    waited = run_until_card_inserted(card, tmp_path, "--json", "open", tmp_path / "in",
                                     "-o", tmp_path / "out", "--token", card.uri,
                                     env={"TOKENKEYS_CARD_WAIT": "15"})
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["opened"] == 1
