"""Initial registry: services, keys, consultations and their backups, hash-chained audit.

The database itself refuses to change a consultation's bound key or its recorded
backup keys, to remove a consultation or key row, and to edit or delete audit rows.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

T = sa.String(32)

SQLITE_TRIGGERS = [
    """CREATE TRIGGER consultation_binding_fixed BEFORE UPDATE ON consultations
       WHEN NEW.key_id IS NOT OLD.key_id OR NEW.service_id IS NOT OLD.service_id
            OR NEW.reference IS NOT OLD.reference
       BEGIN SELECT RAISE(ABORT, 'a consultation binding is never changed'); END""",
    """CREATE TRIGGER consultation_never_removed BEFORE DELETE ON consultations
       BEGIN SELECT RAISE(ABORT, 'a consultation binding is never changed'); END""",
    """CREATE TRIGGER consultation_backups_fixed BEFORE UPDATE ON consultation_backups
       BEGIN SELECT RAISE(ABORT, 'a consultation binding is never changed'); END""",
    """CREATE TRIGGER consultation_backups_kept BEFORE DELETE ON consultation_backups
       BEGIN SELECT RAISE(ABORT, 'a consultation binding is never changed'); END""",
    """CREATE TRIGGER keys_never_removed BEFORE DELETE ON keys
       BEGIN SELECT RAISE(ABORT, 'registry rows are never removed'); END""",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
]

PG_TRIGGERS = [
    """CREATE FUNCTION tk_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
       END $$""",
    """CREATE TRIGGER consultation_binding_fixed BEFORE UPDATE ON consultations FOR EACH ROW
       WHEN (NEW.key_id IS DISTINCT FROM OLD.key_id OR NEW.service_id IS DISTINCT FROM
             OLD.service_id OR NEW.reference IS DISTINCT FROM OLD.reference)
       EXECUTE FUNCTION tk_refuse('a consultation binding is never changed')""",
    """CREATE TRIGGER consultation_never_removed BEFORE DELETE ON consultations FOR EACH ROW
       EXECUTE FUNCTION tk_refuse('a consultation binding is never changed')""",
    """CREATE TRIGGER consultation_backups_fixed BEFORE UPDATE OR DELETE
       ON consultation_backups FOR EACH ROW
       EXECUTE FUNCTION tk_refuse('a consultation binding is never changed')""",
    """CREATE TRIGGER keys_never_removed BEFORE DELETE ON keys FOR EACH ROW
       EXECUTE FUNCTION tk_refuse('registry rows are never removed')""",
    """CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit FOR EACH ROW
       EXECUTE FUNCTION tk_refuse('the audit log is append-only')""",
    """CREATE TRIGGER no_truncate BEFORE TRUNCATE ON audit
       FOR EACH STATEMENT EXECUTE FUNCTION tk_refuse('the audit log is append-only')""",
]


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", T, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("service_id", sa.Integer, sa.ForeignKey("services.id"), nullable=False),
        sa.Column("designation", sa.String(200), nullable=False),
        sa.Column("cn", sa.String(400)),
        sa.Column("token_uri", sa.String(1000), nullable=False),
        sa.Column("ckaid", sa.String(200), nullable=False),
        sa.Column("cert_der", sa.LargeBinary, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(1000), nullable=False),
        sa.Column("not_before", T, nullable=False),
        sa.Column("not_after", T, nullable=False),
        sa.Column("algorithm", sa.String(40), nullable=False),
        sa.Column("backup", sa.Boolean, nullable=False),
        sa.Column("shareable", sa.Boolean, nullable=False),
        sa.Column("envelope_kinds", sa.String(200), nullable=False),
        sa.Column("replaces_id", sa.Integer, sa.ForeignKey("keys.id")),
        sa.Column("created_at", T, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("deleted_at", T),
    )
    op.create_index("keys_live_designation", "keys", ["service_id", "designation"],
                    unique=True, sqlite_where=sa.text("deleted_at IS NULL"),
                    postgresql_where=sa.text("deleted_at IS NULL"))
    op.create_index("keys_fingerprint", "keys", ["fingerprint"])
    op.create_table(
        "consultations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("service_id", sa.Integer, sa.ForeignKey("services.id"), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("title", sa.String(1000)),
        sa.Column("closes_at", T),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("key_id", sa.Integer, sa.ForeignKey("keys.id"), nullable=False),
        sa.Column("created_at", T, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("closed_at", T),
        sa.UniqueConstraint("service_id", "reference", name="consultations_reference"),
        sa.CheckConstraint("status IN ('open', 'closed')", name="consultations_status"),
    )
    op.create_table(
        "consultation_backups",
        sa.Column("consultation_id", sa.Integer, sa.ForeignKey("consultations.id"),
                  primary_key=True),
        sa.Column("key_id", sa.Integer, sa.ForeignKey("keys.id"), primary_key=True),
    )
    op.create_table(
        "audit",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", T, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("service", sa.String(200)),
        sa.Column("subject", sa.String(1000)),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": "0" * 64}])
    triggers = PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else SQLITE_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the registry is never downgraded: restore a backup instead")
