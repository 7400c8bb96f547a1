"""A consultation's binding holds against SQL written beside tokenkeys, on both backends:
the database refuses, the pins refuse what it cannot, and `audit verify` names what a
superuser changed with the triggers off."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.cli.conftest import TK
from tests.registry.conftest import RawSql, soft_facts
from tokenkeys.registry import Registry


def _setup(location: str) -> dict[str, int]:
    with Registry.open(location) as reg:
        ids = {name: reg.add_key("default", soft_facts(name, backup=backup), "generate").id
               for name, backup in (("K", False), ("B", True), ("ATTACKER", False))}
        reg.create_consultation("default", "AO-1", "K", title=None, closes_at=None,
                                check=lambda *_: None, details={})
    return ids


def _pg(location: str) -> bool:
    return location.startswith("postgresql")


def test_database_refuses_insert_update_delete_of_recorded_backups(
        registry_location: str, raw_sql: RawSql) -> None:
    ids = _setup(registry_location)
    pin = raw_sql(f"SELECT public_key_sha256 FROM keys WHERE id = {ids['ATTACKER']}")[0][0]
    for statement in (
        "INSERT INTO consultation_backups (consultation_id, key_id, public_key_sha256) "
        f"VALUES (1, {ids['ATTACKER']}, '{pin}')",
        f"UPDATE consultation_backups SET key_id = {ids['ATTACKER']}",
        "DELETE FROM consultation_backups",
        "UPDATE consultations SET key_public_key_sha256 = "
        f"'{pin}' WHERE reference = 'AO-1'",
        "UPDATE consultations SET backup_count = 2 WHERE reference = 'AO-1'",
        f"UPDATE keys SET public_key_sha256 = '{pin}' WHERE designation = 'K'",
    ):
        with pytest.raises(Exception, match=r"never changed|keeps its key pair"):
            raw_sql(statement)
    assert raw_sql("SELECT count(*) FROM consultation_backups")[0][0] in (1, "1")


def test_schema_matches_the_metadata(registry_location: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tokenkeys.registry.schema import metadata

    with Registry.open(registry_location) as reg:
        reg.services()  # migrates
        with reg.db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_superuser_added_backup_is_named_by_audit_verify(
        rtk: TK, registry_location: str, raw_sql: RawSql, tmp_path: Path) -> None:
    ids = _setup(registry_location)
    assert rtk("audit", "verify").code == 0
    pin = raw_sql(f"SELECT public_key_sha256 FROM keys WHERE id = {ids['ATTACKER']}")[0][0]
    insert = ("INSERT INTO consultation_backups (consultation_id, key_id, public_key_sha256) "
              f"VALUES (1, {ids['ATTACKER']}, '{pin}')")
    if _pg(registry_location):  # the cluster's superuser switches every trigger off
        raw_sql(f"SET session_replication_role = replica; {insert}")
    else:  # SQLite has no switch: its owner drops the trigger
        raw_sql("DROP TRIGGER consultation_backups_closed", insert)
    verdict = rtk("audit", "verify")
    assert verdict.code == 14 and "consultation 'AO-1'" in verdict.err, verdict.err
    refused = rtk("consultation", "recipients", "AO-1", "-o", tmp_path / "r.pem")
    assert refused.code == 9 and "cannot be used" in refused.err, refused.err
    assert not (tmp_path / "r.pem").exists()
    doctor = rtk("doctor")
    assert doctor.code == 15 and "consultation 'AO-1'" in doctor.out + doctor.err


def test_replaced_certificate_is_refused_everywhere(
        rtk: TK, registry_location: str, raw_sql: RawSql, tmp_path: Path) -> None:
    _setup(registry_location)
    other = soft_facts("K").certificate  # another key pair, same name
    der = other.public_bytes(serialization.Encoding.DER).hex()
    blob = f"'\\x{der}'::bytea" if _pg(registry_location) else f"X'{der}'"
    raw_sql(f"UPDATE keys SET cert_der = {blob} WHERE designation = 'K'")
    bundle = rtk("consultation", "recipients", "AO-1", "-o", tmp_path / "r.pem")
    assert bundle.code == 9 and "pinned at creation" in bundle.err, bundle.err
    assert not (tmp_path / "r.pem").exists()
    bid = tmp_path / "bid.txt"
    bid.write_bytes(b"offre")
    sealed = rtk("seal", bid, "-o", tmp_path / "bid.p7m", "--consultation", "AO-1")
    assert sealed.code == 9 and "pinned at creation" in sealed.err, sealed.err
    assert not (tmp_path / "bid.p7m").exists()
    verdict = rtk("audit", "verify")
    assert verdict.code == 14 and "consultation 'AO-1'" in verdict.err, verdict.err


def test_consultation_without_creation_row_is_refused(
        rtk: TK, registry_location: str, raw_sql: RawSql, tmp_path: Path) -> None:
    ids = _setup(registry_location)
    pin = raw_sql(f"SELECT public_key_sha256 FROM keys WHERE id = {ids['ATTACKER']}")[0][0]
    raw_sql("INSERT INTO consultations (service_id, reference, status, key_id, created_at, "
            "created_by, key_public_key_sha256, backup_count) VALUES "
            f"(1, 'AO-FAKE', 'open', {ids['ATTACKER']}, '2026-01-01T00:00:00Z', 'x', "
            f"'{pin}', 0)")
    bid = tmp_path / "bid.txt"
    bid.write_bytes(b"offre")
    sealed = rtk("seal", bid, "-o", tmp_path / "bid.p7m", "--consultation", "AO-FAKE")
    assert sealed.code == 9 and "no creation row" in sealed.err, sealed.err
    assert not (tmp_path / "bid.p7m").exists()
    shown = rtk("consultation", "show", "AO-FAKE")
    assert shown.code == 0 and "no creation row" in shown.err
