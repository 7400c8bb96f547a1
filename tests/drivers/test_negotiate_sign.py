"""Signing negotiation (drivers/negotiate_sign.py): the plan for each device, and on a
fake port (a test double of the PKCS#11 binding) that the DigestInfo path is taken
only when the device lacks the hash-and-sign mechanism. The real device without it,
opencryptoki, is in tests/devices/test_opencryptoki_cli.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from tests.drivers.fakeport import MECHANISMS, FakeDevice, FakePort
from tokenkeys.drivers.negotiate_sign import sign_plan, signing_path
from tokenkeys.drivers.p11 import ck
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.errors import MechanismUnsupported
from tokenkeys.services import token_keys
from tokenkeys.types import Algorithm, KeyType, Secret, given_pin

OPENCRYPTOKI_LIKE = MECHANISMS - {"SHA256_RSA_PKCS"}  # RSA_PKCS stays


def test_plan_prefers_hash_and_sign() -> None:
    plan = sign_plan(KeyType.RSA, "sha256", frozenset({"SHA256_RSA_PKCS", "RSA_PKCS"}))
    assert (plan.mechanism, plan.prehash) == ("SHA256_RSA_PKCS", False)
    plan = sign_plan(KeyType.EC, "sha384", frozenset({"ECDSA_SHA384", "ECDSA"}))
    assert (plan.mechanism, plan.prehash) == ("ECDSA_SHA384", False)


def test_plan_falls_back_to_software_hash() -> None:
    plan = sign_plan(KeyType.RSA, "sha256", frozenset({"RSA_PKCS", "SHA1_RSA_PKCS"}))
    assert (plan.mechanism, plan.prehash) == ("RSA_PKCS", True)
    assert plan.path == "software sha256 + DigestInfo, device RSA_PKCS"
    payload = plan.payload(b"data", hashes.SHA256())
    # RFC 8017 9.2 note 1: the SHA-256 DigestInfo prefix, NULL parameters included.
    assert payload.hex().startswith("3031300d060960864801650304020105000420")
    plan = sign_plan(KeyType.EC, "sha256", frozenset({"ECDSA"}))
    assert plan.payload(b"data", hashes.SHA256()) == bytes.fromhex(
        "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7")


def test_a_listed_mechanism_that_lies_is_avoided() -> None:
    mechs = frozenset({"SHA256_RSA_PKCS", "RSA_PKCS"})
    assert sign_plan(KeyType.RSA, "sha256", mechs, frozenset({"SHA256_RSA_PKCS"})).prehash


def test_no_way_to_sign() -> None:
    with pytest.raises(MechanismUnsupported, match="CKM_SHA256_RSA_PKCS or CKM_RSA_PKCS"):
        sign_plan(KeyType.RSA, "sha256", frozenset({"RSA_PKCS_OAEP", "RSA_X_509"}))
    assert signing_path(KeyType.EC, frozenset({"ECDH1_DERIVE"})) is None


@pytest.mark.parametrize("mechanisms, expected", [
    (MECHANISMS, [ck.CKM_SHA256_RSA_PKCS]),
    (OPENCRYPTOKI_LIKE, [ck.CKM_RSA_PKCS]),
])
def test_fake_device_signs_the_way_it_offers(mechanisms: frozenset[str], expected: list[int],
                                             tmp_path: Path) -> None:
    """The same generation on a device with and without CKM_SHA256_RSA_PKCS: the
    certificate verifies (openssl verify checks the self-signature too) either way,
    and the device saw DigestInfo through CKM_RSA_PKCS only when it lacked the other."""
    device = FakeDevice(mechanisms=mechanisms)
    port = FakePort(device)
    with P11Token(port, port.token(0)) as token:
        token.login(given_pin(Secret("123456")))
        record = token_keys.generate_key(token, "k", algorithm=Algorithm.RSA2048, days=30)
        key = token.find_key(label="k")
        assert record.status != token_keys.AWAITING and key.certificate is not None
        assert device.signed_with == expected
        data = b"a CSR, a CA signature"
        key.public_key.verify(key.sign(data, hashes.SHA384()), data, padding.PKCS1v15(),
                              hashes.SHA384())
        pem = tmp_path / "k.pem"
        pem.write_bytes(key.certificate.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(["openssl", "verify", "-check_ss_sig", "-CAfile", pem, pem],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_fake_ec_device_hashes_on_the_device_when_it_can() -> None:
    device = FakeDevice(mechanisms=MECHANISMS | {"ECDSA_SHA256"})
    port = FakePort(device)
    with P11Token(port, port.token(0)) as token:
        token.login(given_pin(Secret("123456")))
        token_keys.generate_key(token, "e", algorithm=Algorithm.EC_P256, days=30)
        key = token.find_key(label="e")
        assert device.signed_with == [ck.CKM_ECDSA_SHA256]
        assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
        key.public_key.verify(key.sign(b"x", hashes.SHA384()), b"x", ec.ECDSA(hashes.SHA384()))
        assert device.signed_with[-1] == ck.CKM_ECDSA  # no ECDSA_SHA384: software hash
