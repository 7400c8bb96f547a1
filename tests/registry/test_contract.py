"""The repository contract, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.registry.conftest import RawSql, soft_facts
from tokenkeys.errors import (
    ConsultationNotFound,
    KeyExists,
    PolicyRefused,
    ServiceNotFound,
    UsageError,
)
from tokenkeys.registry import EVENTS, Registry, fingerprint
from tokenkeys.registry.db import SCHEMA_HEAD, schema_head
from tokenkeys.services import consultations


def no_check(*_: Any) -> None:
    pass


@pytest.fixture
def reg(registry_location: str) -> Any:
    with Registry.open(registry_location) as registry:
        yield registry


def bind(reg: Registry, ref: str, key: str, service: str = "default") -> Any:
    return reg.create_consultation(service, ref, key, title=None, closes_at=None,
                                   check=no_check, details={})


def test_schema_head_constant_matches_migrations() -> None:
    assert schema_head() == SCHEMA_HEAD


def test_event_choices_match() -> None:
    from tokenkeys.cli.registry_cmds import EVENT_CHOICES

    assert set(EVENT_CHOICES) == EVENTS


def test_keys_consultations_backups_and_lookups(reg: Registry) -> None:
    k1 = reg.add_key("default", soft_facts("K1"), "generate")
    b1 = reg.add_key("default", soft_facts("B1", backup=True), "generate")
    expired = soft_facts("B0", backup=True, days=1, start=soft_facts("x").certificate
                         .not_valid_before_utc.replace(year=2020))
    reg.add_key("default", expired, "adopt")
    with pytest.raises(KeyExists):
        reg.add_key("default", soft_facts("K1"), "generate")
    assert [b.designation for b in reg.backups_in_force("default")] == ["B1"]
    c = bind(reg, "AO-1", "K1")
    assert c.key.id == k1.id and [b.id for b in c.backups] == [b1.id]
    with pytest.raises(PolicyRefused, match="a binding is never changed"):
        bind(reg, "AO-1", "B1")
    assert reg.key("default", "K1").open_consultations == ("AO-1",)
    assert reg.key("default", "B1").open_consultations == ("AO-1",)
    [found] = reg.keys_by_fingerprint(fingerprint(k1.certificate))
    assert found.designation == "K1" and found.service == "default"
    assert reg.keys_by_fingerprint("00" * 32) == []
    reg.close_consultation("default", "AO-1")
    with pytest.raises(PolicyRefused, match="already closed"):
        reg.close_consultation("default", "AO-1")
    assert reg.key("default", "K1").open_consultations == ()
    with pytest.raises(ConsultationNotFound):
        reg.consultation("default", "AO-9")
    with pytest.raises(ServiceNotFound):
        reg.consultations("nope")
    reg.create_service("travaux")
    with pytest.raises(UsageError, match="already exists"):
        reg.create_service("travaux")
    assert [s.name for s in reg.services()] == ["default", "travaux"]
    assert reg.verify_audit().ok


def test_renewed_backup_replaces_old_for_new_consultations(reg: Registry) -> None:
    reg.add_key("default", soft_facts("K"), "generate")
    old = reg.add_key("default", soft_facts("B", backup=True), "generate")
    first = bind(reg, "AO-1", "K")
    facts = soft_facts("B-2", backup=True)
    reg.add_key("default", type(facts)(**{**facts.__dict__, "replaces_id": old.id}), "renew")
    second = bind(reg, "AO-2", "K")
    assert [b.designation for b in first.backups] == ["B"]
    assert [b.designation for b in reg.consultation("default", "AO-1").backups] == ["B"]
    assert [b.designation for b in second.backups] == ["B-2"]


def test_database_refuses_changing_a_binding(reg: Registry, raw_sql: RawSql) -> None:
    k1 = reg.add_key("default", soft_facts("K1"), "generate")
    k2 = reg.add_key("default", soft_facts("K2"), "generate")
    b = reg.add_key("default", soft_facts("B", backup=True), "generate")
    bind(reg, "AO-1", "K1")
    for statement in (
        f"UPDATE consultations SET key_id = {k2.id} WHERE reference = 'AO-1'",
        "UPDATE consultations SET reference = 'AO-X' WHERE reference = 'AO-1'",
        f"UPDATE consultation_backups SET key_id = {k2.id} WHERE key_id = {b.id}",
        "DELETE FROM consultation_backups",
        "DELETE FROM consultations",
        f"DELETE FROM keys WHERE id = {k1.id}",
    ):
        with pytest.raises(Exception, match="never"):
            raw_sql(statement)
    c = reg.consultation("default", "AO-1")
    assert c.key.id == k1.id and [x.id for x in c.backups] == [b.id]
    # Closing is still allowed: only the binding is fixed.
    raw_sql("UPDATE consultations SET title = 'ok' WHERE reference = 'AO-1'")
    with pytest.raises(Exception, match="append-only"):
        raw_sql("UPDATE audit SET actor = 'mallory'")


def test_record_event_refuses_secret_looking_details(reg: Registry) -> None:
    with pytest.raises(ValueError, match="may not carry"):
        reg.record_event("share-export", subject="K", details={"passphrase": "x"})
    with pytest.raises(ValueError, match="unknown audit event"):
        reg.record_event("coffee")
    row = reg.record_event("share-export", service="default", subject="K",
                           details={"fingerprint": "ab", "file": "k.p12"})
    assert row.seq == 1 and reg.verify_audit().ok


def test_consultation_rules_on_expiry(reg: Registry) -> None:
    reg.add_key("default", soft_facts("SHORT", days=5), "generate")
    reg.add_key("default", soft_facts("B", backup=True), "generate")
    with pytest.raises(PolicyRefused, match="before the closing date"):
        consultations.create(reg, "default", "AO", "SHORT", closes="2099-01-01", title=None,
                             no_backup=False)
    with pytest.raises(UsageError, match="already past"):
        consultations.create(reg, "default", "AO", "SHORT", closes="2001-01-01", title=None,
                             no_backup=False)
    with pytest.raises(UsageError, match="--closes must be"):
        consultations.create(reg, "default", "AO", "SHORT", closes="soon", title=None,
                             no_backup=False)
    assert reg.consultations("default") == []


def test_public_access_helpers(registry_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenkeys.config import load_config
    from tokenkeys.services.access import keys_for_certificate, record_event

    monkeypatch.setenv("TOKENKEYS_REGISTRY", registry_location)
    config = load_config()
    facts = soft_facts("PARTAGEE")
    with Registry.open(registry_location) as reg:
        reg.add_key("default", facts, "share-import")
    [row] = keys_for_certificate(config, facts.certificate)
    assert row.designation == "PARTAGEE"
    audit = record_event(config, "share-export", service="default", subject="PARTAGEE",
                         details={"fingerprint": row.fingerprint})
    assert audit.seq == 2 and audit.event == "share-export"
