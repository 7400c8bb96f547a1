"""Key locations, public-key identity, pinned consultations, closed backup lists.

- A key row is a key pair: it gains `public_key_sha256` (SHA-256 of the
  SubjectPublicKeyInfo, never changed); its certificate columns may be empty (a
  key awaiting its certificate); where it lives moves to `key_locations`.
- A consultation pins its bound key's public key and its number of backup
  keys; each recorded backup pins its public key. The database refuses to change
  a pin and to insert a backup once the recorded number is reached.
- Existing consultations get their pins from today's certificates, and one
  `consultation-pin` audit row each, which `audit verify` checks them against.

Revision ID: 0002
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from alembic import op
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tokenkeys.registry import audit as audit_log

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

T = sa.String(32)
NEVER = "a consultation binding is never changed"
KEY_FIXED = "a key row keeps its key pair, service and designation"
LOCATION_FIXED = "a key location is never changed or removed"

SQLITE_DROP = [
    "DROP TRIGGER consultation_binding_fixed",
    "DROP TRIGGER consultation_never_removed",
    "DROP TRIGGER consultation_backups_fixed",
    "DROP TRIGGER consultation_backups_kept",
    "DROP TRIGGER keys_never_removed",
]
PG_DROP = [
    "DROP TRIGGER consultation_binding_fixed ON consultations",
    "DROP TRIGGER consultation_backups_fixed ON consultation_backups",
]

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER consultation_binding_fixed BEFORE UPDATE ON consultations
       WHEN NEW.key_id IS NOT OLD.key_id OR NEW.service_id IS NOT OLD.service_id
            OR NEW.reference IS NOT OLD.reference
            OR NEW.key_public_key_sha256 IS NOT OLD.key_public_key_sha256
            OR NEW.backup_count IS NOT OLD.backup_count
       BEGIN SELECT RAISE(ABORT, '{NEVER}'); END""",
    """CREATE TRIGGER consultation_pinned BEFORE INSERT ON consultations
       WHEN NEW.key_public_key_sha256 IS NOT
            (SELECT public_key_sha256 FROM keys WHERE id = NEW.key_id)
       BEGIN SELECT RAISE(ABORT, 'a consultation pins its bound key''s public key'); END""",
    f"""CREATE TRIGGER consultation_never_removed BEFORE DELETE ON consultations
       BEGIN SELECT RAISE(ABORT, '{NEVER}'); END""",
    f"""CREATE TRIGGER consultation_backups_fixed BEFORE UPDATE ON consultation_backups
       BEGIN SELECT RAISE(ABORT, '{NEVER}'); END""",
    f"""CREATE TRIGGER consultation_backups_kept BEFORE DELETE ON consultation_backups
       BEGIN SELECT RAISE(ABORT, '{NEVER}'); END""",
    f"""CREATE TRIGGER consultation_backups_closed BEFORE INSERT ON consultation_backups
       WHEN (SELECT count(*) FROM consultation_backups
             WHERE consultation_id = NEW.consultation_id)
            >= (SELECT backup_count FROM consultations WHERE id = NEW.consultation_id)
         OR NEW.public_key_sha256 IS NOT
            (SELECT public_key_sha256 FROM keys WHERE id = NEW.key_id)
       BEGIN SELECT RAISE(ABORT, '{NEVER}'); END""",
    """CREATE TRIGGER keys_never_removed BEFORE DELETE ON keys
       BEGIN SELECT RAISE(ABORT, 'registry rows are never removed'); END""",
    f"""CREATE TRIGGER keys_pair_fixed BEFORE UPDATE ON keys
       WHEN NEW.public_key_sha256 IS NOT OLD.public_key_sha256
            OR NEW.service_id IS NOT OLD.service_id OR NEW.designation IS NOT OLD.designation
       BEGIN SELECT RAISE(ABORT, '{KEY_FIXED}'); END""",
    f"""CREATE TRIGGER key_locations_fixed BEFORE UPDATE ON key_locations
       WHEN NEW.key_id IS NOT OLD.key_id OR NEW.token_uri IS NOT OLD.token_uri
            OR NEW.ckaid IS NOT OLD.ckaid
       BEGIN SELECT RAISE(ABORT, '{LOCATION_FIXED}'); END""",
    f"""CREATE TRIGGER key_locations_kept BEFORE DELETE ON key_locations
       BEGIN SELECT RAISE(ABORT, '{LOCATION_FIXED}'); END""",
]

PG_TRIGGERS = [
    f"""CREATE TRIGGER consultation_binding_fixed BEFORE UPDATE ON consultations FOR EACH ROW
       WHEN (NEW.key_id IS DISTINCT FROM OLD.key_id OR NEW.service_id IS DISTINCT FROM
             OLD.service_id OR NEW.reference IS DISTINCT FROM OLD.reference
             OR NEW.key_public_key_sha256 IS DISTINCT FROM OLD.key_public_key_sha256
             OR NEW.backup_count IS DISTINCT FROM OLD.backup_count)
       EXECUTE FUNCTION tk_refuse('{NEVER}')""",
    f"""CREATE TRIGGER consultation_backups_fixed BEFORE UPDATE OR DELETE
       ON consultation_backups FOR EACH ROW EXECUTE FUNCTION tk_refuse('{NEVER}')""",
    """CREATE FUNCTION tk_consultation_pinned() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.key_public_key_sha256 IS DISTINCT FROM
            (SELECT public_key_sha256 FROM keys WHERE id = NEW.key_id) THEN
           RAISE EXCEPTION 'a consultation pins its bound key''s public key'
             USING ERRCODE = 'integrity_constraint_violation';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER consultation_pinned BEFORE INSERT ON consultations FOR EACH ROW
       EXECUTE FUNCTION tk_consultation_pinned()""",
    f"""CREATE FUNCTION tk_backups_closed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         -- The consultation's row is locked: two inserts cannot both see room.
         PERFORM 1 FROM consultations WHERE id = NEW.consultation_id FOR UPDATE;
         IF (SELECT count(*) FROM consultation_backups
             WHERE consultation_id = NEW.consultation_id)
            >= (SELECT backup_count FROM consultations WHERE id = NEW.consultation_id)
            OR NEW.public_key_sha256 IS DISTINCT FROM
               (SELECT public_key_sha256 FROM keys WHERE id = NEW.key_id) THEN
           RAISE EXCEPTION '{NEVER}' USING ERRCODE = 'integrity_constraint_violation';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER consultation_backups_closed BEFORE INSERT ON consultation_backups
       FOR EACH ROW EXECUTE FUNCTION tk_backups_closed()""",
    f"""CREATE TRIGGER keys_pair_fixed BEFORE UPDATE ON keys FOR EACH ROW
       WHEN (NEW.public_key_sha256 IS DISTINCT FROM OLD.public_key_sha256
             OR NEW.service_id IS DISTINCT FROM OLD.service_id
             OR NEW.designation IS DISTINCT FROM OLD.designation)
       EXECUTE FUNCTION tk_refuse('{KEY_FIXED}')""",
    f"""CREATE TRIGGER key_locations_fixed BEFORE UPDATE ON key_locations FOR EACH ROW
       WHEN (NEW.key_id IS DISTINCT FROM OLD.key_id OR NEW.token_uri IS DISTINCT FROM
             OLD.token_uri OR NEW.ckaid IS DISTINCT FROM OLD.ckaid)
       EXECUTE FUNCTION tk_refuse('{LOCATION_FIXED}')""",
    f"""CREATE TRIGGER key_locations_kept BEFORE DELETE ON key_locations FOR EACH ROW
       EXECUTE FUNCTION tk_refuse('{LOCATION_FIXED}')""",
]


def _spki_sha256(cert_der: bytes) -> str:
    public = x509.load_der_x509_certificate(cert_der).public_key()
    return hashlib.sha256(public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def _pin_keys(conn: sa.Connection) -> dict[int, str]:
    pins = {}
    for key_id, cert_der in conn.execute(sa.text("SELECT id, cert_der FROM keys")):
        pins[key_id] = _spki_sha256(bytes(cert_der))
        conn.execute(sa.text("UPDATE keys SET public_key_sha256 = :p WHERE id = :i"),
                     {"p": pins[key_id], "i": key_id})
    return pins


def _pin_consultations(conn: sa.Connection, pins: dict[int, str]) -> None:
    """Pin every existing consultation, and record the pins in the audit log."""
    fingerprints: dict[int, str] = dict(
        conn.execute(sa.text("SELECT id, fingerprint FROM keys")).all())
    rows = conn.execute(sa.text(
        "SELECT c.id, c.reference, c.key_id, s.name FROM consultations c "
        "JOIN services s ON s.id = c.service_id ORDER BY c.id")).all()
    for cid, reference, key_id, service in rows:
        backups = [r[0] for r in conn.execute(sa.text(
            "SELECT key_id FROM consultation_backups WHERE consultation_id = :c "
            "ORDER BY key_id"), {"c": cid})]
        conn.execute(sa.text("UPDATE consultations SET key_public_key_sha256 = :p, "
                             "backup_count = :n WHERE id = :c"),
                     {"p": pins[key_id], "n": len(backups), "c": cid})
        for b in backups:
            conn.execute(sa.text("UPDATE consultation_backups SET public_key_sha256 = :p "
                                 "WHERE consultation_id = :c AND key_id = :k"),
                         {"p": pins[b], "c": cid, "k": b})
        audit_log.append(conn, "consultation-pin", service=service, subject=reference,
                         details={"key_public_key": pins[key_id],
                                  "backup_public_keys": sorted(pins[b] for b in backups),
                                  "key_fingerprint": fingerprints[key_id],
                                  "backups": [fingerprints[b] for b in backups],
                                  "schema": revision})


def _add_columns(table: str, *columns: sa.Column[Any]) -> None:
    for column in columns:
        op.add_column(table, column)


def upgrade() -> None:
    conn = op.get_bind()
    postgresql = conn.dialect.name == "postgresql"
    for statement in PG_DROP if postgresql else SQLITE_DROP:
        op.execute(statement)
    op.create_table(
        "key_locations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key_id", sa.Integer, sa.ForeignKey("keys.id"), nullable=False),
        sa.Column("token_uri", sa.String(1000), nullable=False),
        sa.Column("ckaid", sa.String(200), nullable=False),
        sa.Column("created_at", T, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("deleted_at", T),
    )
    op.execute("INSERT INTO key_locations (key_id, token_uri, ckaid, created_at, created_by, "
               "deleted_at) SELECT id, token_uri, ckaid, created_at, created_by, deleted_at "
               "FROM keys ORDER BY id")
    op.create_index("key_locations_live", "key_locations", ["key_id", "token_uri", "ckaid"],
                    unique=True, sqlite_where=sa.text("deleted_at IS NULL"),
                    postgresql_where=sa.text("deleted_at IS NULL"))
    op.create_index("key_locations_token", "key_locations", ["token_uri"])

    _add_columns("keys", sa.Column("public_key_sha256", sa.String(64)))
    _add_columns("consultations", sa.Column("key_public_key_sha256", sa.String(64)),
                 sa.Column("backup_count", sa.Integer))
    _add_columns("consultation_backups", sa.Column("public_key_sha256", sa.String(64)))
    pins = _pin_keys(conn)
    _pin_consultations(conn, pins)

    # SQLite rebuilds these tables (its ALTER cannot change NOT NULL); the partial
    # index is made again afterwards, as the rebuild would not carry its WHERE.
    op.drop_index("keys_live_designation", table_name="keys")
    with op.batch_alter_table("keys") as batch:
        batch.alter_column("public_key_sha256", existing_type=sa.String(64), nullable=False)
        for name, kind in (("cert_der", sa.LargeBinary()), ("fingerprint", sa.String(64)),
                           ("issuer", sa.String(1000)), ("not_before", T),
                           ("not_after", T)):
            batch.alter_column(name, existing_type=kind, nullable=True)
        batch.drop_column("token_uri")
        batch.drop_column("ckaid")
    op.create_index("keys_live_designation", "keys", ["service_id", "designation"],
                    unique=True, sqlite_where=sa.text("deleted_at IS NULL"),
                    postgresql_where=sa.text("deleted_at IS NULL"))
    op.create_index("keys_public_key", "keys", ["public_key_sha256"])
    with op.batch_alter_table("consultations") as batch:
        batch.alter_column("key_public_key_sha256", existing_type=sa.String(64),
                           nullable=False)
        batch.alter_column("backup_count", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("consultation_backups") as batch:
        batch.alter_column("public_key_sha256", existing_type=sa.String(64), nullable=False)
    op.create_index("audit_event_subject", "audit", ["event", "subject"])
    for statement in PG_TRIGGERS if postgresql else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the registry is never downgraded: restore a backup instead")

