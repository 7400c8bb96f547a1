"""A database of another application is refused as a registry, and left as it was."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import TK
from tests.cli.test_registry_cli import one_line_error
from tests.registry.conftest import RawSql


def test_foreign_database_is_refused_untouched(rtk: TK, registry_location: str,
                                               raw_sql: RawSql) -> None:
    sqlite = not registry_location.startswith("postgresql")
    if sqlite:
        Path(registry_location).parent.mkdir(parents=True, exist_ok=True)
    raw_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
            "INSERT INTO notes (id, body) VALUES (1, 'the other application''s data')")
    if sqlite:
        folder = Path(registry_location).parent
        before = (Path(registry_location).read_bytes(), sorted(folder.iterdir()))
    for args in (["service", "list"], ["registry", "migrate"], ["audit", "verify"],
                 ["consultation", "create", "AO-1", "--key", "K"]):
        one_line_error(rtk(*args), 12, "is not a tokenkeys registry: it holds another "
                                       "application's tables ('notes'); nothing was changed")
    if sqlite:
        assert (Path(registry_location).read_bytes(), sorted(folder.iterdir())) == before
        tables = raw_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        tables = raw_sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == [("notes",)]
    assert raw_sql("SELECT count(*) FROM notes")[0][0] in (1, "1")


def test_empty_file_or_database_becomes_a_registry(rtk: TK, registry_location: str) -> None:
    if not registry_location.startswith("postgresql"):
        Path(registry_location).parent.mkdir(parents=True, exist_ok=True)
        Path(registry_location).write_bytes(b"")  # `touch`: an empty SQLite database
    assert rtk("service", "create", "achats").code == 0
    assert rtk("--json", "audit", "verify").json["rows"] >= 1
