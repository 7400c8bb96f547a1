"""The software keystore resists offline guessing.

tests/drivers/data/softstore-v1 was written by the version 1 code (scrypt per
key, PIN 123456, one RSA-2048 and one P-256 key): it must keep opening, and is
upgraded to Argon2id on the next PIN change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tokenkeys.drivers import software
from tokenkeys.drivers.software import SoftwareToken
from tokenkeys.errors import PinIncorrect, UsageError
from tokenkeys.types import PinSource, Secret

V1 = Path(__file__).parent / "data" / "softstore-v1"
STRONG = "correct horse 42"
OAEP = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)


def _login(directory: Path, pin: str) -> SoftwareToken:
    token = SoftwareToken(directory.resolve())
    token.login(PinSource(value=Secret(pin), interactive=False))
    return token


def _works(token: SoftwareToken) -> None:
    """Every key decrypts (RSA) or derives (EC) what its public key was used for."""
    keys = token.list_keys()
    assert keys
    for key in keys:
        if isinstance(key.public_key, rsa.RSAPublicKey):
            assert key.decrypt(key.public_key.encrypt(b"cek", OAEP), OAEP) == b"cek"
        else:
            assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
            peer = ec.generate_private_key(key.public_key.curve)
            assert key.derive_ecdh(peer.public_key()) == peer.exchange(ec.ECDH(), key.public_key)


@pytest.mark.parametrize("pin", ["", "1", "12", "1234", "123456", "1234567", "11111111",
                                 "12121212", "abcabcab"])
def test_weak_pins_are_refused_for_new_keystores(tmp_path: Path, pin: str) -> None:
    with pytest.raises(UsageError, match="at least 8 characters"):
        SoftwareToken.init(tmp_path / "ks", "weak", Secret(pin))
    assert not (tmp_path / "ks").exists()


def test_new_keystore_uses_argon2id_with_parameters_in_the_file(tmp_path: Path) -> None:
    SoftwareToken.init(tmp_path / "ks", "strong", Secret(STRONG))
    meta = json.loads((tmp_path / "ks" / "keystore.json").read_text())
    assert meta["kdf"]["name"] == "argon2id"
    assert {k: meta["kdf"][k] for k in ("iterations", "lanes", "memory_cost")} == {
        k: software.ARGON2ID[k] for k in ("iterations", "lanes", "memory_cost")}
    assert "pin_check" not in meta and "scrypt" not in meta
    with pytest.raises(PinIncorrect):
        _login(tmp_path / "ks", STRONG + "x")


def test_version1_keystore_still_opens(tmp_path: Path) -> None:
    shutil.copytree(V1, tmp_path / "ks")
    token = _login(tmp_path / "ks", "123456")
    assert sorted(k.label for k in token.list_keys()) == ["old-ec", "old-rsa"]
    _works(token)
    with pytest.raises(PinIncorrect):
        _login(tmp_path / "ks", "654321")


def test_version1_keystore_is_upgraded_on_pin_change(tmp_path: Path) -> None:
    shutil.copytree(V1, tmp_path / "ks")
    token = _login(tmp_path / "ks", "123456")
    publics = {k.label: k.public_key for k in token.list_keys()}
    with pytest.raises(UsageError):
        token.change_pin(Secret("654321"))  # the new PIN must be strong too
    token.change_pin(Secret(STRONG))
    meta = json.loads((tmp_path / "ks" / "keystore.json").read_text())
    assert meta["format"] == software.FORMAT_V2 and meta["kdf"]["name"] == "argon2id"
    for path in (tmp_path / "ks").glob("*.key.json"):
        record = json.loads(path.read_text())
        assert record["format"] == software.FORMAT_V2 and "scrypt" not in record
    with pytest.raises(PinIncorrect):
        _login(tmp_path / "ks", "123456")
    again = _login(tmp_path / "ks", STRONG)
    assert {k.label: k.public_key for k in again.list_keys()} == publics
    _works(again)


def test_kdf_parameters_can_rise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parameters are read from each file: a keystore made with other parameters opens,
    and a PIN change re-seals it with the current ones."""
    cheap = {**software.ARGON2ID, "iterations": 1, "memory_cost": 8 * 1024}
    monkeypatch.setattr(software, "ARGON2ID", cheap)
    SoftwareToken.init(tmp_path / "ks", "old-params", Secret(STRONG))
    monkeypatch.undo()
    token = _login(tmp_path / "ks", STRONG)
    assert json.loads((tmp_path / "ks" / "keystore.json").read_text())["kdf"]["iterations"] == 1
    token.change_pin(Secret(STRONG + "!"))
    kdf = json.loads((tmp_path / "ks" / "keystore.json").read_text())["kdf"]
    assert kdf["memory_cost"] == software.ARGON2ID["memory_cost"]
    _login(tmp_path / "ks", STRONG + "!")
