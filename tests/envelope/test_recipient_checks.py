"""Sealing refuses certificates that cannot receive an envelope."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tokenkeys.envelope import (
    SealOptions,
    describe_recipients,
    named_by_issuer,
    open_envelope,
    seal,
)
from tokenkeys.errors import PolicyRefused

from .conftest import KeyPair, leftovers, needs_openssl, openssl


def _cert(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *, usage: dict[str, bool] | None,
          ski: bool = True) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recipient")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30)))
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if usage is not None:
        flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment",
                               "data_encipherment", "key_agreement", "key_cert_sign",
                               "crl_sign", "encipher_only", "decipher_only"), False)
        flags.update(usage)
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize("kind, usage", [
    ("rsa", {"digital_signature": True}),
    ("rsa", {"key_agreement": True}),
    ("ec", {"digital_signature": True}),
    ("ec", {"key_encipherment": True}),
])
def test_key_usage_that_forbids_receiving_is_refused(keys: dict[str, KeyPair], tmp_path: Path,
                                                     kind: str, usage: dict[str, bool]) -> None:
    pair = keys["rsa" if kind == "rsa" else "p256"]
    cert = _cert(pair.key, usage=usage)
    with pytest.raises(PolicyRefused, match="--allow-any-usage overrides"):
        seal(io.BytesIO(b"bid"), tmp_path / "e", [cert])
    assert leftovers(tmp_path, set()) == []
    seal(io.BytesIO(b"bid"), tmp_path / "e", [cert], SealOptions(allow_any_usage=True))
    open_envelope(tmp_path / "e", tmp_path / "out", [pair.identity()])
    assert (tmp_path / "out").read_bytes() == b"bid"


def test_key_usage_that_allows_receiving_is_accepted(keys: dict[str, KeyPair],
                                                     tmp_path: Path) -> None:
    seal(io.BytesIO(b"bid"), tmp_path / "a", [
        _cert(keys["rsa"].key, usage={"key_encipherment": True, "digital_signature": True}),
        _cert(keys["p256"].key, usage={"key_agreement": True}),
        _cert(keys["rsa2"].key, usage=None)])
    assert len(describe_recipients(tmp_path / "a")) == 3


@needs_openssl
def test_rsa_pss_certificate_is_refused(tmp_path: Path) -> None:
    openssl("req", "-x509", "-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048",
            "-keyout", tmp_path / "pss.key", "-out", tmp_path / "pss.pem", "-nodes",
            "-subj", "/CN=pss", "-days", "2")
    cert = x509.load_pem_x509_certificate((tmp_path / "pss.pem").read_bytes())
    with pytest.raises(PolicyRefused, match="RSA-PSS"):
        seal(io.BytesIO(b"bid"), tmp_path / "e", [cert])
    assert not (tmp_path / "e").exists()


@needs_openssl
def test_keyid_without_ski_falls_back_to_issuer_and_serial(keys: dict[str, KeyPair],
                                                           tmp_path: Path) -> None:
    bare = _cert(keys["rsa"].key, usage=None, ski=False)
    options = SealOptions(use_ski=True, authenticated=False)
    assert named_by_issuer([bare, keys["p256"].cert], options) == ["CN=recipient"]
    seal(io.BytesIO(b"bid"), tmp_path / "e", [bare, keys["p256"].cert], options)
    described = describe_recipients(tmp_path / "e")
    assert described[0].startswith("issuer CN=recipient,serial=")
    assert described[1].startswith("ski=")
    # Another tool finds the recipient by the certificate it has.
    (tmp_path / "bare.pem").write_bytes(bare.public_bytes(serialization.Encoding.PEM))
    out = openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", tmp_path / "e",
                  "-recip", tmp_path / "bare.pem", "-inkey", keys["rsa"].key_pem)
    assert out == b"bid"
