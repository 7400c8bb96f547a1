"""Envelopes made by the OpenSSL CLI open with the private key on SoftHSM2.

The RSA decryption or ECDH derivation happens on the token; the envelope
layer sees only the driver's KeyHandle.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tokenkeys.envelope import SealOptions, open_envelope, seal
from tokenkeys.errors import NoMatchingRecipient
from tokenkeys.services.signing import self_signed

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")
OAEP = ["-keyopt", "rsa_padding_mode:oaep", "-keyopt"]

# id: (token keys as recipients, per-recipient keyopts, global args, outform)
CASES: dict[str, tuple[list[str], list[list[str]], list[str], str]] = {
    **{f"cbc{b}-v15": (["rsa2048"], [[]], [f"-aes-{b}-cbc"], "DER") for b in (128, 192, 256)},
    **{f"gcm{b}-v15": (["rsa2048"], [[]], [f"-aes-{b}-gcm"], "DER") for b in (128, 192, 256)},
    **{
        f"oaep-{md}": (["rsa3072"], [[*OAEP, f"rsa_oaep_md:{md}"]], ["-aes-256-gcm"], "DER")
        for md in ("sha1", "sha224", "sha256", "sha384", "sha512")
    },
    "ec-p256": (["ec-p256"], [[]], ["-aes-256-gcm"], "DER"),
    "ec-p384-kdf-sha384": (["ec-p384"], [["-keyopt", "ecdh_kdf_md:sha384"]], ["-aes-128-cbc"],
                           "DER"),
    "ec-p256-kdf-sha256": (["ec-p256"], [["-keyopt", "ecdh_kdf_md:sha256"]], ["-aes-256-cbc"],
                           "DER"),
    "stream-oaep": (["rsa2048"], [[*OAEP, "rsa_oaep_md:sha256"]], ["-aes-256-gcm", "-stream"],
                    "DER"),
    "stream-ec": (["ec-p384"], [[]], ["-aes-256-cbc", "-stream"], "DER"),
    "keyid-rsa": (["rsa2048"], [[*OAEP, "rsa_oaep_md:sha512"]], ["-aes-256-gcm", "-keyid"], "DER"),
    "keyid-ec": (["ec-p256"], [[]], ["-aes-128-gcm", "-keyid"], "DER"),
    "multi-ec-then-rsa": (["ec-p384", "rsa2048"], [[], [*OAEP, "rsa_oaep_md:sha256"]],
                          ["-aes-256-gcm"], "DER"),
    "pem": (["rsa2048"], [[*OAEP, "rsa_oaep_md:sha256"]], ["-aes-256-gcm"], "PEM"),
    "smime": (["ec-p256"], [[]], ["-aes-256-cbc"], "SMIME"),
}


@pytest.fixture(scope="module")
def certs(shared_keys: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("token-certs")
    out = {}
    for name, key in shared_keys.keys.items():
        if key.certificate is None:
            key.certificate = self_signed(key, f"interop {name}", 30)
        path = d / f"{name}.pem"
        path.write_bytes(key.certificate.public_bytes(serialization.Encoding.PEM))
        out[name] = path
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_openssl_envelope_opens_on_token(case: str, shared_keys: Any, certs: dict[str, Path],
                                         tmp_path: Path) -> None:
    names, keyopts, extra, outform = CASES[case]
    plain = tmp_path / "bid.bin"
    plain.write_bytes(b"offre " * 5000)
    env = tmp_path / "bid.p7m"
    recips: list[str] = []
    for name, opts in zip(names, keyopts, strict=True):
        recips += ["-recip", str(certs[name]), *opts]
    subprocess.run(["openssl", "cms", "-encrypt", "-binary", "-in", plain, "-out", env,
                    "-outform", outform, *extra, *recips], check=True, capture_output=True)
    identities = [shared_keys.keys[n] for n in sorted(shared_keys.keys)]
    result = open_envelope(env, tmp_path / "bid.out", identities)
    assert (tmp_path / "bid.out").read_bytes() == plain.read_bytes()
    assert result.identity_label.startswith("key-")


def test_tokenkeys_seal_default_opens_on_token(shared_keys: Any, certs: dict[str, Path],
                                               tmp_path: Path) -> None:
    from cryptography import x509

    plain = tmp_path / "p"
    plain.write_bytes(b"x" * 100_000)
    recipients = [x509.load_pem_x509_certificate(certs[n].read_bytes())
                  for n in ("rsa3072", "ec-p384")]
    seal(plain, tmp_path / "e", recipients, SealOptions())
    for name in ("rsa3072", "ec-p384"):
        out = tmp_path / f"out-{name}"
        result = open_envelope(tmp_path / "e", out, [shared_keys.keys[name]])
        assert out.read_bytes() == plain.read_bytes()
        assert result.content_cipher == "aes-256-gcm"
    with pytest.raises(NoMatchingRecipient):
        open_envelope(tmp_path / "e", tmp_path / "none", [shared_keys.keys["ec-p256"]])
    assert not (tmp_path / "none").exists()
