"""`seal` asks the registry what each RSA recipient's key opens: one registry
opening per seal, whatever the number of recipients (a real SQLite registry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.registry.conftest import soft_facts
from tokenkeys.config import Config
from tokenkeys.registry import KeyFacts, Registry
from tokenkeys.services.envelope_kinds import key_transports_for


def _rsa_cert(name: str) -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))


def test_one_registry_opening_per_seal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    location = str(tmp_path / "registry.sqlite")
    card, oaep, unknown = _rsa_cert("card"), _rsa_cert("oaep"), _rsa_cert("unknown")
    ec_cert = soft_facts("EC").certificate
    with Registry.open(location) as reg:
        reg.create_service("s")
        for name, cert, kinds in (("CARD", card, ("pkcs1v15",)),
                                  ("HSM", oaep, ("oaep-sha1", "pkcs1v15"))):
            reg.add_key("s", KeyFacts(designation=name, token_uri="soft:/nowhere",
                                      ckaid=name.encode().hex(), certificate=cert,
                                      public_key=cert.public_key(),
                                      algorithm="rsa2048", envelope_kinds=kinds), "adopt")
    opened: list[str] = []
    real_open = Registry.open.__func__  # type: ignore[attr-defined]

    def counting_open(cls: type[Registry], where: str) -> Registry:
        opened.append(where)
        return real_open(cls, where)  # type: ignore[no-any-return]

    monkeypatch.setattr(Registry, "open", classmethod(counting_open))
    config = Config(registry=location)
    assert key_transports_for(config, [card, oaep, unknown, ec_cert]) == (
        "pkcs1v15", None, None, None)
    assert len(opened) == 1
    assert key_transports_for(config, [ec_cert]) == (None,) and len(opened) == 1
    # A registry that cannot be reached knows nothing: sealing needs none.
    broken = Config(registry=str(tmp_path / "missing-dir" / "x" / "registry.sqlite"))
    (tmp_path / "missing-dir").write_text("a file, not a directory")
    assert key_transports_for(broken, [card]) == (None,)
