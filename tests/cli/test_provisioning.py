"""Issue: a security officer provisions keys on SoftHSM2 through the real CLI.

Results are checked with tools nobody here wrote: pkcs11-tool and openssl.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.cli.conftest import SOFTHSM_MODULE, TK, p11_block, p11_objects


@pytest.fixture
def uri(softhsm: Any, token_label: str) -> str:
    return str(softhsm.uri(token_label))


def test_generate_list_export_delete(tk: TK, uri: str, token_label: str, tmp_path: Path,
                                     cli_env: dict[str, str]) -> None:
    gen = tk("--json", "key", "generate", "--token", uri, "--name", "BICLE-2026",
             "--cn", "Acheteur CEA", "--days", "90")
    assert gen.code == 0, gen.err
    key = gen.json["key"]
    assert key["designation"] == "BICLE-2026" and key["cn"] == "Acheteur CEA"
    assert key["algorithm"] == "rsa3072" and key["extractable"] is False

    listing = p11_objects(SOFTHSM_MODULE, token_label, cli_env)
    objects = "\n".join(listing)
    private = p11_block(listing, "Private Key Object")
    assert "sensitive" in private and "never extractable" in private
    assert "Certificate Object" in objects and "BICLE-2026" in objects
    assert f"ID:         {key['id']}" in objects

    pem = tmp_path / "bicle.pem"
    exported = tk("key", "export-cert", "BICLE-2026", "--token", uri, "-o", pem)
    assert exported.code == 0, exported.err
    verify = subprocess.run(["openssl", "verify", "-check_ss_sig", "-CAfile", pem, pem],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=Acheteur CEA"
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=89, hours=23) < lifetime <= timedelta(days=90)

    der = tmp_path / "bicle.der"
    assert tk("key", "export-cert", f"{uri.split('?')[0]};object=BICLE-2026?"
              f"module-path={SOFTHSM_MODULE}", "-o", der, "--der").code == 0
    assert x509.load_der_x509_certificate(der.read_bytes()) == cert

    listed = tk("--json", "key", "list", "--token", uri)
    assert listed.code == 0
    [row] = listed.json["keys"]
    assert row["status"] == "valid" and row["uri"].startswith("pkcs11:")

    deleted = tk("key", "delete", "BICLE-2026", "--token", uri, "--yes")
    assert deleted.code == 0, deleted.err
    assert p11_objects(SOFTHSM_MODULE, token_label, cli_env) == []


def test_shareable_and_ec(tk: TK, uri: str, token_label: str, cli_env: dict[str, str]) -> None:
    gen = tk("--json", "key", "generate", "--token", uri, "--name", "share",
             "--algorithm", "ec-p256", "--shareable")
    assert gen.code == 0, gen.err
    assert gen.json["key"]["extractable"] is True
    private = p11_block(p11_objects(SOFTHSM_MODULE, token_label, cli_env), "Private Key Object")
    assert "sensitive" in private and "extractable" in private
    assert "never extractable" not in private


BadInput = tuple[list[str], dict[str, str | None], int, str]


def _bad_inputs(uri: str, tmp_path: Path) -> dict[str, BadInput]:
    base = uri.split("?")[0]
    return {
        "wrong PIN": (["key", "generate", "--token", uri, "--name", "x", "--algorithm",
                       "ec-p256"], {"TOKENKEYS_PIN": "000000"}, 4, "PIN incorrect"),
        "no such token": (["key", "list", "--token",
                           "pkcs11:token=no-such-token?module-path=" + SOFTHSM_MODULE],
                          {}, 3, "no-such-token"),
        "no such module": (["key", "list", "--token",
                            base + "?module-path=/nonexistent/libpkcs11.so"],
                           {}, 3, "/nonexistent/libpkcs11.so"),
        "duplicate name": (["key", "generate", "--token", uri, "--name", "existing",
                            "--algorithm", "ec-p256"], {}, 5, "already exists"),
        "bad algorithm": (["key", "generate", "--token", uri, "--name", "y", "--algorithm",
                           "dsa1024"], {}, 2, "dsa1024"),
        "PIN in URI": (["key", "list", "--token",
                        base + ";pin-value=123456?module-path=" + SOFTHSM_MODULE],
                       {}, 2, "secrets never go in URIs"),
        "delete ghost": (["key", "delete", "ghost", "--token", uri, "--yes"], {}, 5, "ghost"),
        "export ghost": (["key", "export-cert", "ghost", "--token", uri, "-o",
                          str(tmp_path / "g.pem")], {}, 5, "ghost"),
        "bad days": (["key", "generate", "--token", uri, "--name", "z", "--days", "0"],
                     {}, 2, "--days"),
        "no PIN": (["key", "list", "--token", uri], {"TOKENKEYS_PIN": None}, 4,
                   "TOKENKEYS_PIN"),
    }


BAD_CASES = list(_bad_inputs("pkcs11:token=x", Path("/")))


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_inputs_fail_cleanly_and_change_nothing(tk: TK, uri: str, token_label: str,
                                                     tmp_path: Path, cli_env: dict[str, str],
                                                     case: str) -> None:
    assert tk("key", "generate", "--token", uri, "--name", "existing",
              "--algorithm", "ec-p256").code == 0
    before = p11_objects(SOFTHSM_MODULE, token_label, cli_env)
    args, env, code, needle = _bad_inputs(uri, tmp_path)[case]
    run = tk(*args, env=env)
    assert run.code == code, (args, run.code, run.err)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokenkeys: error:"), (args, run.err)
    assert needle in lines[0], (args, lines[0])
    assert "Traceback" not in run.err and "123456" not in run.err + run.out
    assert p11_objects(SOFTHSM_MODULE, token_label, cli_env) == before, args
    assert not (tmp_path / "g.pem").exists()


def test_json_errors_are_one_document(tk: TK, uri: str) -> None:
    run = tk("--json", "key", "list", "--token", uri, env={"TOKENKEYS_PIN": "999999"})
    assert run.code == 4
    error = run.json["error"]
    assert run.json == {"ok": False, "error": {"type": "PinIncorrect", "message": error["message"],
                                               "exit_code": 4}}
    assert error["message"].startswith("PIN incorrect (")
    assert error["message"].endswith("tokenkeys never retries a PIN by itself")
    assert "\n" not in error["message"]
    assert "999999" not in run.out + run.err


def test_pin_file_and_token_list(tk: TK, uri: str, token_label: str, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("123456\n")
    run = tk("--json", "key", "list", "--token", uri, "--pin-file", pin_file,
             env={"TOKENKEYS_PIN": None})
    assert run.code == 0, run.err
    tokens = tk("--json", "token", "list", env={"TOKENKEYS_MODULE": SOFTHSM_MODULE})
    assert tokens.code == 0, tokens.err
    mine = [t for t in tokens.json["tokens"] if t["label"] == token_label]
    assert mine and "token-initialized" in mine[0]["flags"]


def test_token_init_and_refuse_reinit(tk: TK, softhsm: Any) -> None:
    uri = f"pkcs11:?module-path={SOFTHSM_MODULE}"
    run = tk("--json", "token", "init", "--token", uri, "--label", "fresh-init")
    assert run.code == 0, run.err
    assert run.json["token"]["label"] == "fresh-init"
    made = tk("key", "generate", "--token", softhsm.uri("fresh-init"), "--name", "k",
              "--algorithm", "ec-p256")
    assert made.code == 0, made.err
    # SoftHSM renumbers slots after C_InitToken: take the slot a new process sees.
    tokens = tk("--json", "token", "list", env={"TOKENKEYS_MODULE": SOFTHSM_MODULE}).json
    [slot] = [t["slot"] for t in tokens["tokens"] if t["label"] == "fresh-init"]
    again = tk("token", "init", "--token", f"pkcs11:slot-id={slot}?module-path={SOFTHSM_MODULE}",
               "--label", "again")
    assert again.code == 9 and "re-initialising would erase every key" in again.err
    duplicate = tk("token", "init", "--token", uri, "--label", "fresh-init")
    assert duplicate.code == 9 and "already exists" in duplicate.err
    listed = tk("--json", "key", "list", "--token", softhsm.uri("fresh-init"))
    assert [k["designation"] for k in listed.json["keys"]] == ["k"]


def test_software_keystore_cli(tk: TK, tmp_path: Path) -> None:
    uri = f"soft:{tmp_path / 'ks'}"
    weak = tk("token", "init", "--token", uri, "--label", "laptop")  # TOKENKEYS_PIN=123456
    assert weak.code == 2 and "at least 8 characters" in weak.err
    assert not (tmp_path / "ks").exists()
    pin = {"TOKENKEYS_PIN": "laptop keystore 2026"}
    assert tk("token", "init", "--token", uri, "--label", "laptop", env=pin).code == 0
    gen = tk("--json", "key", "generate", "--token", uri, "--name", "soft-key",
             "--algorithm", "ec-p384", "--days", "10", env=pin)
    assert gen.code == 0, gen.err
    assert gen.json["key"]["algorithm"] == "ec-p384"
    pem = tmp_path / "c.pem"
    assert tk("key", "export-cert", f"{uri}#soft-key", "-o", pem).code == 0
    verify = subprocess.run(["openssl", "verify", "-check_ss_sig", "-CAfile", pem, pem],
                            capture_output=True, text=True)
    assert verify.returncode == 0
    wrong = tk("key", "list", "--token", uri, env={"TOKENKEYS_PIN": "nope"})
    assert wrong.code == 4 and "PIN incorrect" in wrong.err
    key_files = list((tmp_path / "ks").glob("*.key.json"))
    assert len(key_files) == 1 and b"PRIVATE KEY" not in key_files[0].read_bytes()
    changed = tk("token", "change-pin", "--token", uri,
                 env={**pin, "TOKENKEYS_NEW_PIN": "new laptop PIN 2027"})
    assert changed.code == 0, changed.err
    assert tk("key", "list", "--token", uri, env=pin).code == 4
    assert tk("key", "list", "--token", uri, env={"TOKENKEYS_PIN": "new laptop PIN 2027"}).code == 0


def test_no_traceback_without_debug(tk: TK, tmp_path: Path) -> None:
    run = tk("key", "list", "--token", f"soft:{tmp_path / 'missing'}")
    assert run.code == 3 and "Traceback" not in run.err
    assert "no software keystore" in run.err


def test_doctor_reports_modules_tokens_mechanisms_and_expiry(tk: TK, uri: str,
                                                             token_label: str) -> None:
    assert tk("key", "generate", "--token", uri, "--name", "soon", "--algorithm", "ec-p256",
              "--days", "5").code == 0
    run = tk("--json", "doctor", env={"TOKENKEYS_MODULE": SOFTHSM_MODULE})
    # The registry side: a service with keys but no backup key is a problem (exit 15).
    assert run.code == 15, run.err
    assert run.json["problems"] == ["service 'default' has no backup key"]
    doc = run.json
    assert any(m.endswith("libsofthsm2.so") for m in doc["modules"])
    [mine] = [t for t in doc["tokens"] if f"token={token_label};" in t["uri"]]
    assert mine["mechanisms"]["RSA_X_509"] and mine["mechanisms"]["ECDH1_DERIVE"]
    assert [k["designation"] for k in mine["keys"]] == ["soon"]
    assert mine["keys"][0]["status"] == "expiring"
    human = tk("doctor", env={"TOKENKEYS_MODULE": SOFTHSM_MODULE, "TOKENKEYS_PIN": None})
    assert human.code == 15 and "set TOKENKEYS_PIN to check key expiry" in human.out


@pytest.mark.parametrize("command", [["key", "generate", "--name", "Y"],
                                     ["ca", "create", "--name", "Y"], ["key", "renew", "Y"]])
def test_every_algorithm_option_refuses_an_unknown_one(tk: TK, command: list[str]) -> None:
    run = tk(*command, "--token", "soft:/nonexistent", "--algorithm", "dsa")
    assert run.code == 2 and "unsupported algorithm 'dsa' (choose one of:" in run.err, run.err
