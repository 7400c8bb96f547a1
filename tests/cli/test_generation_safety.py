"""Issue: key generation that cannot leave debris, designations unique under
concurrency, `token init` that checks the PIN policy first; a key deleted on
SoftHSM2 while a batch runs is reported as such, not as damaged bids."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.cli.conftest import SOFTHSM_MODULE, TK
from tokenkeys.config import Config
from tokenkeys.drivers import KeyHandle, open_token
from tokenkeys.envelope import SealOptions, seal
from tokenkeys.errors import DeviceError, KeyExists, KeyNotFound
from tokenkeys.services import ca as ca_service
from tokenkeys.services import opening_batch, opening_files, token_keys
from tokenkeys.types import Algorithm, KeySpec, PinSource, Secret


@pytest.fixture
def uri(softhsm: Any, token_label: str) -> str:
    return str(softhsm.uri(token_label))


def test_leftover_of_interrupted_generation(tk: TK, uri: str, softhsm: Any) -> None:
    """What a kill -9 after generation leaves: a pair under a provisional label."""
    with open_token(uri, Config()) as tok:
        tok.login(PinSource(value=Secret(softhsm.pin), interactive=False))
        tok.generate_keypair(KeySpec(f"{token_keys.PROVISIONAL}bid:0badc0de", Algorithm.EC_P256))
    assert tk("--json", "key", "list", "--token", uri).json["keys"] == []
    listed = tk("--json", "key", "list", "--all", "--token", uri).json["keys"]
    assert [k["designation"] for k in listed] == [f"{token_keys.PROVISIONAL}bid:0badc0de"]
    refused = tk("key", "cleanup", "--token", uri)
    assert refused.code == 2 and "add --yes" in refused.err
    done = tk("--json", "key", "cleanup", "--yes", "--token", uri)
    assert done.code == 0, done.err
    assert len(done.json["deleted"]) == 1
    assert tk("--json", "key", "list", "--all", "--token", uri).json["keys"] == []
    # A complete key never carries the provisional label.
    assert tk("key", "generate", "--token", uri, "--name", "bid", "--algorithm",
              "ec-p256").code == 0
    assert [k["designation"] for k in
            tk("--json", "key", "list", "--all", "--token", uri).json["keys"]] == ["bid"]


def test_same_designation_twice_at_once(uri: str, cli_env: dict[str, str]) -> None:
    runs = [subprocess.Popen(
        [sys.executable, "-m", "tokenkeys", "key", "generate", "--token", uri, "--name", "same",
         "--algorithm", "rsa2048"],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)]
    codes = sorted(p.wait(timeout=120) for p in runs)
    errors = [p.communicate()[1] for p in runs]
    assert codes == [0, KeyExists.exit_code], errors
    with open_token(uri, Config()) as tok:
        tok.login(PinSource(value=Secret(cli_env["TOKENKEYS_PIN"]), interactive=False))
        assert [k.label for k in tok.list_keys()] == ["same"]


@pytest.mark.parametrize(("so_pin", "user_pin", "words"), [
    ("123", "123456", "SO PIN is too short"),
    ("12345678", "12", "user PIN is too short"),
])
def test_token_init_checks_pin_policy_first(tk: TK, softhsm: Any, so_pin: str, user_pin: str,
                                            words: str) -> None:
    label = f"policy-{len(so_pin)}"
    run = tk("token", "init", "--token", f"pkcs11:?module-path={SOFTHSM_MODULE}",
             "--label", label, env={"TOKENKEYS_SO_PIN": so_pin, "TOKENKEYS_PIN": user_pin})
    assert run.code == 2 and words in run.err and "incorrect" not in run.err
    # Nothing half-initialised: no token took the label (C_InitToken never ran).
    after = tk("--json", "token", "list", env={"TOKENKEYS_MODULE": SOFTHSM_MODULE}).json
    assert label not in [t["label"] for t in after["tokens"]]
    done = tk("token", "init", "--token", f"pkcs11:?module-path={SOFTHSM_MODULE}",
              "--label", label)
    assert done.code == 0, done.err


def test_key_deleted_during_batch(uri: str, softhsm: Any, tmp_path: Path,
                                  cli_env: dict[str, str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pins = PinSource(value=Secret(softhsm.pin), interactive=False)
    with open_token(uri, Config()) as tok:
        tok.login(pins)
        token_keys.generate_key(tok, "bid", algorithm=Algorithm.RSA2048)
        cert = tok.find_key(label="bid").certificate
    assert cert is not None
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(12):
        (tmp_path / "p").write_bytes(f"bid {i}".encode())
        seal(tmp_path / "p", inputs / f"bid-{i:02d}.p7m", [cert], SealOptions())
    real_open = opening_files.open_envelope
    opened: list[str] = []

    def open_and_delete(src: Path, dst: Path, identities: Any, **kw: Any) -> Any:
        if len(opened) == 4:  # another process deletes the key, as an officer might
            done = subprocess.run(
                [sys.executable, "-m", "tokenkeys", "key", "delete", "bid", "--yes",
                 "--unregistered", "--token", uri], env=cli_env, capture_output=True,
                text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        opened.append(src.name)
        return real_open(src, dst, identities, **kw)

    # One envelope at a time: deterministic.
    monkeypatch.setattr(opening_batch, "ENVELOPE_THREADS", 1)
    monkeypatch.setattr(opening_files, "open_envelope", open_and_delete)
    out = tmp_path / "out"
    pairs = opening_batch.plan(opening_batch.collect_inputs([inputs]), out)
    with pytest.raises(KeyNotFound) as caught:
        opening_batch.open_batch(pairs, out, uri, Config(), pins)
    assert "4 of 12 envelope(s) done, 8 left" in str(caught.value)
    assert sorted(p.name for p in out.iterdir()) == [f"bid-{i:02d}" for i in range(4)]


def test_ca_create_takes_the_same_crash_safe_path(uri: str, softhsm: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`ca create` holds a provisional label until the CA certificate is stored (a kill -9
    there leaves a leftover `key cleanup` finds), and a failure destroys the new key."""
    seen: list[str] = []
    real = ca_service.ca_certificate

    def spy(key: KeyHandle, cn: str, days: int) -> x509.Certificate:
        seen.append(key.label)
        if cn == "broken":
            raise DeviceError("signing failed")
        return real(key, cn, days)

    monkeypatch.setattr(ca_service, "ca_certificate", spy)
    with open_token(uri, Config()) as tok:
        tok.login(PinSource(value=Secret(softhsm.pin), interactive=False))
        with pytest.raises(DeviceError):
            ca_service.create_ca(tok, "root", cn="broken", algorithm=Algorithm.EC_P256)
        assert tok.list_keys() == []
        ca_service.create_ca(tok, "root", algorithm=Algorithm.EC_P256)
        assert [k.label for k in tok.list_keys()] == ["root"]
        with pytest.raises(KeyExists):
            ca_service.create_ca(tok, "root", algorithm=Algorithm.EC_P256)
    assert len(seen) == 2 and all(s.startswith(f"{token_keys.PROVISIONAL}root:") for s in seen)


def test_cleanup_confirmation_escapes_labels(uri: str, softhsm: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The confirmation question names the leftovers as the device labels them: escaped."""
    from click.testing import CliRunner

    from tokenkeys.cli.context import App
    from tokenkeys.cli.main import cli

    label = f"{token_keys.PROVISIONAL}bid\x1b[2J\x1b[31m:0badc0de"
    with open_token(uri, Config()) as tok:
        tok.login(PinSource(value=Secret(softhsm.pin), interactive=False))
        tok.generate_keypair(KeySpec(label, Algorithm.EC_P256))
    monkeypatch.setattr(App, "interactive", property(lambda self: True))
    run = CliRunner().invoke(cli, ["key", "cleanup", "--token", uri], input="n\n",
                             env={"TOKENKEYS_PIN": softhsm.pin})
    assert "Delete 1 leftover key(s)" in run.output, run.output
    assert "\x1b" not in run.output and "\\x1b[2J" in run.output
    assert run.exit_code != 0  # declined: nothing deleted
    with open_token(uri, Config()) as tok:
        tok.login(PinSource(value=Secret(softhsm.pin), interactive=False))
        assert [k.label for k in token_keys.leftovers(tok)] == [label]
