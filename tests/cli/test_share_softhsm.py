"""On SoftHSM2: PKCS#12 export/import between tokens, device copy, extractability.

Objects are checked with pkcs11-tool (OpenSC); envelopes are sealed by openssl to
the ORIGINAL certificate and opened with the key on the other token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import SOFTHSM_MODULE, TK, p11_block, p11_objects
from tests.cli.share_support import (
    PASSPHRASE,
    PIN,
    export_cert,
    openssl,
    seal_and_open,
    soft_store,
)

pytestmark = pytest.mark.softhsm


@pytest.fixture
def share_env(cli_env: dict[str, str]) -> dict[str, str]:
    cli_env.update({"TOKENKEYS_PASSPHRASE": PASSPHRASE, "TOKENKEYS_TO_PIN": "123456"})
    return cli_env


def _access(objects: list[str]) -> str:
    block = p11_block(objects, "Private Key Object")
    return next(line for line in block.splitlines() if "Access:" in line)


def _kinds(objects: list[str]) -> list[str]:
    return sorted(line.split(";")[0].strip() for line in objects if not line.startswith(" "))


@pytest.fixture
def source(tk: TK, softhsm: Any, share_env: dict[str, str]) -> tuple[str, str]:
    label = softhsm.new_token("src")
    uri = softhsm.uri(label)
    done = tk("key", "generate", "--token", uri, "--name", "BICLE", "--algorithm", "rsa2048",
              "--shareable")
    assert done.code == 0, done.err
    return label, uri


def test_pkcs12_between_tokens(tk: TK, softhsm: Any, share_env: dict[str, str],
                               source: tuple[str, str], tmp_path: Path) -> None:
    _, src = source
    cert = export_cert(tk, "BICLE", src, tmp_path / "orig.pem")
    p12 = tmp_path / "bicle.p12"
    done = tk("share", "export", "BICLE", "--token", src, "-o", p12)
    assert done.code == 0, done.err
    info = openssl("pkcs12", "-info", "-noout", "-in", p12, "-passin",
                   "env:TOKENKEYS_PASSPHRASE", env=share_env)
    assert "AES-256-CBC" in info and "PBKDF2" in info and "MAC: sha256" in info

    for shareable in (False, True):
        label = softhsm.new_token("dst")
        dst = softhsm.uri(label)
        before = p11_objects(SOFTHSM_MODULE, label, share_env)
        wrong = tk("share", "import", p12, "--token", dst, "--name", "BICLE",
                   env={"TOKENKEYS_PASSPHRASE": "not the passphrase at all"})
        assert wrong.code == 4, wrong.err
        assert p11_objects(SOFTHSM_MODULE, label, share_env) == before == []
        args = ["--shareable"] if shareable else []
        done = tk("share", "import", p12, "--token", dst, "--name", "BICLE", *args)
        assert done.code == 0, done.err
        objects = p11_objects(SOFTHSM_MODULE, label, share_env)
        assert _kinds(objects) == ["Certificate Object", "Private Key Object",
                                   "Public Key Object"], objects
        access = _access(objects)
        assert "sensitive" in access
        assert ("extractable" in access.replace("never extractable", "")) is shareable, access
        seal_and_open(tk, cert, dst, tmp_path / f"env-{shareable}")
        seal_and_open(tk, cert, dst, tmp_path / f"oaep-{shareable}", oaep=True)


def test_existing_output_refused_before_the_pin(tk: TK, source: tuple[str, str],
                                                tmp_path: Path) -> None:
    _, src = source
    p12 = tmp_path / "there.p12"
    p12.write_bytes(b"keep me")
    done = tk("share", "export", "BICLE", "--token", src, "-o", p12,
              env={"TOKENKEYS_PIN": "999999"})  # a wrong PIN: never sent
    assert done.code == 10 and "already exists" in done.err, done.err
    assert p12.read_bytes() == b"keep me"


def test_non_shareable_export_refused(tk: TK, softhsm: Any, share_env: dict[str, str],
                                      tmp_path: Path) -> None:
    uri = softhsm.uri(softhsm.new_token("lock"))
    assert tk("key", "generate", "--token", uri, "--name", "LOCKED",
              "--algorithm", "rsa2048").code == 0
    out = tmp_path / "locked.p12"
    done = tk("share", "export", "LOCKED", "--token", uri, "-o", out)
    assert done.code == 9 and "not extractable, by design" in done.err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "locked" in p.name]


def test_device_copy_leaves_no_transient_key(tk: TK, softhsm: Any, share_env: dict[str, str],
                                            source: tuple[str, str], tmp_path: Path) -> None:
    src_label, src = source
    cert = export_cert(tk, "BICLE", src, tmp_path / "orig.pem")
    src_before = p11_objects(SOFTHSM_MODULE, src_label, share_env)
    label = softhsm.new_token("copy")
    dst = softhsm.uri(label)
    done = tk("--json", "share", "copy", "BICLE", "--token", src, "--to-token", dst)
    assert done.code == 0, done.err
    assert p11_objects(SOFTHSM_MODULE, src_label, share_env) == src_before
    objects = p11_objects(SOFTHSM_MODULE, label, share_env)
    assert _kinds(objects) == ["Certificate Object", "Private Key Object",
                               "Public Key Object"], objects
    assert "extractable" not in _access(objects).replace("never extractable", "")
    seal_and_open(tk, cert, dst, tmp_path / "env", oaep=True)
    again = tk("share", "copy", "BICLE", "--token", src, "--to-token", dst)
    assert again.code == 5, again.err
    assert p11_objects(SOFTHSM_MODULE, label, share_env) == objects


def test_copy_soft_and_softhsm_both_ways(tk: TK, softhsm: Any, share_env: dict[str, str],
                                         tmp_path: Path) -> None:
    soft = soft_store(tmp_path / "soft", ("SOFT-EC", "ec-p256", True))
    soft_pin: dict[str, str | None] = {"TOKENKEYS_PIN": PIN}
    cert = export_cert(tk, "SOFT-EC", soft, tmp_path / "ec.pem")
    label = softhsm.new_token("mix")
    hsm = softhsm.uri(label)
    done = tk("share", "copy", "SOFT-EC", "--token", soft, "--to-token", hsm, "--shareable",
              env=soft_pin)
    assert done.code == 0, done.err
    seal_and_open(tk, cert, hsm, tmp_path / "hsm")
    back = soft_store(tmp_path / "back")
    done = tk("share", "copy", "SOFT-EC", "--token", hsm, "--to-token", back,
              env={"TOKENKEYS_TO_PIN": PIN})
    assert done.code == 0, done.err
    seal_and_open(tk, cert, back, tmp_path / "back-env", pin_env=soft_pin)
