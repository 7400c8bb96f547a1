"""services.keys against a real registry and a software keystore: what the registry and the
token hold after a refusal half-way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.share_support import PIN, soft_store
from tokenkeys.drivers.software import SoftwareToken
from tokenkeys.errors import PolicyRefused
from tokenkeys.registry import Registry
from tokenkeys.services import keys
from tokenkeys.types import Secret, given_pin


def _open(uri: str) -> SoftwareToken:
    token = SoftwareToken(Path(uri.removeprefix("soft:")).resolve())
    token.login(given_pin(Secret(PIN)))
    return token


def test_delete_marks_no_row_when_a_later_row_is_refused(tmp_path: Path) -> None:
    token = _open(soft_store(tmp_path / "store", ("K", "ec-p256", False)))
    key = token.find_key(label="K")
    with Registry.open(str(tmp_path / "reg.sqlite")) as reg:
        reg.create_service("other")
        for service in ("default", "other"):
            reg.add_key(service, keys.facts_for(token, key), "adopt")
        listed = reg.keys_by_fingerprint

        def racing(fp: str) -> Any:
            # Another officer binds a consultation to the second row between the listing
            # and the marking: the guard inside the marking transaction refuses.
            rows = listed(fp)
            reg.create_consultation("other", "AO-9", "K", title=None, closes_at=None,
                                    check=lambda *_: None, details={})
            return rows

        reg.keys_by_fingerprint = racing  # type: ignore[method-assign]
        with pytest.raises(PolicyRefused, match="AO-9"):
            keys.delete(reg, "default", token, key)
        assert [r.deleted_at for r in reg.keys(include_deleted=True)] == [None, None]
        assert reg.audit_rows(event="delete") == []
    assert token.find_key(label="K").label == "K"
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
        reg.unmark_deleted(marked, "test")
        assert len(reg.keys("default")) == 2


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
