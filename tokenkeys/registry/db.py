"""One database, two backends: engines, short retried transactions, automatic migrations.

SQLite: WAL mode, a busy timeout, and `BEGIN IMMEDIATE` for writes, so two writers
queue instead of failing half-way. PostgreSQL: READ COMMITTED; the audit chain head
row is locked `FOR UPDATE`, which serialises appends across workstations. Lock and
serialization failures are retried here, so none reaches a user.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tokenkeys.errors import (
    RegistryError,
    RegistryForeign,
    RegistryReadOnly,
    RegistrySchemaTooNew,
    RegistryUnavailable,
)
from tokenkeys.i18n import _
from tokenkeys.registry.location import Location, redact

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

T = TypeVar("T")
# The newest revision in migrations/versions (a test checks it). Knowing it here spares
# every command the import of Alembic when the schema is current.
SCHEMA_HEAD = "0002"
log = logging.getLogger("tokenkeys.registry")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
RETRY_SECONDS = 60.0
BUSY_TIMEOUT_MS = 5000
MIGRATION_LOCK = 0x746B6B72  # pg_advisory_xact_lock key: "tkkr"
TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available
UNIQUE_RACE_RETRIES = 3
READ_ONLY_SQLSTATES = {"25006", "42501"}  # read-only transaction, insufficient privilege


def _alembic_config(conn: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def schema_head() -> str:
    """The head revision as Alembic computes it from the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _sqlite_engine(location: Location) -> sa.Engine:
    assert location.path is not None
    # A pooled connection lives as long as the Registry: closing SQLite's last
    # connection checkpoints the WAL (with fsync), too dear per transaction.
    engine = sa.create_engine(location.url, pool_size=1, max_overflow=4,
                              connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _record: Any) -> None:
        dbapi.isolation_level = None  # we issue BEGIN ourselves (pysqlite's is deferred)
        cur = dbapi.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("tk_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _pg_engine(location: Location) -> sa.Engine:
    return sa.create_engine(location.url, pool_size=1, max_overflow=4, pool_pre_ping=True,
                            connect_args={"connect_timeout": 5,
                                          "application_name": "tokenkeys"})


class Database:
    """An open registry database. Call `transaction(fn)`; `fn` may run more than once."""

    def __init__(self, location: Location) -> None:
        self.location = location
        if location.path is not None:
            try:
                location.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryUnavailable(
                    _("cannot create the registry directory {parent}: {strerror}")
                    .format(parent=location.path.parent, strerror=exc.strerror)) from None
            self.engine = _sqlite_engine(location)
        else:
            self.engine = _pg_engine(location)
        self._ready = False

    @property
    def dialect(self) -> str:
        return self.location.dialect

    def close(self) -> None:
        self.engine.dispose()

    def transaction(self, fn: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run fn in one short transaction (retried on lock or serialization failures)."""
        if not self._ready:
            self.migrate(automatic=True)
        return self._run(fn, write)

    def _run(self, fn: Callable[[Connection], T], write: bool, *, migrating: bool = False) -> T:
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.005
        races = 0
        while True:
            try:
                with self.engine.connect() as conn:
                    if migrating and self.dialect == "sqlite":
                        return _without_foreign_keys(conn, fn)
                    return _run_on(conn, fn, write)
            except sa.exc.DBAPIError as exc:
                # Two processes creating the same name at once: the loser runs again and
                # its own existence check then names the conflict properly.
                if _unique_violation(exc) and races < UNIQUE_RACE_RETRIES:
                    races += 1
                    continue
                if _transient(exc) and time.monotonic() < deadline:
                    log.debug("registry busy, retrying: %s", type(exc.orig).__name__)
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 0.25)
                    continue
                raise self._translate(exc) from None

    # -- schema -------------------------------------------------------------------
    def current_revision(self) -> str | None:
        return self._run(_revision, write=False)

    def migrate(self, *, automatic: bool = False) -> tuple[str | None, str]:
        """Bring the schema to the newest revision; return (before, after)."""
        head = SCHEMA_HEAD
        if self.dialect == "sqlite":
            # Before the engine's first connection, which switches the file to WAL.
            self._refuse_foreign(_sqlite_tables(self.location))
        before = self.current_revision()
        if before != head and self.dialect == "postgresql":
            self._refuse_foreign(self._run(_tables, write=False))
        if before == head:
            self._ready = True
            return before, head
        self._check_known(before)  # before the write lock: a read-only user learns why
        if automatic:
            log.info("migrating the registry %s from %s to %s",
                     self.location.display, before, head)
        self._run(self._upgrade, write=True, migrating=True)
        self._ready = True
        return before, head

    def _refuse_foreign(self, tables: list[str] | None) -> None:
        """A database with tables, but not tokenkeys' (alembic_version and audit_head), is
        another application's: refused, and left as it was."""
        if not tables or {"alembic_version", "audit_head"} <= set(tables):
            return
        shown = ", ".join(repr(t[:40]) for t in sorted(tables)[:3])
        more = f" and {len(tables) - 3} more" if len(tables) > 3 else ""
        raise RegistryForeign(
            _("{display} is not a tokenkeys registry: it holds another application's tables "
              "({shown}{more}); nothing was changed. Point TOKENKEYS_REGISTRY at a new file "
              "or an empty database")
            .format(display=self.location.display, shown=shown, more=more))

    def _check_known(self, revision: str | None) -> None:
        if revision is None:
            return
        from alembic.script import ScriptDirectory
        from alembic.util.exc import CommandError

        try:
            ScriptDirectory.from_config(_alembic_config()).get_revision(revision)
        except CommandError:
            raise RegistrySchemaTooNew(
                _("the registry {display} has schema version {revision!r}, newer than this "
                  "tokenkeys knows ({SCHEMA_HEAD}): upgrade tokenkeys")
                .format(display=self.location.display, revision=revision, SCHEMA_HEAD=SCHEMA_HEAD)
            ) from None

    def _upgrade(self, conn: Connection) -> None:
        # Two first uses at once: the second waits here, then finds the work done.
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        current = _revision(conn)
        self._check_known(current)  # again: a newer tokenkeys may have migrated meanwhile
        if current != SCHEMA_HEAD:
            from alembic import command

            command.upgrade(_alembic_config(conn), "head")

    # -- errors -------------------------------------------------------------------
    def _translate(self, exc: sa.exc.DBAPIError) -> RegistryError:
        where = self.location.display
        orig = exc.orig
        if isinstance(orig, sqlite3.Error):
            text = str(orig)
            if "readonly" in text or (self._not_writable() and "unable to open" in text):
                return RegistryReadOnly(_("the registry {where} is read-only: {text}")
                                        .format(where=where, text=text))
            if "not a database" in text:
                return RegistryUnavailable(_("{where} is not a SQLite database")
                                           .format(where=where))
            if "locked" in text or "busy" in text:
                return RegistryUnavailable(_("the registry {where} stayed busy for "
                                             "{RETRY_SECONDS:.0f} seconds; try again")
                                           .format(where=where, RETRY_SECONDS=RETRY_SECONDS))
            return RegistryUnavailable(_("cannot use the registry {where}: {text}")
                                       .format(where=where, text=text))
        sqlstate = getattr(orig, "sqlstate", None)
        first = redact(str(orig).strip().splitlines()[0] if str(orig).strip() else "")
        if sqlstate in READ_ONLY_SQLSTATES:
            return RegistryReadOnly(_("the registry {where} refuses writes: {first}")
                                    .format(where=where, first=first))
        if sqlstate is None or str(sqlstate).startswith("08") or (isinstance(
                exc, sa.exc.OperationalError) and sqlstate not in TRANSIENT_SQLSTATES):
            return RegistryUnavailable(_("cannot reach the registry {where}: {first}")
                                       .format(where=where, first=first))
        return RegistryError(_("registry error on {where} (SQLSTATE {sqlstate}): {first}")
                             .format(where=where, sqlstate=sqlstate, first=first))

    def _not_writable(self) -> bool:
        path = self.location.path
        if path is None:
            return False
        target = path if path.exists() else path.parent
        return not os.access(target, os.W_OK)


def _run_on(conn: Connection, fn: Callable[[Connection], T], write: bool) -> T:
    if write:
        conn.execution_options(tk_write=True)
    with conn.begin():
        return fn(conn)


def _without_foreign_keys(conn: Connection, fn: Callable[[Connection], T]) -> T:
    """A SQLite migration rebuilds tables to change a column: foreign key enforcement
    is off meanwhile (the pragma is ignored inside a transaction, so it is set around
    it), and every reference is checked before the migration commits."""
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys = OFF")
    try:
        return _run_on(conn, lambda c: _checked_references(c, fn(c)), True)
    finally:
        raw.execute("PRAGMA foreign_keys = ON")


def _checked_references(conn: Connection, result: T) -> T:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RegistryError(_("the registry migration would break {count} reference(s) "
                              "(first: table {broken}); nothing was changed")
                            .format(count=len(broken), broken=broken[0][0]))
    return result


def _tables(conn: Connection) -> list[str]:
    """Tables and views of the current schema (PostgreSQL: the search path's first)."""
    inspector = sa.inspect(conn)
    return [*inspector.get_table_names(), *inspector.get_view_names()]


def _sqlite_tables(location: Location) -> list[str] | None:
    """The file's tables, read without changing a byte (read-only, no WAL switch); None
    when there is no file yet, or it is no SQLite database (the engine says so)."""
    assert location.path is not None
    try:
        if location.path.stat().st_size == 0:
            return None
    except OSError:
        return None
    try:
        conn = sqlite3.connect(f"{location.path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        return [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _unique_violation(exc: sa.exc.DBAPIError) -> bool:
    if not isinstance(exc, sa.exc.IntegrityError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.IntegrityError):
        return "UNIQUE constraint failed" in str(orig)
    return getattr(orig, "sqlstate", None) == "23505"


def _transient(exc: sa.exc.DBAPIError) -> bool:
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig)
        return "locked" in text or "busy" in text
    return getattr(orig, "sqlstate", None) in TRANSIENT_SQLSTATES
