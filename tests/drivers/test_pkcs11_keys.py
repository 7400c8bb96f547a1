"""Keys on a real SoftHSM2: generation, attributes, certificates, decrypt, sign, ECDH."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tokenkeys.config import Config
from tokenkeys.drivers.oaep import DecryptFailed
from tokenkeys.drivers.p11 import ck
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.envelope import SealOptions, open_envelope, seal
from tokenkeys.errors import EnvelopeIntegrity, KeyExists, KeyNotFound, PinMissing, UsageError
from tokenkeys.services.signing import self_signed
from tokenkeys.types import Algorithm, KeySpec, PinSource
from tokenkeys.uri import parse_pkcs11

pytestmark = pytest.mark.softhsm


@pytest.fixture
def token(softhsm: Any, token_label: str, tmp_path: Path) -> Iterator[P11Token]:
    pin = tmp_path / "pin"
    pin.write_text(softhsm.pin)
    with P11Token.open(parse_pkcs11(softhsm.uri(token_label)), Config()) as tok:
        tok.login(PinSource(file=pin, interactive=False))
        yield tok


def count_objects(tok: P11Token) -> int:
    return len(tok.session().find({}))


def pkcs11_tool(softhsm: Any, label: str, *args: str) -> str:
    if shutil.which("pkcs11-tool") is None:
        pytest.skip("pkcs11-tool not installed")
    # OpenSC 0.23 reads the PIN from the environment with env:VAR, not argv.
    env = {**os.environ, "TK_TEST_PIN": softhsm.pin}
    done = subprocess.run(
        ["pkcs11-tool", "--module", softhsm.module, "--token-label", label,
         "--pin", "env:TK_TEST_PIN", *args],
        env=env, capture_output=True, text=True, check=True,
    )
    return done.stdout


def oaep(h: hashes.HashAlgorithm) -> padding.OAEP:
    return padding.OAEP(padding.MGF1(h), h, None)


@pytest.mark.parametrize(
    "alg", [Algorithm.RSA2048, Algorithm.EC_P256, Algorithm.EC_P384, Algorithm.RSA4096]
)
def test_generate_with_certificate(
    alg: Algorithm, softhsm: Any, token_label: str, token: P11Token, tmp_path: Path
) -> None:
    key = token.generate_keypair(KeySpec("bid key", alg))
    assert key.algorithm_name == alg.value
    assert key.id == x509.SubjectKeyIdentifier.from_public_key(key.public_key).digest
    assert key.extractable is False
    assert key.uri.startswith(f"pkcs11:token={token_label};")
    assert "object=bid%20key;type=private;id=%" in key.uri
    now = datetime.now(UTC)
    cert = self_signed(key, "Mairie de Test", 30)
    token.store_certificate(key, cert)
    # Read back from the token, as another process would.
    again = token.find_key(label="bid key")
    assert again.certificate == cert and again.public_key == key.public_key
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Mairie de Test"
    assert abs(cert.not_valid_before_utc - (now - timedelta(minutes=1))) < timedelta(seconds=10)
    assert abs(cert.not_valid_after_utc - (now + timedelta(days=30))) < timedelta(seconds=10)
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if shutil.which("openssl"):
        done = subprocess.run(
            ["openssl", "verify", "-check_ss_sig", "-CAfile", str(pem), str(pem)],
            capture_output=True, text=True, check=False,
        )
        assert done.returncode == 0, done.stderr
    priv = pkcs11_tool(softhsm, token_label, "-O", "--type", "privkey")
    assert "label:      bid key" in priv
    assert "Access:     sensitive, always sensitive, never extractable, local" in priv
    listing = pkcs11_tool(softhsm, token_label, "-O")
    assert listing.count(f"ID:         {key.id.hex()}") == 3  # private, public, certificate
    assert "Certificate Object" in listing


def test_rsa_decrypt_paths(rsa_key_on_token: Any) -> None:
    key = rsa_key_on_token
    pub = key.public_key
    for pad, mechanism in [
        (oaep(hashes.SHA1()), "RSA_PKCS_OAEP"),
        (oaep(hashes.SHA256()), "RSA_X_509"),  # + software OAEP decoding
        (oaep(hashes.SHA512()), "RSA_X_509"),
        (padding.PKCS1v15(), "RSA_PKCS"),
    ]:
        key.last_decrypt = ""
        assert key.decrypt(pub.encrypt(b"content key", pad), pad) == b"content key"
        assert key.last_decrypt == mechanism  # what this very call ran on the device


def test_rsa_decrypt_failures_are_uniform(rsa_key_on_token: Any) -> None:
    key = rsa_key_on_token
    bogus = (12345).to_bytes(key.key_size // 8, "big")
    for pad in (oaep(hashes.SHA1()), oaep(hashes.SHA256())):
        with pytest.raises(DecryptFailed):
            key.decrypt(bogus, pad)
    with pytest.raises(DecryptFailed):
        key.decrypt(b"short", oaep(hashes.SHA256()))
    # SoftHSM2 answers a bad v1.5 block with CKR_GENERAL_ERROR: its profile's quirk.
    assert key._owner.profile.name == "SoftHSM2"
    good = key.public_key.encrypt(b"k" * 32, padding.PKCS1v15())
    for block in (bogus, good[:-1] + bytes([good[-1] ^ 1]), b"short"):
        with pytest.raises(DecryptFailed):
            key.decrypt(block, padding.PKCS1v15())


def test_v15_envelope_with_a_damaged_rsa_block_is_integrity(token: P11Token,
                                                            tmp_path: Path) -> None:
    key = token.generate_keypair(KeySpec("v15", Algorithm.RSA2048))
    token.store_certificate(key, self_signed(key, "Mairie de Test", 30))
    key = token.find_key(label="v15")
    assert key.certificate is not None
    good = tmp_path / "good.p7m"
    seal(io.BytesIO(b"bid" * 100), good, [key.certificate], SealOptions(key_transport="pkcs1v15"))
    data = good.read_bytes()
    ri = cms.ContentInfo.load(data)["content"]["recipient_infos"][0].chosen
    block = ri["encrypted_key"].native
    at = data.index(block) + len(block) - 1
    damaged = tmp_path / "damaged.p7m"
    damaged.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1:])
    open_envelope(good, tmp_path / "good", [key])
    assert (tmp_path / "good").read_bytes() == b"bid" * 100
    with pytest.raises(EnvelopeIntegrity, match="integrity"):
        open_envelope(damaged, tmp_path / "damaged", [key])
    assert key.last_decrypt == ""  # the device refused the block; the countermeasure hid it
    assert not (tmp_path / "damaged").exists()


def test_sign(shared_keys: Any) -> None:
    for name, key in shared_keys.keys.items():
        sig = key.sign(b"data", hashes.SHA256())
        if name.startswith("rsa"):
            key.public_key.verify(sig, b"data", padding.PKCS1v15(), hashes.SHA256())
        else:
            key.public_key.verify(sig, b"data", ec.ECDSA(hashes.SHA256()))


def test_derive_ecdh_matches_software(shared_keys: Any) -> None:
    for name in ("ec-p256", "ec-p384"):
        key = shared_keys.keys[name]
        before = count_objects(shared_keys.token)
        peer = ec.generate_private_key(key.public_key.curve)
        assert key.derive_ecdh(peer.public_key()) == peer.exchange(ec.ECDH(), key.public_key)
        assert count_objects(shared_keys.token) == before  # derived secret destroyed
        with pytest.raises(UsageError):
            key.derive_ecdh(ec.generate_private_key(ec.SECP521R1()).public_key())


def test_rsa_3072_and_list(shared_keys: Any) -> None:
    keys = {k.label: k for k in shared_keys.token.list_keys()}
    assert {"key-rsa2048", "key-rsa3072", "key-ec-p256", "key-ec-p384"} <= set(keys)
    assert isinstance(keys["key-rsa3072"].public_key, rsa.RSAPublicKey)
    assert keys["key-rsa3072"].key_size == 3072


def test_shareable_is_extractable_but_sensitive(
    softhsm: Any, token_label: str, token: P11Token
) -> None:
    key = token.generate_keypair(KeySpec("shared", Algorithm.EC_P256, shareable=True))
    assert key.extractable is True
    got = token.session().get(key.private_object, [ck.CKA_SENSITIVE, ck.CKA_EXTRACTABLE])
    assert got == {ck.CKA_SENSITIVE: True, ck.CKA_EXTRACTABLE: True}
    listing = pkcs11_tool(softhsm, token_label, "-O", "--type", "privkey")
    assert "sensitive" in listing and "never extractable" not in listing


def test_duplicate_label(token: P11Token) -> None:
    token.generate_keypair(KeySpec("dup", Algorithm.EC_P256))
    before = count_objects(token)
    with pytest.raises(KeyExists, match="dup"):
        token.generate_keypair(KeySpec("dup", Algorithm.EC_P384))
    assert count_objects(token) == before


def test_find_missing_key(token: P11Token) -> None:
    with pytest.raises(KeyNotFound, match="nothing"):
        token.find_key(label="nothing")
    with pytest.raises(KeyNotFound):
        token.find_key(key_id=b"\x01\x02")


def test_store_failure_leaves_no_orphans(token: P11Token) -> None:
    key = token.generate_keypair(KeySpec("k", Algorithm.EC_P256))
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.now(UTC)
    foreign = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(other.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(other, hashes.SHA256())
    )
    before = count_objects(token)
    with pytest.raises(UsageError):
        token.store_certificate(key, foreign)
    assert count_objects(token) == before


def test_generate_failure_half_way_destroys(token: P11Token,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import tokenkeys.drivers.p11.provision as driver

    def broken(*_: Any) -> Any:
        raise RuntimeError("simulated failure after generation")

    before = count_objects(token)
    monkeypatch.setattr(driver, "read_public_key", broken)
    with pytest.raises(RuntimeError):
        token.generate_keypair(KeySpec("half", Algorithm.EC_P256))
    assert count_objects(token) == before


def test_delete(token: P11Token) -> None:
    before = count_objects(token)
    key = token.generate_keypair(KeySpec("gone", Algorithm.EC_P256))
    token.store_certificate(key, self_signed(key, "gone", 1))
    assert count_objects(token) == before + 3
    token.delete(key)
    assert count_objects(token) == before
    with pytest.raises(KeyNotFound):
        token.find_key(label="gone")


def test_private_ops_need_login(softhsm: Any, token_label: str, tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text(softhsm.pin)
    uri = parse_pkcs11(softhsm.uri(token_label))
    with P11Token.open(uri, Config()) as tok:
        tok.login(PinSource(file=pin, interactive=False))
        tok.generate_keypair(KeySpec("k", Algorithm.EC_P256))
    # Not logged in: found through its public key; private use asks for the PIN.
    with P11Token.open(uri, Config()) as tok:
        key = tok.find_key(label="k")
        assert [k.label for k in tok.list_keys()] == ["k"]
        with pytest.raises(PinMissing):
            key.sign(b"data", hashes.SHA256())
        tok.login(PinSource(file=pin, interactive=False))
        key.sign(b"data", hashes.SHA256())  # the private key is located on first use


def test_reread_helper_gets_no_secret(shared_keys: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The OpenSC 0.23 re-read runs a child process: it must not inherit a PIN.
    from tokenkeys.drivers.p11 import provision

    for var in provision.SECRET_ENV:
        monkeypatch.setenv(var, "secret-value")
    real_run = subprocess.run
    envs: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        envs.append(kwargs.get("env"))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(provision.subprocess, "run", spy)
    key = shared_keys.keys["ec-p256"]
    public = provision.read_public_key_fresh(shared_keys.token, key.id)
    assert public.public_numbers() == key.public_key.public_numbers()
    assert len(envs) == 1 and envs[0] is not None
    assert not set(provision.SECRET_ENV) & set(envs[0])
    assert envs[0]["SOFTHSM2_CONF"] == os.environ["SOFTHSM2_CONF"]
