"""openssl cms -encrypt -> tokenkeys open_envelope, for every supported variant."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokenkeys.envelope import describe_recipients, open_envelope

from .conftest import KeyPair, leftovers, needs_openssl, openssl

pytestmark = [needs_openssl, pytest.mark.openssl]

OAEP = ["-keyopt", "rsa_padding_mode:oaep", "-keyopt"]

# id: (recipients, extra args per recipient, global args, opener, expected cipher, transport)
CASES: dict[str, tuple[list[str], list[list[str]], list[str], str, str, str]] = {
    "cbc128": (["rsa"], [[]], ["-aes-128-cbc"], "rsa", "aes-128-cbc", "rsa-pkcs1v15"),
    "cbc192": (["rsa"], [[]], ["-aes-192-cbc"], "rsa", "aes-192-cbc", "rsa-pkcs1v15"),
    "cbc256": (["rsa"], [[]], ["-aes-256-cbc"], "rsa", "aes-256-cbc", "rsa-pkcs1v15"),
    "gcm128": (["rsa"], [[]], ["-aes-128-gcm"], "rsa", "aes-128-gcm", "rsa-pkcs1v15"),
    "gcm192": (["rsa"], [[]], ["-aes-192-gcm"], "rsa", "aes-192-gcm", "rsa-pkcs1v15"),
    "gcm256": (["rsa"], [[]], ["-aes-256-gcm"], "rsa", "aes-256-gcm", "rsa-pkcs1v15"),
    **{
        f"oaep-{md}": (["rsa"], [[*OAEP, f"rsa_oaep_md:{md}"]], ["-aes-256-gcm"], "rsa",
                       "aes-256-gcm", f"rsaes-oaep-{md}")
        for md in ("sha1", "sha224", "sha256", "sha384", "sha512")
    },
    "oaep-sha256-mgf1-sha1": (["rsa"], [[*OAEP, "rsa_oaep_md:sha256", "-keyopt",
                                         "rsa_mgf1_md:sha1"]], ["-aes-128-cbc"], "rsa",
                              "aes-128-cbc", "rsaes-oaep-sha256-mgf1-sha1"),
    "oaep-sha256-label": (["rsa"], [[*OAEP, "rsa_oaep_md:sha256", "-keyopt",
                                     "rsa_oaep_label:6c6162656c"]], ["-aes-256-gcm"], "rsa",
                          "aes-256-gcm", "rsaes-oaep-sha256-label"),
    "ec-p256": (["p256"], [[]], ["-aes-256-gcm"], "p256", "aes-256-gcm",
                "ecdh-p256-sha1-kdf+aes256-wrap"),
    "ec-p384": (["p384"], [[]], ["-aes-128-cbc"], "p384", "aes-128-cbc",
                "ecdh-p384-sha1-kdf+aes128-wrap"),
    "ec-p256-kdf-sha256": (["p256"], [["-keyopt", "ecdh_kdf_md:sha256"]], ["-aes-256-gcm"],
                           "p256", "aes-256-gcm", "ecdh-p256-sha256-kdf+aes256-wrap"),
    "ec-p384-kdf-sha384": (["p384"], [["-keyopt", "ecdh_kdf_md:sha384"]], ["-aes-192-cbc"],
                           "p384", "aes-192-cbc", "ecdh-p384-sha384-kdf+aes192-wrap"),
    "stream-gcm": (["rsa"], [[]], ["-aes-256-gcm", "-stream"], "rsa", "aes-256-gcm",
                   "rsa-pkcs1v15"),
    "stream-cbc-ec": (["p256"], [[]], ["-aes-256-cbc", "-stream"], "p256", "aes-256-cbc",
                      "ecdh-p256-sha1-kdf+aes256-wrap"),
    "keyid-rsa": (["rsa"], [[]], ["-aes-256-gcm", "-keyid"], "rsa", "aes-256-gcm",
                  "rsa-pkcs1v15"),
    "keyid-ec": (["p384"], [[]], ["-aes-256-gcm", "-keyid"], "p384", "aes-256-gcm",
                 "ecdh-p384-sha1-kdf+aes256-wrap"),
    "multi-rsa-second": (["rsa2", "rsa"], [[], []], ["-aes-256-gcm"], "rsa", "aes-256-gcm",
                         "rsa-pkcs1v15"),
    "multi-oaep-ec-second": (["rsa2", "p256"], [[*OAEP, "rsa_oaep_md:sha256"], []],
                             ["-aes-256-gcm", "-stream"], "p256", "aes-256-gcm",
                             "ecdh-p256-sha1-kdf+aes256-wrap"),
    "multi-mixed-keyid": (["p384", "rsa2", "rsa"], [[], [], []], ["-aes-128-gcm", "-keyid"],
                          "rsa", "aes-128-gcm", "rsa-pkcs1v15"),
}
OUTFORMS = {"der": ["-outform", "DER"], "pem": ["-outform", "PEM"], "smime": []}


def _encrypt(keys: dict[str, KeyPair], tmp: Path, case: str, outform: str,
             plaintext: bytes) -> Path:
    recips, per, glob, *_ = CASES[case]
    src = tmp / "plain.bin"
    src.write_bytes(plaintext)
    env = tmp / f"{case}.{outform}"
    args: list[str | Path] = ["cms", "-encrypt", "-binary", "-in", src, "-out", env, *glob,
                              *OUTFORMS[outform]]
    for name, extra in zip(recips, per, strict=True):
        args += ["-recip", keys[name].cert_pem, *extra]
    openssl(*args)
    src.unlink()
    return env


@pytest.mark.parametrize("outform", sorted(OUTFORMS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_openssl_to_tokenkeys(keys: dict[str, KeyPair], tmp_path: Path, case: str,
                              outform: str) -> None:
    plaintext = os.urandom(1000 + len(case))
    env = _encrypt(keys, tmp_path, case, outform, plaintext)
    *_, opener, cipher, transport = CASES[case]
    dst = tmp_path / "out.bin"
    # The opener is passed last, after a non-matching identity, to exercise matching.
    other = keys["rsa2"] if opener != "rsa2" else keys["p256"]
    if other.name in CASES[case][0]:
        other = keys["p256"] if opener != "p256" else keys["p384"]
    result = open_envelope(env, dst, [other.identity(), keys[opener].identity()])
    assert dst.read_bytes() == plaintext
    assert result.bytes_out == len(plaintext)
    assert result.content_cipher == cipher
    assert result.key_transport == transport
    assert result.identity_label == opener
    assert leftovers(tmp_path, {env.name, dst.name}) == []
    assert len(describe_recipients(env)) == len(CASES[case][0])


def test_openssl_stream_large(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    plaintext = os.urandom(3 << 20)
    env = _encrypt(keys, tmp_path, "stream-gcm", "der", plaintext)
    dst = tmp_path / "out.bin"
    result = open_envelope(env, dst, [keys["rsa"].key])  # bare private key, no certificate
    assert dst.read_bytes() == plaintext
    assert result.bytes_out == len(plaintext)


def test_bare_keys_without_certificates(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    """Plain cryptography keys: OAEP/ECDH by trial, v1.5 by key size."""
    for case in ("oaep-sha256", "ec-p384", "cbc256", "keyid-rsa"):
        plaintext = os.urandom(77)
        env = _encrypt(keys, tmp_path, case, "der", plaintext)
        dst = tmp_path / f"{case}.out"
        opener = CASES[case][3]
        open_envelope(env, dst, [keys["p256"].key, keys[opener].key])
        assert dst.read_bytes() == plaintext
