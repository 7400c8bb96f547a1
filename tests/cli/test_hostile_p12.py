"""Hostile and odd PKCS#12 files through the real CLI (`share import`): refused fast, in
one line, before any derivation; odd but honest files imported without a raw warning;
Ctrl-C stops a long derivation at once.

The files are built once per module (tests/cli/p12_hostile.py); the target is a
software keystore with a cheap PIN derivation (share_support.soft_store).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cli import p12_hostile as hostile
from tests.cli.conftest import TK
from tests.cli.share_support import PASSPHRASE, PIN, listing, openssl, soft_store

MAX_ITERATIONS = 10_000_000  # the documented ceiling (pkcs12_read.MAX_ITERATIONS)


@pytest.fixture(autouse=True)
def share_env(cli_env: dict[str, str]) -> dict[str, str]:
    cli_env.update({"TOKENKEYS_PASSPHRASE": PASSPHRASE, "TOKENKEYS_PIN": PIN})
    return cli_env


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("p12")
    key = rsa.generate_private_key(65537, 2048)
    cert = hostile.certificate("Agent", key)
    out: dict[str, Any] = {"dir": d, "shapes": {}}
    for i, (name, (data, code, text)) in enumerate(hostile.shapes(key, cert).items()):
        path = d / f"hostile-{i}.p12"
        path.write_bytes(data)
        out["shapes"][name] = (path, code, text)
    good = hostile.p12(key, cert)
    (d / "ber.p12").write_bytes(hostile.ber(good))
    (d / "nomac.p12").write_bytes(hostile.rewrite(good, drop_mac=True))
    chain, _ = hostile.chain_with_strangers(300)
    (d / "strangers.p12").write_bytes(chain)
    # In-ceiling but slow: what a Ctrl-C must be able to stop (the counts are rewritten,
    # not derived at build time: the import is stopped long before it would notice).
    (d / "slow-mac.p12").write_bytes(hostile.rewrite(good, mac=MAX_ITERATIONS))
    (d / "slow-key.p12").write_bytes(hostile.rewrite(good, key=MAX_ITERATIONS, drop_mac=True))
    return out


@pytest.fixture
def target(tmp_path: Path) -> tuple[str, Path]:
    return soft_store(tmp_path / "agent"), tmp_path / "agent"


def test_hostile_files_refused_in_one_line_before_any_derivation(
        tk: TK, files: dict[str, Any], target: tuple[str, Path]) -> None:
    uri, store = target
    before = listing(store)
    for name, (path, code, text) in files["shapes"].items():
        start = time.monotonic()
        done = tk("share", "import", path, "--token", uri, "--name", "K")
        elapsed = time.monotonic() - start
        assert done.code == code, (name, done.err)
        assert text in done.err, (name, done.err)
        assert len(done.err.strip().splitlines()) == 1, (name, done.err)
        assert elapsed < 10, (name, elapsed)  # minutes on a reader that derives first
        assert listing(store) == before, name


def _unsupported_key_files(d: Path, env: dict[str, str]) -> dict[str, Path]:
    """X25519 and DSA keys, as openssl writes them."""
    out = {}
    ca_key, ca = d / "ca.key", d / "ca.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", ca_key, "-out", ca, "-subj", "/CN=CA", "-days", "30")
    for kind, gen in (("X25519", ["-algorithm", "X25519"]),
                      ("DSA", ["-algorithm", "DSA", "-pkeyopt", "dsa_paramgen_bits:2048"])):
        key, pub, csr, cert, p12 = (d / f"{kind}.{e}" for e in ("key", "pub", "csr", "pem",
                                                                 "p12"))
        if kind == "DSA":
            params = d / "dsa.params"
            openssl("genpkey", "-genparam", *gen, "-out", params)
            openssl("genpkey", "-paramfile", params, "-out", key)
        else:
            openssl("genpkey", *gen, "-out", key)
        openssl("pkey", "-in", key, "-pubout", "-out", pub)
        openssl("req", "-new", "-key", ca_key, "-subj", f"/CN={kind}", "-out", csr)
        openssl("x509", "-req", "-in", csr, "-force_pubkey", pub, "-CA", ca, "-CAkey", ca_key,
                "-set_serial", "7", "-out", cert, "-days", "30")
        openssl("pkcs12", "-export", "-inkey", key, "-in", cert, "-out", p12,
                "-passout", "env:TOKENKEYS_PASSPHRASE", env=env)
        out[kind] = p12
    return out


def test_unsupported_keys_get_one_clean_refusal_and_no_warning(
        tk: TK, share_env: dict[str, str], files: dict[str, Any],
        target: tuple[str, Path]) -> None:
    uri, _ = target
    for kind, path in _unsupported_key_files(files["dir"], share_env).items():
        done = tk("--json", "share", "import", path, "--token", uri, "--name", "K",
                  env={"PYTHONWARNINGS": "error"})
        assert done.code == 2, (kind, done.out, done.err)
        assert f"is {kind}: tokenkeys keeps RSA" in done.json["error"]["message"]
        _no_python_warning(done.err)


def test_ber_file_imports_without_a_warning(tk: TK, files: dict[str, Any],
                                            target: tuple[str, Path]) -> None:
    uri, _ = target
    done = tk("--json", "share", "import", files["dir"] / "ber.p12", "--token", uri,
              "--name", "FROM-NSS", env={"PYTHONWARNINGS": "error"})
    assert done.code == 0, (done.out, done.err)
    _no_python_warning(done.err)
    assert done.json["share"]["chain_certificates"] == 0


def _no_python_warning(err: str) -> None:
    """stderr holds tokenkeys' own notes ("warning: ...", escaped), never a library's."""
    assert "Warning" not in err and "site-packages" not in err, err
    assert all(line.startswith("warning: ") for line in err.splitlines()), err


def test_no_mac_accepted_with_a_warning(tk: TK, files: dict[str, Any],
                                        target: tuple[str, Path]) -> None:
    uri, _ = target
    done = tk("--json", "share", "import", files["dir"] / "nomac.p12", "--token", uri,
              "--name", "NOMAC")
    assert done.code == 0, done.err
    assert any("has no MAC: its integrity was not protected" in w
               for w in done.json["share"]["warnings"])


def test_unrelated_certificates_dropped_with_a_warning(tk: TK, files: dict[str, Any],
                                                       target: tuple[str, Path]) -> None:
    uri, _ = target
    done = tk("--json", "share", "import", files["dir"] / "strangers.p12", "--token", uri,
              "--name", "CHAINED")
    assert done.code == 0, done.err
    assert done.json["share"]["chain_certificates"] == 1  # the CA that issued the key's
    assert any("300 certificate(s)" in w and "not stored" in w
               for w in done.json["share"]["warnings"])


@pytest.mark.parametrize("name", ["slow-mac.p12", "slow-key.p12"])
def test_ctrl_c_stops_a_long_derivation_within_a_second(
        cli_env: dict[str, str], files: dict[str, Any], target: tuple[str, Path],
        name: str) -> None:
    """At the ceiling, a derivation takes seconds (the MAC's PKCS#12 KDF, or without a
    MAC the key's PBKDF2): a real SIGINT to the real CLI ends it within a second."""
    uri, store = target
    before = listing(store)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenkeys", "share", "import", str(files["dir"] / name),
         "--token", uri, "--name", "SLOW"],
        env=cli_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    time.sleep(2.5)  # start-up, login, then well into the derivation
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGINT)
    start = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - start < 1.0, err
    assert proc.returncode == 130, err
    assert "tokenkeys: error: aborted" in err or "interrupted" in err, err
    assert listing(store) == before
