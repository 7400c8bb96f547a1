"""tokenkeys seal -> openssl cms -decrypt and -> tokenkeys open_envelope."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tokenkeys.envelope import SealOptions, open_envelope, seal
from tokenkeys.errors import MechanismUnsupported, OutputExists, UsageError

from .conftest import KeyPair, leftovers, needs_openssl, openssl

SEAL_CASES: dict[str, tuple[list[str], SealOptions]] = {
    "default-rsa": (["rsa"], SealOptions()),
    "default-ec256": (["p256"], SealOptions()),
    "default-ec384": (["p384"], SealOptions()),
    "cbc": (["rsa"], SealOptions(authenticated=False)),
    "cbc-128-ec": (["p256"], SealOptions(authenticated=False, key_bits=128)),
    "v15": (["rsa"], SealOptions(key_transport="pkcs1v15")),
    "v15-cbc": (["rsa"], SealOptions(authenticated=False, key_transport="pkcs1v15")),
    "oaep-sha1": (["rsa"], SealOptions(key_transport="oaep-sha1", key_bits=192)),
    "oaep-sha384": (["rsa"], SealOptions(key_transport="oaep-sha384", key_bits=128)),
    "oaep-sha512": (["rsa"], SealOptions(key_transport="oaep-sha512")),
    "ski": (["rsa", "p384"], SealOptions(use_ski=True)),
    "multi": (["rsa2", "p256", "p384", "rsa"], SealOptions()),
    "pem": (["rsa", "p256"], SealOptions(pem=True)),
    "pem-cbc-ski": (["p384", "rsa"], SealOptions(pem=True, authenticated=False, use_ski=True)),
}


@pytest.mark.parametrize("case", sorted(SEAL_CASES))
def test_seal_roundtrip(keys: dict[str, KeyPair], tmp_path: Path, case: str) -> None:
    names, opts = SEAL_CASES[case]
    plaintext = os.urandom(70_000)
    src = tmp_path / "plain.bin"
    src.write_bytes(plaintext)
    env = tmp_path / "env.cms"
    assert seal(src, env, [keys[n].cert for n in names], opts) == len(plaintext)
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    for n in names:
        out = tmp_path / f"out-{n}"
        result = open_envelope(env, out, [keys[n].identity()])
        assert out.read_bytes() == plaintext
        mode = "gcm" if opts.authenticated else "cbc"
        assert result.content_cipher == f"aes-{opts.key_bits}-{mode}"
    assert leftovers(tmp_path, {src.name, env.name} | {f"out-{n}" for n in names}) == []


@needs_openssl
@pytest.mark.openssl
@pytest.mark.parametrize("case", sorted(SEAL_CASES))
def test_seal_opened_by_openssl(keys: dict[str, KeyPair], tmp_path: Path, case: str) -> None:
    names, opts = SEAL_CASES[case]
    plaintext = os.urandom(50_001)
    env = tmp_path / "env.cms"
    seal(io.BytesIO(plaintext), env, [keys[n].cert for n in names], opts)
    for n in names:
        out = openssl("cms", "-decrypt", "-binary", "-inform", "PEM" if opts.pem else "DER",
                      "-in", env, "-inkey", keys[n].key_pem, "-recip", keys[n].cert_pem)
        assert out == plaintext, n


def test_seal_empty_and_block_sizes(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    for size in (0, 1, 15, 16, 17, (1 << 20) - 1, 1 << 20, (1 << 20) + 1):
        for auth in (True, False):
            plaintext = os.urandom(size)
            env = tmp_path / f"e{size}{auth}"
            seal(io.BytesIO(plaintext), env, [keys["rsa"].cert], SealOptions(authenticated=auth))
            out = tmp_path / f"o{size}{auth}"
            assert open_envelope(env, out, [keys["rsa"].identity()]).bytes_out == size
            assert out.read_bytes() == plaintext


def test_seal_refuses_existing_output(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    env = tmp_path / "env.cms"
    env.write_bytes(b"keep me")
    with pytest.raises(OutputExists):
        seal(io.BytesIO(b"x"), env, [keys["rsa"].cert])
    assert env.read_bytes() == b"keep me"
    seal(io.BytesIO(b"x"), env, [keys["rsa"].cert], overwrite=True)
    assert env.read_bytes() != b"keep me"
    assert leftovers(tmp_path, {"env.cms"}) == []


def test_seal_bad_options(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        seal(io.BytesIO(b"x"), tmp_path / "a", [keys["rsa"].cert], SealOptions(key_bits=64))
    with pytest.raises(UsageError):
        seal(io.BytesIO(b"x"), tmp_path / "a", [keys["rsa"].cert],
             SealOptions(key_transport="oaep-md5"))
    with pytest.raises(UsageError):
        seal(io.BytesIO(b"x"), tmp_path / "a", [])
    with pytest.raises(UsageError):
        seal(tmp_path / "missing", tmp_path / "a", [keys["rsa"].cert])
    assert leftovers(tmp_path, set()) == []


def test_seal_unsupported_key(tmp_path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, None))
    with pytest.raises(MechanismUnsupported) as caught:
        seal(io.BytesIO(b"x"), tmp_path / "a", [cert])
    # Sealing involves no device: the message must not blame one, nor name a Python class.
    assert "by this device" not in str(caught.value) and "PublicKey" not in str(caught.value)
    assert "Ed25519" in str(caught.value)
    assert leftovers(tmp_path, set()) == []
