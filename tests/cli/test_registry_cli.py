"""Registry and audit through the CLI: tampering, bad input, the PostgreSQL password."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import TK, Run
from tests.pgcluster import OFFICER_PASSWORD
from tests.registry.conftest import RawSql, soft_facts
from tokenkeys.registry import Registry
from tokenkeys.registry.db import SCHEMA_HEAD


def one_line_error(run: Run, code: int, text: str) -> None:
    assert run.code == code, (run.code, run.err, run.out)
    assert text in run.err, run.err
    assert run.err.count("\n") == 1 and "Traceback" not in run.err


def populate(location: str) -> None:
    with Registry.open(location) as reg:
        reg.add_key("default", soft_facts("K"), "generate")
        reg.add_key("default", soft_facts("B", backup=True), "generate")
        reg.create_consultation("default", "AO-1", "K", title=None, closes_at=None,
                                check=lambda *_: None, details={})
        reg.close_consultation("default", "AO-1")


def _unlock(raw_sql: RawSql, pg: bool) -> None:
    if pg:
        raw_sql("ALTER TABLE audit DISABLE TRIGGER audit_append_only")
    else:
        raw_sql("DROP TRIGGER audit_no_update", "DROP TRIGGER audit_no_delete")


TAMPERING = {
    "edited": ["UPDATE audit SET subject = 'AO-2' WHERE seq = 3"],
    "deleted": ["DELETE FROM audit WHERE seq = 2"],
    "reordered": ["UPDATE audit SET seq = -1 WHERE seq = 2",
                  "UPDATE audit SET seq = 2 WHERE seq = 3",
                  "UPDATE audit SET seq = 3 WHERE seq = -1"],
    "tail deleted": ["DELETE FROM audit WHERE seq = 4"],
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_audit_verify_finds_tampering(rtk: TK, registry_location: str, raw_sql: RawSql,
                                      how: str) -> None:
    populate(registry_location)
    good = rtk("--json", "audit", "verify")
    assert good.code == 0 and good.json["rows"] == 4, good.err
    shown = rtk("--json", "audit", "show").json["rows"]
    assert [r["event"] for r in shown] == ["generate", "generate", "consultation-create",
                                           "consultation-close"]
    _unlock(raw_sql, registry_location.startswith("postgresql"))
    raw_sql(*TAMPERING[how])
    broken = rtk("audit", "verify")
    one_line_error(broken, 14, "audit chain broken")
    # An edited creation row no longer vouches for its consultation.
    assert ("consultations that differ" in broken.err) == (how == "edited"), broken.err


def test_unknown_names_change_nothing(rtk: TK, registry_location: str, raw_sql: RawSql,
                                      tmp_path: Path) -> None:
    populate(registry_location)
    before = raw_sql("SELECT count(*) FROM audit")
    bid = tmp_path / "bid"
    bid.write_bytes(b"x")
    for args, code, text in [
        (["consultation", "show", "NOPE"], 13, "unknown consultation 'NOPE'"),
        (["consultation", "close", "NOPE"], 13, "unknown consultation 'NOPE'"),
        (["seal", bid, "-o", tmp_path / "o.p7m", "--consultation", "NOPE"], 13,
         "unknown consultation"),
        (["consultation", "list", "--service", "nope"], 13, "unknown service 'nope'"),
        (["key", "generate", "--token", "soft:/nonexistent", "--name", "X", "--service",
          "nope"], 13, "unknown service"),
        (["consultation", "create", "AO-2", "--key", "NOPE"], 5, "no key named 'NOPE'"),
        (["key", "renew", "NOPE"], 5, "no key named 'NOPE'"),
    ]:
        one_line_error(rtk(*args), code, text)
    assert not (tmp_path / "o.p7m").exists()
    assert raw_sql("SELECT count(*) FROM audit") == before


def test_newer_schema_is_refused(rtk: TK, registry_location: str, raw_sql: RawSql) -> None:
    populate(registry_location)
    raw_sql("UPDATE alembic_version SET version_num = '9999'")
    for args in (["service", "list"], ["service", "create", "x"], ["registry", "migrate"]):
        one_line_error(rtk(*args), 12, "newer than this tokenkeys knows")
    assert raw_sql("SELECT count(*) FROM services") in ([(1,)], [("1",)])
    assert raw_sql("SELECT version_num FROM alembic_version") in ([("9999",)],)


def test_registry_migrate_and_first_use(rtk: TK) -> None:
    first = rtk("--json", "registry", "migrate")
    assert first.code == 0 and first.json["from"] is None
    assert first.json["to"] == SCHEMA_HEAD
    again = rtk("--json", "registry", "migrate")
    assert again.json["from"] == SCHEMA_HEAD


def test_unreachable_registries(tk: TK, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for location, text in [
        (str(blocker / "registry.sqlite"), "cannot create the registry directory"),
        (str(blocker), "not a SQLite database"),
        ("postgresql://officer@127.0.0.1:1/tokenkeys", "cannot reach the registry"),
        ("mysql://x/y", "unsupported registry location"),
    ]:
        blocker.write_text("not a database, " * 100)
        run = tk("consultation", "list", env={"TOKENKEYS_REGISTRY": location})
        one_line_error(run, 2 if "unsupported" in text else 12, text)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop CAP_DAC_OVERRIDE")
def test_read_only_sqlite_registry(tk: TK, tmp_path: Path) -> None:
    # Root ignores permission bits; without CAP_DAC_OVERRIDE it obeys them.
    base = tmp_path / "ro"
    base.mkdir()
    location = str(base / "registry.sqlite")
    populate(location)
    before = sqlite3.connect(location).execute("SELECT count(*) FROM audit").fetchall()
    os.chmod(location, 0o444)
    os.chmod(base, 0o555)
    try:
        done = subprocess.run(
            ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
             sys.executable, "-m", "tokenkeys", "service", "create", "x"],
            env={**os.environ, "TOKENKEYS_REGISTRY": location}, capture_output=True,
            text=True, timeout=60)
        one_line_error(Run(done.returncode, done.stdout, done.stderr), 12, "read-only")
    finally:
        os.chmod(base, 0o755)
        os.chmod(location, 0o644)
    after = sqlite3.connect(location).execute("SELECT count(*) FROM audit").fetchall()
    assert after == before


def test_postgresql_read_only_role_and_password_never_shown(tk: TK, pg_cluster: Any) -> None:
    db = pg_cluster.new_database()
    populate(pg_cluster.url(db))
    pg_cluster.psql(db, "CREATE ROLE reader LOGIN", "GRANT SELECT ON ALL TABLES IN SCHEMA "
                    "public TO reader")
    reader = tk("consultation", "list", env={"TOKENKEYS_REGISTRY": pg_cluster.url(db, "reader")})
    assert reader.code == 0 and "AO-1" in reader.out, reader.err
    one_line_error(tk("service", "create", "x",
                      env={"TOKENKEYS_REGISTRY": pg_cluster.url(db, "reader")}),
                   12, "refuses writes")

    # The officer role needs a password: libpq takes it from PGPASSWORD, never from us.
    url = pg_cluster.tcp_url(db)
    good = tk("--json", "consultation", "list", env={"TOKENKEYS_REGISTRY": url,
                                                    "PGPASSWORD": OFFICER_PASSWORD})
    assert good.code == 0 and good.json["consultations"][0]["reference"] == "AO-1"
    runs = [
        tk("--debug", "service", "create", "y",
           env={"TOKENKEYS_REGISTRY": url, "PGPASSWORD": OFFICER_PASSWORD + "-wrong"}),
        tk("consultation", "list", env={"TOKENKEYS_REGISTRY": url.replace(
            "officer@", f"officer:{OFFICER_PASSWORD}@"), "PGPASSWORD": None}),
        tk("--json", "consultation", "list", env={
            "TOKENKEYS_REGISTRY": url + f"?password={OFFICER_PASSWORD}"}),
    ]
    assert runs[0].code == 12 and "cannot reach the registry" in runs[0].err
    assert runs[1].code == 2 and "a password in the registry URL is refused" in runs[1].err
    assert runs[2].code == 2
    for run in runs:
        assert OFFICER_PASSWORD not in run.out + run.err
        assert "wrong" not in run.out + run.err


def test_registry_names_are_shown_as_written(rtk: TK, registry_location: str) -> None:
    """Brackets are text, not markup to escape: `[lot 2]` shows as `[lot 2]`, never
    `\\[lot 2]`; control characters are shown as escapes, never sent raw."""
    with Registry.open(registry_location) as reg:
        reg.add_key("default", soft_facts("K[lot 2]\x1b[31m"), "generate")
        reg.add_key("default", soft_facts("B", backup=True), "generate")
        reg.create_consultation("default", "AO[2]", "K[lot 2]\x1b[31m", title="[urgent]",
                                closes_at=None, check=lambda *_: None, details={})
    listed = rtk("consultation", "list")
    shown = rtk("consultation", "show", "AO[2]")
    keys = rtk("key", "list", "--registry")
    for run in (listed, shown, keys):
        assert run.code == 0, run.err
        assert "\\[" not in run.out and "\x1b" not in run.out, run.out
    assert "AO[2]" in listed.out and "K[lot 2]\\x1b[31m" in listed.out
    assert "title: [urgent]" in shown.out and "K[lot 2]\\x1b[31m" in shown.out
    assert "K[lot 2]\\x1b[31m" in keys.out


def test_cli_never_shows_the_password(tk: TK) -> None:
    for text in ("mysql://root:hunter2@db/x", "host=db password=hunter2"):
        run = tk("consultation", "list", env={"TOKENKEYS_REGISTRY": text})
        assert run.code == 2, (run.code, run.err)
        assert "hunter2" not in run.out + run.err
        assert run.err.count("\n") == 1 and "Traceback" not in run.err
