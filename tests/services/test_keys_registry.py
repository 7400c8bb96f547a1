"""services.keys against a real registry and a software keystore: what the registry and the
token hold after a refusal half-way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.share_support import PIN, soft_store
from tokenkeys.drivers.software import SoftwareToken
from tokenkeys.errors import KeyNotFound, PolicyRefused
from tokenkeys.registry import Registry
from tokenkeys.services import keys
from tokenkeys.types import Secret, given_pin


def _open(uri: str) -> SoftwareToken:
    token = SoftwareToken(Path(uri.removeprefix("soft:")).resolve())
    token.login(given_pin(Secret(PIN)))
    return token


def _bind(reg: Registry, service: str, ref: str, key: str) -> None:
    reg.create_consultation(service, ref, key, title=None, closes_at=None,
                            check=lambda *_: None, details={})


def test_delete_finds_bindings_by_public_key_in_every_service(tmp_path: Path) -> None:
    token = _open(soft_store(tmp_path / "store", ("K", "ec-p256", False)))
    key = token.find_key(label="K")
    with Registry.open(str(tmp_path / "reg.sqlite")) as reg:
        reg.create_service("other")
        reg.add_key("other", keys.facts_for(token, key), "adopt")
        _bind(reg, "other", "AO-9", "K")
        # The key is not recorded in `default`: the binding is found all the same.
        with pytest.raises(PolicyRefused, match="AO-9"):
            keys.delete(reg, token, key)
        assert [r.deleted_at for r in reg.keys(include_deleted=True)] == [None]
        assert reg.audit_rows(event="delete") == []
        reg.close_consultation("other", "AO-9")
        keys.delete(reg, token, key)
        [row] = reg.keys(include_deleted=True)
        assert row.deleted_at is not None and row.locations[0].deleted_at is not None
    with pytest.raises(KeyNotFound):
        token.find_key(label="K")
    token.close()


def test_delete_of_a_copy_keeps_the_original(tmp_path: Path) -> None:
    original = _open(soft_store(tmp_path / "p", ("K", "ec-p256", True)))
    copy_store = _open(soft_store(tmp_path / "q", ("X", "ec-p256", False)))
    key = original.find_key(label="K")
    with Registry.open(str(tmp_path / "reg.sqlite")) as reg:
        reg.add_key("default", keys.facts_for(original, key), "generate")
        _bind(reg, "default", "AO-1", "K")
        # The same key pair on a second token, under another designation.
        pem = key.certificate
        assert pem is not None
        copy = copy_store.import_private_key(  # type: ignore[attr-defined]
            bytearray(original.export_private_key(key)), label="K-agent", shareable=False)
        copy_store.store_certificate(copy, pem)  # type: ignore[attr-defined]
        reg.add_key("default", keys.facts_for(copy_store, copy), "share-import")
        keys.delete(reg, copy_store, copy)
        [kept] = reg.keys("default")
        assert kept.designation == "K" and kept.open_consultations == ("AO-1",)
        assert [loc.token_uri for loc in kept.locations] == [original.uri]
        # The last copy of a bound key pair is refused.
        with pytest.raises(PolicyRefused, match="last copy"):
            keys.delete(reg, original, key)
    original.close()
    copy_store.close()


def test_an_unknown_key_needs_unregistered(tmp_path: Path) -> None:
    token = _open(soft_store(tmp_path / "store", ("K", "ec-p256", False)))
    key = token.find_key(label="K")
    with Registry.open(str(tmp_path / "empty.sqlite")) as reg:
        with pytest.raises(PolicyRefused, match="--unregistered"):
            keys.delete(reg, token, key)
        assert token.find_key(label="K") is not None
        keys.delete(reg, token, key, unregistered=True)
        [row] = reg.audit_rows(event="delete")
        assert '"registered":false' in row.details
    token.close()


def test_mark_deleted_is_all_or_nothing(tmp_path: Path) -> None:
    from tests.registry.conftest import soft_facts

    def refuse_b(row: Any) -> None:
        if row.designation == "B":
            raise PolicyRefused("B is needed")

    with Registry.open(str(tmp_path / "reg.sqlite")) as reg:
        reg.add_key("default", soft_facts("A"), "generate")
        reg.add_key("default", soft_facts("B"), "generate")
        with pytest.raises(PolicyRefused):
            reg.mark_deleted([("default", "A"), ("default", "B")], refuse_b)
        assert [r.deleted_at for r in reg.keys("default")] == [None, None]
        marked = reg.mark_deleted([("default", "A"), ("default", "B")], lambda _: None)
        assert [r.designation for r in marked] == ["A", "B"]
        assert reg.keys("default") == []


def _issued_for(public: Any, cn: str) -> Any:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC) - timedelta(minutes=1)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")]))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=30))
            .sign(ca_key, hashes.SHA256()))


def test_adopt_leaves_the_token_alone_when_the_registry_refuses(tmp_path: Path) -> None:
    from tests.registry.conftest import soft_facts
    from tokenkeys.errors import KeyExists

    token = _open(soft_store(tmp_path / "store", ("K", "ec-p256", False)))
    before = token.find_key(label="K").certificate
    new_cert = _issued_for(token.find_key(label="K").public_key, "K issued")
    with Registry.open(str(tmp_path / "reg.sqlite")) as reg:
        add = reg.add_key

        def racing(*args: Any, **kwargs: Any) -> Any:
            # Another workstation records a key of the same name after our check.
            add("default", soft_facts("K"), "generate")
            return add(*args, **kwargs)

        reg.add_key = racing  # type: ignore[method-assign]
        with pytest.raises(KeyExists):
            keys.adopt(reg, "default", token, "K", cert=new_cert, self_sign_days=None,
                       backup=False)
    assert token.find_key(label="K").certificate == before
    token.close()
