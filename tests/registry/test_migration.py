"""Migration 0002 carries a registry of the first version over, on both backends."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

from tests.registry.conftest import soft_facts
from tokenkeys import keyalg
from tokenkeys.registry import Registry
from tokenkeys.registry import audit as audit_log
from tokenkeys.registry.db import Database, _alembic_config, _run_on
from tokenkeys.registry.location import parse_location
from tokenkeys.services import consultations

T0 = "2026-01-01T00:00:00Z"


def _first_version(location: str) -> dict[str, Any]:
    """A registry at 0001 with two keys (one deleted copy) and a bound consultation."""
    from alembic import command

    db = Database(parse_location(location))
    facts = {name: soft_facts(name, backup=name == "B") for name in ("K", "B")}
    with db.engine.connect() as conn:
        _run_on(conn, lambda c: command.upgrade(_alembic_config(c), "0001"), True)

        def fill(c: sa.Connection) -> None:
            c.execute(sa.text("INSERT INTO services (name, created_at, created_by) "
                              "VALUES ('default', :t, 'x')"), {"t": T0})
            for i, (name, f) in enumerate(facts.items(), start=1):
                assert f.certificate is not None
                c.execute(sa.text(
                    "INSERT INTO keys (id, service_id, designation, cn, token_uri, ckaid, "
                    "cert_der, fingerprint, issuer, not_before, not_after, algorithm, backup, "
                    "shareable, envelope_kinds, created_at, created_by) VALUES (:i, 1, :d, :d, "
                    "'pkcs11:token=p;serial=1', :ck, :c, :f, 'x', :t, '2099-01-01T00:00:00Z', "
                    "'ec-p256', :b, false, 'ecdh', :t, 'x')"),
                    {"i": i, "d": name, "ck": f"0{i}", "t": T0, "b": name == "B",
                     "c": f.certificate.public_bytes(serialization.Encoding.DER),
                     "f": f.row()["fingerprint"]})
            c.execute(sa.text("INSERT INTO consultations (service_id, reference, status, key_id, "
                              "created_at, created_by) VALUES (1, 'AO-1', 'open', 1, :t, 'x')"),
                      {"t": T0})
            c.execute(sa.text("INSERT INTO consultation_backups VALUES (1, 2)"))
            audit_log.append(c, "consultation-create", service="default", subject="AO-1",
                             details={"key": "K"})
        _run_on(conn, fill, True)
    db.close()
    return facts


def test_0001_rows_are_carried_over(registry_location: str) -> None:
    facts = _first_version(registry_location)
    with Registry.open(registry_location) as reg:
        before, after = reg.db.migrate()
        assert (before, after) == ("0001", "0002")
        k = reg.key("default", "K")
        assert k.public_key_sha256 == keyalg.public_key_sha256(facts["K"].public_key)
        assert [(loc.token_uri, loc.ckaid) for loc in k.locations] == [
            ("pkcs11:token=p;serial=1", "01")]
        found = consultations.load_for_use(reg, "default", "AO-1")
        assert found.key_pin == k.public_key_sha256 and found.backup_count == 1
        assert [b.designation for b in found.backups] == ["B"]
        assert reg.verify_audit().ok
        assert [r.event for r in reg.audit_rows()] == ["consultation-create",
                                                        "consultation-pin"]
        with reg.db.engine.connect() as conn:
            from alembic.autogenerate import compare_metadata
            from alembic.migration import MigrationContext

            from tokenkeys.registry.schema import metadata

            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
