"""key import-cert on a device that keeps one certificate per key (the OpenPGP card's
quirk, on a real SoftHSM2 token): the chain goes beside the key, and an unwritable place
for it is found before the device changes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import SoftHSM
from tokenkeys.config import Config
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.errors import UsageError
from tokenkeys.services import key_certs, token_keys
from tokenkeys.types import Algorithm, PinSource
from tokenkeys.uri import parse_pkcs11


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issued(public: Any) -> tuple[x509.Certificate, x509.Certificate]:
    """A software CA and the certificate it issues for `public`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC) - timedelta(minutes=1)
    base = x509.CertificateBuilder().not_valid_before(now).not_valid_after(
        now + timedelta(days=30)).issuer_name(_name("CA"))
    ca = (base.subject_name(_name("CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (base.subject_name(_name("K")).public_key(public)
            .serial_number(x509.random_serial_number()).sign(ca_key, hashes.SHA256()))
    return ca, leaf


@pytest.fixture
def one_cert_token(softhsm: SoftHSM, token_label: str) -> Any:
    pin_file = softhsm.dir / "user-pin-certs"
    pin_file.write_text(softhsm.pin, encoding="utf-8")
    token = P11Token.open(parse_pkcs11(softhsm.uri(token_label)), Config())
    token.login(PinSource(file=pin_file, interactive=False))
    token.profile = dataclasses.replace(token.profile, can_store_chain=False)
    yield token
    token.close()


def test_chain_place_checked_before_the_device_changes(one_cert_token: Any,
                                                       tmp_path: Path) -> None:
    token = one_cert_token
    token_keys.generate_key(token, "K", algorithm=Algorithm.EC_P256, days=30)
    key = token.find_key(label="K")
    before = key.certificate
    ca, leaf = _issued(key.public_key)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")

    with pytest.raises(UsageError, match=r"cannot keep the certificate chain in .*: "
                       r"nothing was changed"):
        key_certs.import_certificate(token, key, leaf, [ca], blocker / "chains")
    assert token.find_key(label="K").certificate == before

    done = key_certs.import_certificate(token, key, leaf, [ca], tmp_path / "chains")
    assert done.chain_kept.startswith("beside the key") and done.replaced
    assert token.find_key(label="K").certificate == leaf
    assert len(list((tmp_path / "chains").glob("*.pem"))) == 1
