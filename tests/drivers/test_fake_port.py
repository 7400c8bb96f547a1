"""P11Token over a fake port: a card without fixed key slots, login rules, and the
device failures no real device here produces on demand (removal mid-operation,
lost session, CKR_DEVICE_ERROR). Everything above the port is the real code."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.drivers.fakeport import FakeDevice, FakePort
from tests.envelope.conftest import needs_openssl, openssl
from tokenkeys import keyalg
from tokenkeys.cli import main as cli_main
from tokenkeys.config import Config
from tokenkeys.drivers import open_token
from tokenkeys.drivers.oaep import DecryptFailed
from tokenkeys.drivers.p11 import ck, discovery
from tokenkeys.drivers.p11 import removal as p11_removal
from tokenkeys.drivers.p11.ckr import CKR
from tokenkeys.drivers.p11.profiles import GENERIC, OPENPGP, profile_for
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.envelope import SealOptions, open_envelope, seal
from tokenkeys.errors import (
    DeviceError,
    DeviceRemoved,
    EnvelopeIntegrity,
    KeyExists,
    KeyNotFound,
    PinIncorrect,
    PinLocked,
    PinMissing,
    TokenNotFound,
    UsageError,
)
from tokenkeys.services import opening_batch, token_keys
from tokenkeys.types import Algorithm, KeySpec, PinSource, Secret, given_pin

PIN = Secret("123456")


def _token(device: FakeDevice) -> P11Token:
    port = FakePort(device)
    return P11Token(port, port.token(0))


@pytest.fixture(autouse=True)
def _reader_answers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's slot list changes with the device itself: no reader lag to wait for
    before an ambiguous answer is named (P11Token.explain)."""
    monkeypatch.setattr(p11_removal, "GONE_WAIT_S", 0.0)


@pytest.fixture
def device() -> FakeDevice:
    return FakeDevice()


def test_an_ambiguous_answer_is_a_removal_only_when_the_reader_shows_no_card(
        token: P11Token, device: FakeDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenSC answers a pulled card with CKR_GENERAL_ERROR or CKR_OPERATION_ACTIVE: said
    as a removal once the reader shows the slot empty, as what it is while the card is in."""
    token_keys.generate_key(token, "bid", algorithm=Algorithm.RSA2048)
    key = token.find_key(label="bid")
    assert isinstance(key.public_key, rsa.RSAPublicKey)
    ct = key.public_key.encrypt(b"k" * 32, padding.PKCS1v15())
    device.failures["decrypt"] = ("CKR_OPERATION_ACTIVE", 0)
    with pytest.raises(DeviceError, match="CKR_OPERATION_ACTIVE"):
        key.decrypt(ct, padding.PKCS1v15())
    monkeypatch.setattr(token.port, "slots", lambda: [])  # the reader shows no card now
    with pytest.raises(DeviceRemoved, match="the card was removed from its reader"):
        key.decrypt(ct, padding.PKCS1v15())


@pytest.fixture
def token(device: FakeDevice) -> Iterator[P11Token]:
    with _token(device) as tok:
        tok.login(given_pin(PIN))
        yield tok


def test_keygen_not_logged_in_falls_back_to_the_so_pin(device: FakeDevice,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A card that answers CKR_USER_NOT_LOGGED_IN to key generation wants the SO PIN.
    monkeypatch.setenv("TOKENKEYS_SO_PIN", device.so_pin)
    device.keygen_needs_so = True
    user = (PIN.reveal(), False)
    with _token(device) as tok:
        tok.login(given_pin(PIN))
        key = tok.generate_keypair(KeySpec("bid", Algorithm.EC_P256))
        assert tok.find_key(key_id=key.id).label == "bid"
    assert device.logins == [user, (device.so_pin, True), user]
    # Any other failure is reported as it is, without asking for the SO PIN.
    device.logins.clear()
    device.failures["generate"] = ("CKR_DEVICE_ERROR", 0)
    with _token(device) as tok, pytest.raises(DeviceError):
        tok.login(given_pin(PIN))
        tok.generate_keypair(KeySpec("other", Algorithm.EC_P256))
    assert device.logins == [user]


# --- a card without fixed key slots ----------------------------------------------
@pytest.mark.parametrize("algorithm", [Algorithm.RSA2048, Algorithm.EC_P256])
def test_card_without_fixed_slots_renames_both_halves(token: P11Token, device: FakeDevice,
                                                      algorithm: Algorithm) -> None:
    key = token.generate_keypair(KeySpec("bid", algorithm))
    assert key.id == keyalg.key_id(key.public_key)
    ids = {o[ck.CKA_CLASS]: o[ck.CKA_ID] for o in device.objects.values()}
    assert ids == {ck.CKO_PUBLIC_KEY: key.id, ck.CKO_PRIVATE_KEY: key.id}
    assert token.keygen_slot() is None
    again = token.find_key(key_id=key.id)
    if algorithm.is_rsa:
        pub = again.public_key
        assert isinstance(pub, rsa.RSAPublicKey)
        ct = pub.encrypt(b"k" * 32, padding.PKCS1v15())
        assert again.decrypt(ct, padding.PKCS1v15()) == b"k" * 32
    else:
        peer = ec.generate_private_key(ec.SECP256R1())
        assert again.derive_ecdh(peer.public_key()) == peer.exchange(ec.ECDH(), key.public_key)


def test_generate_with_certificate_through_manager(token: P11Token) -> None:
    record = token_keys.generate_key(token, "bid", algorithm=Algorithm.EC_P256)
    assert record.designation == "bid" and record.status == "valid"
    key = token.find_key(label="bid")
    assert key.certificate is not None and key.id == keyalg.key_id(key.public_key)
    with pytest.raises(KeyExists):
        token_keys.generate_key(token, "bid", algorithm=Algorithm.EC_P256)


def test_fixed_slot_card_refuses_overwrite_without_replace(device: FakeDevice) -> None:
    device.manufacturer = "OpenPGP project"
    with _token(device) as tok:
        tok.login(given_pin(PIN))
        tok.set_so_pin_source(given_pin(Secret(device.so_pin)))
        assert tok.keygen_slot() == b"\x02"
        first = tok.generate_keypair(KeySpec("bid", Algorithm.RSA2048))
        assert first.id == b"\x02"
        before = dict(device.objects)
        with pytest.raises(KeyExists, match="--replace"):
            tok.generate_keypair(KeySpec("other", Algorithm.RSA2048))
        assert device.objects == before



def _store_again(tok: P11Token) -> None:
    key = tok.find_key(label="bid")
    assert key.certificate is not None
    # With a chain: the same certificate alone is already stored, and nothing is written.
    tok.store_certificate(key, key.certificate, [key.certificate])


@pytest.mark.parametrize(("op", "act", "step"), [
    ("set", lambda tok: tok.generate_keypair(KeySpec("new", Algorithm.EC_P256)),
     "setting the key id"),
    ("create", _store_again, "storing the certificate of 'bid'"),
    ("set", lambda tok: tok.set_label(tok.find_key(label="bid"), "other"), "renaming 'bid'"),
    ("destroy", lambda tok: tok.delete(tok.find_key(label="bid")), "deleting 'bid'"),
    ("get", lambda tok: tok.find_key(label="bid"), "reading key attributes"),
])
def test_a_refused_write_or_read_names_its_step(token: P11Token, device: FakeDevice, op: str,
                                               act: Callable[[P11Token], object],
                                               step: str) -> None:
    """Each device step turns the CKR into the error tree, saying which step failed."""
    token_keys.generate_key(token, "bid", algorithm=Algorithm.EC_P256)
    device.failures[op] = ("CKR_TOKEN_WRITE_PROTECTED", 0)
    with pytest.raises(DeviceError) as caught:
        act(token)
    assert str(caught.value) == f"{step}: the token is write-protected"


# --- login rules (PIN pad, retry words, SO switch) ----------------------------------
def test_pinpad_logs_in_without_pin(device: FakeDevice) -> None:
    device.flags |= 0x100  # protected authentication path
    device.login_answer = None
    tok = _token(device)
    device.pin = None  # type: ignore[assignment] - the pad checks it, not us
    tok.login(PinSource(pinpad=True, interactive=False))
    assert device.logins == [(None, False)]


def test_pinpad_asked_but_reader_has_none(device: FakeDevice) -> None:
    with pytest.raises(PinMissing, match="no PIN pad"):
        _token(device).login(PinSource(pinpad=True, interactive=False))
    assert device.logins == []


@pytest.mark.parametrize(("flags", "hint"), [
    (0x20000, "final try"),
    (0x10000, "count low"),
    (0, "more than one try left; this card reports only the final try"),
])
def test_wrong_pin_hint_from_flags(device: FakeDevice, flags: int, hint: str) -> None:
    device.manufacturer = "OpenPGP project"  # answers a wrong PIN with USER_NOT_LOGGED_IN
    device.login_answer = "CKR_USER_NOT_LOGGED_IN"
    device.flags |= flags
    with pytest.raises(PinIncorrect) as caught:
        _token(device).login(given_pin(Secret("999999")))
    assert caught.value.tries_left == hint and "999999" not in str(caught.value)
    assert len(device.logins) == 1  # never retried


def test_generic_device_without_flags_says_unknown(device: FakeDevice) -> None:
    device.login_answer = "CKR_PIN_INCORRECT"
    with pytest.raises(PinIncorrect) as caught:
        _token(device).login(given_pin(Secret("999999")))
    assert caught.value.tries_left is None


def test_locked_and_length(device: FakeDevice) -> None:
    device.login_answer = "CKR_PIN_INCORRECT"
    device.flags |= 0x40000
    with pytest.raises(PinLocked):
        _token(device).login(given_pin(Secret("999999")))
    device.login_answer = "CKR_PIN_LEN_RANGE"
    with pytest.raises(UsageError, match="no try used"):
        _token(device).login(given_pin(Secret("1")))


def test_as_so_relogs_the_user(token: P11Token, device: FakeDevice) -> None:
    token.set_so_pin_source(given_pin(Secret(device.so_pin)))
    assert token.as_so(lambda: device.logged_in) == "so"
    assert [so for _, so in device.logins] == [False, True, False]


# --- a device that fails is not a damaged envelope ----------------------------------
@pytest.fixture
def rsa_key(token: P11Token) -> object:
    token_keys.generate_key(token, "rsa", algorithm=Algorithm.RSA2048)
    return token.find_key(label="rsa")


@pytest.mark.parametrize(("ckr", "error"), [
    ("CKR_DEVICE_REMOVED", TokenNotFound),
    ("CKR_SESSION_HANDLE_INVALID", TokenNotFound),
    ("CKR_DEVICE_ERROR", DeviceError),
    ("CKR_GENERAL_ERROR", DeviceError),  # bad padding on SoftHSM2 only (its profile)
    ("CKR_KEY_HANDLE_INVALID", KeyNotFound),
    ("CKR_USER_NOT_LOGGED_IN", PinMissing),
])
@pytest.mark.parametrize("transport", ["pkcs1v15", "oaep-sha256", "oaep-sha1"])
def test_device_failure_surfaces_in_open(rsa_key: object, device: FakeDevice, tmp_path: Path,
                                         ckr: str, error: type[Exception],
                                         transport: str) -> None:
    cert = rsa_key.certificate  # type: ignore[attr-defined]
    env = tmp_path / "bid.p7m"
    seal(io.BytesIO(b"bid" * 10), env, [cert], SealOptions(key_transport=transport))
    device.failures["decrypt"] = (ckr, 0)
    with pytest.raises(error):
        open_envelope(env, tmp_path / "bid", [rsa_key])  # type: ignore[list-item]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bid.p7m"]


def test_bad_padding_is_the_uniform_failure(rsa_key: object) -> None:
    bogus = (12345).to_bytes(256, "big")
    for sha in (hashes.SHA1(), hashes.SHA256()):  # device OAEP, then raw + software OAEP
        with pytest.raises(DecryptFailed):
            rsa_key.decrypt(bogus, padding.OAEP(padding.MGF1(sha), sha, None))  # type: ignore[attr-defined]
    # (OpenSSL's implicit rejection makes this fake's v1.5 never fail: a short one does.)
    with pytest.raises(DecryptFailed):
        rsa_key.decrypt(b"short", padding.PKCS1v15())  # type: ignore[attr-defined]


@needs_openssl
def test_labelled_oaep_envelope_opens_with_a_device_key(rsa_key: object,
                                                        tmp_path: Path) -> None:
    """The label reaches the device in the envelope's OaepPadding (cryptography keeps
    an OAEP's label private)."""
    cert = rsa_key.certificate  # type: ignore[attr-defined]
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "bid").write_bytes(b"bid")
    openssl("cms", "-encrypt", "-binary", "-in", tmp_path / "bid", "-out", tmp_path / "bid.p7m",
            "-outform", "DER", "-aes-256-gcm", "-recip", tmp_path / "cert.pem",
            "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256",
            "-keyopt", "rsa_oaep_label:6c6162656c")
    result = open_envelope(tmp_path / "bid.p7m", tmp_path / "out", [rsa_key])  # type: ignore[list-item]
    assert (tmp_path / "out").read_bytes() == b"bid"
    assert result.key_transport == "rsaes-oaep-sha256-label"
    assert rsa_key.last_decrypt == "RSA_PKCS_OAEP"  # type: ignore[attr-defined]


def test_general_error_is_a_padding_answer_on_softhsm2_and_the_openpgp_card_only() -> None:
    general = CKR["CKR_GENERAL_ERROR"]
    assert profile_for("SoftHSM project", "SoftHSM v2").is_padding_outcome(general)
    # The card's answer (6F00) to a block it cannot decrypt; also a removal code, so
    # it counts only while the reader shows the card (next tests).
    assert OPENPGP.is_padding_outcome(general) and general in OPENPGP.removal_codes
    assert not GENERIC.is_padding_outcome(general)
    for row in (GENERIC, OPENPGP):
        assert row.is_padding_outcome(CKR["CKR_ENCRYPTED_DATA_INVALID"])


def test_an_ambiguous_padding_answer_is_a_damaged_block_only_while_the_card_is_in(
        token: P11Token, device: FakeDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    """A padding code that may also mean a pulled card (OpenPGP: CKR_GENERAL_ERROR):
    the uniform DecryptFailed while the reader shows the card, a removal once not."""
    token.profile = replace(GENERIC, padding_codes=frozenset({CKR["CKR_GENERAL_ERROR"]}))
    token_keys.generate_key(token, "bid", algorithm=Algorithm.RSA2048)
    key = token.find_key(label="bid")
    assert isinstance(key.public_key, rsa.RSAPublicKey)
    ct = key.public_key.encrypt(b"k" * 32, padding.PKCS1v15())
    device.failures["decrypt"] = ("CKR_GENERAL_ERROR", 0)
    with pytest.raises(DecryptFailed):
        key.decrypt(ct, padding.PKCS1v15())
    monkeypatch.setattr(token.port, "slots", lambda: [])  # the reader shows no card now
    with pytest.raises(DeviceRemoved, match="the card was removed from its reader"):
        key.decrypt(ct, padding.PKCS1v15())


def test_a_block_not_below_the_modulus_never_reaches_the_device(rsa_key: object,
                                                               device: FakeDevice) -> None:
    """Another recipient's block (or a damaged one) whose value is not below this
    key's modulus: the emulated card answers it 6F00 (CKR_GENERAL_ERROR). The
    negotiator refuses it from public facts, without a device call."""
    public = rsa_key.public_key  # type: ignore[attr-defined]
    assert isinstance(public, rsa.RSAPublicKey)
    n = public.public_numbers().n
    device.failures["decrypt"] = ("CKR_GENERAL_ERROR", 0)
    for value in (n, n + 1, (1 << 2048) - 1):
        with pytest.raises(DecryptFailed):
            rsa_key.decrypt(value.to_bytes(256, "big"), padding.PKCS1v15())  # type: ignore[attr-defined]
    assert "decrypt" not in device.calls


@pytest.mark.parametrize("softhsm2", [False, True])
def test_general_error_in_v15_follows_the_profile(device: FakeDevice, tmp_path: Path,
                                                  softhsm2: bool) -> None:
    if softhsm2:
        device.manufacturer, device.model = "SoftHSM project", "SoftHSM v2"
    with _token(device) as tok:
        tok.login(given_pin(PIN))
        token_keys.generate_key(tok, "rsa", algorithm=Algorithm.RSA2048)
        key = tok.find_key(label="rsa")
        assert key.certificate is not None
        env = tmp_path / "bid.p7m"
        seal(io.BytesIO(b"bid" * 10), env, [key.certificate],
             SealOptions(key_transport="pkcs1v15"))
        ct = key.public_key.encrypt(b"k" * 32, padding.PKCS1v15())  # type: ignore[union-attr]
        device.failures["decrypt"] = ("CKR_GENERAL_ERROR", 0)
        if softhsm2:
            # SoftHSM2's answer to a bad block: hidden by the v1.5 countermeasure.
            with pytest.raises(DecryptFailed):
                key.decrypt(ct, padding.PKCS1v15())
            with pytest.raises(EnvelopeIntegrity, match="integrity"):
                open_envelope(env, tmp_path / "bid", [key])
        else:
            with pytest.raises(DeviceError, match="CKR_GENERAL_ERROR") as caught:
                key.decrypt(ct, padding.PKCS1v15())
            assert not isinstance(caught.value, EnvelopeIntegrity)
            with pytest.raises(DeviceError, match="CKR_GENERAL_ERROR"):
                open_envelope(env, tmp_path / "bid", [key])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bid.p7m"]


def test_unusable_objects_are_listed_and_skipped(token: P11Token, device: FakeDevice) -> None:
    token_keys.generate_key(token, "good", algorithm=Algorithm.EC_P256)
    # A half-written key (empty id, no modulus) and a key on a curve tokenkeys lacks.
    device.add({ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_KEY_TYPE: ck.CKK_RSA, ck.CKA_ID: b"",
                ck.CKA_LABEL: "half", ck.CKA_PRIVATE: True})
    device.add({ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_KEY_TYPE: ck.CKK_EC, ck.CKA_ID: b"\x09",
                ck.CKA_LABEL: "p521", ck.CKA_PRIVATE: True,
                ck.CKA_EC_PARAMS: bytes.fromhex("06052b81040023"), ck.CKA_EC_POINT: b"\x04"})
    assert [k.label for k in token.list_keys()] == ["good"]
    bad = {b.label: b.reason for b in token.unusable_keys()}
    assert set(bad) == {"half", "p521"}
    assert "CKA_ID" in bad["half"] and "curve" in bad["p521"]
    records = {r.designation: r.status for r in token_keys.list_keys(token)}
    assert records["good"] == "valid" and records["half"].startswith("unusable: ")
    keys, unusable = token.inventory()
    assert [k.label for k in keys] == ["good"] and {b.label for b in unusable} == set(bad)


def test_key_list_scans_the_device_once(token: P11Token, device: FakeDevice) -> None:
    token_keys.generate_key(token, "good", algorithm=Algorithm.EC_P256)
    device.add({ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_KEY_TYPE: ck.CKK_RSA, ck.CKA_ID: b"",
                ck.CKA_LABEL: "half", ck.CKA_PRIVATE: True})

    def finds(fn: Callable[[], object]) -> int:
        before = device.calls.get("find", 0)
        fn()
        return device.calls.get("find", 0) - before

    # The usable keys with their descriptions already take one scan (describing them
    # reads no more objects): the unusable objects come from that same scan.
    one_scan = finds(lambda: token.list_keys())
    assert finds(lambda: token_keys.list_keys(token)) == one_scan
    assert finds(lambda: token_keys.key_inventory(token)) == one_scan


# --- a batch stops at the first device failure ---------------------------------------
@pytest.fixture
def fake_uri(tmp_path: Path, device: FakeDevice, monkeypatch: pytest.MonkeyPatch) -> str:
    module = tmp_path / "libfake-pkcs11.so"
    module.write_bytes(b"")
    port = FakePort(device, str(module))
    monkeypatch.setitem(discovery._PORTS, (os.path.realpath(module), discovery.PYTHON_PKCS11),
                        port)
    return f"pkcs11:token={device.label}?module-path={module}"


def test_card_pulled_out_after_8_of_50(fake_uri: str, device: FakeDevice, tmp_path: Path) -> None:
    with open_token(fake_uri, Config()) as tok:
        tok.login(given_pin(PIN))
        token_keys.generate_key(tok, "bid", algorithm=Algorithm.RSA2048)
        cert = tok.find_key(label="bid").certificate
    assert cert is not None
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(50):
        seal(io.BytesIO(f"bid {i}".encode()), inputs / f"bid-{i:02d}.p7m", [cert], SealOptions())
    out = tmp_path / "out"
    pairs = opening_batch.plan(opening_batch.collect_inputs([inputs]), out)
    device.failures["decrypt"] = ("CKR_DEVICE_REMOVED", 8)
    with pytest.raises(TokenNotFound) as caught:
        opening_batch.open_batch(pairs, out, fake_uri, Config(), given_pin(PIN))
    assert sorted(p.name for p in out.iterdir()) == [f"bid-{i:02d}" for i in range(50)
                                                    if (out / f"bid-{i:02d}").exists()]
    opened = sorted(out.iterdir())
    assert len(opened) == 8  # finished outputs stay, nothing half-written
    assert "8 of 50 envelope(s) done, 42 left" in str(caught.value)
    for path in opened:
        assert path.read_bytes() == f"bid {int(path.name[4:])}".encode()


def test_general_error_stops_an_open_batch_as_a_device_error(
        fake_uri: str, device: FakeDevice, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Not SoftHSM2: CKR_GENERAL_ERROR is the device failing, not 47 damaged bids."""
    with open_token(fake_uri, Config()) as tok:
        tok.login(given_pin(PIN))
        token_keys.generate_key(tok, "bid", algorithm=Algorithm.RSA2048)
        cert = tok.find_key(label="bid").certificate
    assert cert is not None
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(50):
        seal(io.BytesIO(f"bid {i}".encode()), inputs / f"bid-{i:02d}.p7m", [cert],
             SealOptions(key_transport="pkcs1v15"))
    device.failures["decrypt"] = ("CKR_GENERAL_ERROR", 3)
    monkeypatch.setenv("TOKENKEYS_PIN", PIN.reveal())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    out = tmp_path / "out"
    code = cli_main.main(["--json", "open", str(inputs), "-o", str(out), "--token", fake_uri])
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == DeviceError.exit_code == 3
    assert error["type"] == "DeviceError" and "CKR_GENERAL_ERROR" in error["message"]
    assert "3 of 50 envelope(s) done, 47 left" in error["message"]
    # Three threads parse envelopes: which three reach the device first may vary.
    assert len([p for p in out.iterdir() if p.name.startswith("bid-")]) == 3


def test_cleanup_after_a_crash_while_renaming(token: P11Token, device: FakeDevice,
                                              tmp_path: Path) -> None:
    """Killed between the two CKA_ID renames: the halves have two ids, one label."""
    from tokenkeys.registry import Registry
    from tokenkeys.services import interrupted

    label = f"{token_keys.PROVISIONAL}bid:0badc0de"
    key = token.generate_keypair(KeySpec(label, Algorithm.EC_P256))
    (priv,) = token.find({ck.CKA_CLASS: ck.CKO_PRIVATE_KEY})
    token.session().set(priv, {ck.CKA_ID: b"\x07" * 20})
    assert token_keys.list_keys(token) == []
    leftovers = token_keys.leftovers(token)
    assert [k.id for k in leftovers] == [b"\x07" * 20] and key.id != b"\x07" * 20
    with Registry.open(str(tmp_path / "reg.sqlite")) as reg:
        found = interrupted.survey(reg, token)
        assert [(f.label, f.action, f.name) for f in found] == [(label, "remove", "bid")]
        assert sorted(found[0].objects) == ["private key", "public key"]
        interrupted.settle(reg, token, found)
    assert device.objects == {}
