"""The registry schema, written once with SQLAlchemy Core for SQLite and PostgreSQL.

Times are ISO-8601 UTC strings ("2026-12-01T10:00:00Z"): they sort as text and hash
the same way in both backends. Rows are never removed; keys get `deleted_at`.
The migrations in registry/migrations create exactly these tables (a test compares
them), plus the triggers that refuse to change a consultation's binding, its pins
and its recorded backups (0001_initial, 0002_locations_pins).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()


def created() -> list[sa.Column[str]]:
    """When and by whom (the OS user) a row was made: every table of records has them."""
    return [sa.Column("created_at", sa.String(32), nullable=False),
            sa.Column("created_by", sa.String(200), nullable=False)]


def live_unique(name: str, *columns: str) -> sa.Index:
    """Unique among the rows not marked deleted: a partial index on both backends, made by
    the migrations. Here (queries, Alembic's comparison) only SQLite's condition is
    named: naming PostgreSQL's would import that dialect (about 30 ms) in every command
    that opens a SQLite registry."""
    return sa.Index(name, *columns, unique=True, sqlite_where=sa.text("deleted_at IS NULL"))


services = sa.Table(
    "services", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    *created(),
)

# A key row is one key pair (its public key) and its designation in a service. Where
# it lives is in key_locations; its current certificate is one attribute, absent while
# the key awaits one (a card key generated under its designation).
keys = sa.Table(
    "keys", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("service_id", sa.Integer, sa.ForeignKey("services.id"), nullable=False),
    sa.Column("designation", sa.String(200), nullable=False),
    sa.Column("cn", sa.String(400)),
    sa.Column("public_key_sha256", sa.String(64), nullable=False),
    sa.Column("cert_der", sa.LargeBinary),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("issuer", sa.String(1000)),
    sa.Column("not_before", sa.String(32)),
    sa.Column("not_after", sa.String(32)),
    sa.Column("algorithm", sa.String(40), nullable=False),
    sa.Column("backup", sa.Boolean, nullable=False, default=False),
    sa.Column("shareable", sa.Boolean, nullable=False, default=False),
    sa.Column("envelope_kinds", sa.String(200), nullable=False),
    sa.Column("replaces_id", sa.Integer, sa.ForeignKey("keys.id")),
    *created(),
    sa.Column("deleted_at", sa.String(32)),
    # One live key per designation and service; deleted rows stay for history.
    live_unique("keys_live_designation", "service_id", "designation"),
    sa.Index("keys_fingerprint", "fingerprint"),
    sa.Index("keys_public_key", "public_key_sha256"),
)

# Where a key pair lives: a token and the object's CKA_ID. A copy deleted from one
# token loses that location only; the key row is deleted with its last location.
key_locations = sa.Table(
    "key_locations", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key_id", sa.Integer, sa.ForeignKey("keys.id"), nullable=False),
    sa.Column("token_uri", sa.String(1000), nullable=False),
    sa.Column("ckaid", sa.String(200), nullable=False),
    *created(),
    sa.Column("deleted_at", sa.String(32)),
    live_unique("key_locations_live", "key_id", "token_uri", "ckaid"),
    sa.Index("key_locations_token", "token_uri"),
)

consultations = sa.Table(
    "consultations", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("service_id", sa.Integer, sa.ForeignKey("services.id"), nullable=False),
    sa.Column("reference", sa.String(200), nullable=False),
    sa.Column("title", sa.String(1000)),
    sa.Column("closes_at", sa.String(32)),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("key_id", sa.Integer, sa.ForeignKey("keys.id"), nullable=False),
    *created(),
    sa.Column("closed_at", sa.String(32)),
    # Pinned at creation, never changed: the bound key's public key (SHA-256 of its
    # SubjectPublicKeyInfo) and how many backup keys were recorded.
    sa.Column("key_public_key_sha256", sa.String(64), nullable=False),
    sa.Column("backup_count", sa.Integer, nullable=False),
    sa.UniqueConstraint("service_id", "reference", name="consultations_reference"),
    sa.CheckConstraint("status IN ('open', 'closed')", name="consultations_status"),
)

# The backup keys in force when the consultation was created.
consultation_backups = sa.Table(
    "consultation_backups", metadata,
    sa.Column("consultation_id", sa.Integer, sa.ForeignKey("consultations.id"),
              primary_key=True),
    sa.Column("key_id", sa.Integer, sa.ForeignKey("keys.id"), primary_key=True),
    sa.Column("public_key_sha256", sa.String(64), nullable=False),  # pinned at creation
)

audit = sa.Table(
    "audit", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("service", sa.String(200)),
    sa.Column("subject", sa.String(1000)),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # A consultation's creation row is looked up at every use.
    sa.Index("audit_event_subject", "event", "subject"),
)

# One row: the last seq and hash. Appends lock it, so they are serialised everywhere,
# and `audit verify` notices a deleted tail.
audit_head = sa.Table(
    "audit_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

GENESIS = "0" * 64
