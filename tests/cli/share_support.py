"""Helpers for the share tests: software keystores, OpenSSL-made files, sealing with openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.cli.conftest import TK

PASSPHRASE = "Zq9 unique-share passphrase"
PIN = "share keystore 2026"  # a software keystore PIN must resist offline guessing


# The keystore records its KDF's parameters and every login uses those: a store made
# with a cheap derivation opens fast everywhere, CLI included. The real cost is
# tests/drivers/test_software_kdf.py's subject, and `token init` keeps it.
FAST_KDF = {"name": "argon2id", "iterations": 1, "lanes": 1, "memory_cost": 8}


def soft_store(path: Path, *keys: tuple[str, str, bool]) -> str:
    """A software keystore at `path` (with a cheap PIN derivation) with keys (name,
    algorithm, shareable); its URI."""
    from unittest import mock

    from tokenkeys.drivers import software
    from tokenkeys.drivers.software import SoftwareToken
    from tokenkeys.services import token_keys
    from tokenkeys.types import Algorithm, Secret, given_pin

    with mock.patch.object(software, "ARGON2ID", FAST_KDF):
        SoftwareToken.init(path, path.name, Secret(PIN))
    with SoftwareToken(path.resolve()) as token:
        token.login(given_pin(Secret(PIN)))
        for name, algorithm, shareable in keys:
            token_keys.generate_key(token, name, algorithm=Algorithm(algorithm),
                                    shareable=shareable, days=30)
    return f"soft:{path}"


def openssl(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def export_cert(tk: TK, name: str, uri: str, path: Path) -> Path:
    done = tk("key", "export-cert", name, "--token", uri, "-o", path)
    assert done.code == 0, done.err
    return path


def seal_and_open(tk: TK, cert: Path, token_uri: str, work: Path, *,
                  oaep: bool = False, pin_env: dict[str, str | None] | None = None) -> None:
    """openssl seals a secret to `cert`; `tokenkeys open` on `token_uri` must recover it."""
    work.mkdir(parents=True, exist_ok=True)
    plain = work / "bid.txt"
    plain.write_bytes(b"offre technique et financiere\n" * 10)
    envelope = work / "bid.txt.p7m"
    extra = ["-keyopt", "rsa_padding_mode:oaep"] if oaep else []
    openssl("cms", "-encrypt", "-binary", "-aes256", "-in", plain, "-out", envelope,
            "-outform", "DER", "-recip", cert, *extra)
    out = work / "opened"
    done = tk("open", envelope, "-o", out, "--token", token_uri, env=pin_env)
    assert done.code == 0, done.out + done.err
    assert (out / "bid.txt").read_bytes() == plain.read_bytes()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def signature_only_p12(path: Path, key: Any) -> Path:
    """A PKCS#12 file (PASSPHRASE) holding `key` and a self-signed certificate whose
    keyUsage allows digitalSignature only: a key not meant to receive envelopes."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SIGNATURE")])
    now = datetime.now(UTC) - timedelta(minutes=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"sig", key, cert, None, serialization.BestAvailableEncryption(PASSPHRASE.encode())))
    return path
