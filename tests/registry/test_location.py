"""Registry locations: no password ever reaches a message or `display`."""

from __future__ import annotations

import pytest

from tokenkeys.errors import UsageError
from tokenkeys.registry import parse_location, redact

SECRET = "hunter2"


@pytest.mark.parametrize("text", [
    f"mysql://root:{SECRET}@db/x",
    f"mysql+pymysql://root:{SECRET}@db:3306/x",
    f"sqlite://u:{SECRET}@/x",
    f"mysql://root:p@{SECRET}@db/x",  # an `@` inside the password
])
def test_other_scheme_password_never_in_the_error(text: str) -> None:
    with pytest.raises(UsageError, match="unsupported registry location") as err:
        parse_location(text)
    assert SECRET not in str(err.value)
    assert SECRET not in redact(f"could not connect to {text}: refused")


@pytest.mark.parametrize("text", [
    f"host=db password={SECRET}",
    f"dbname=tokenkeys user=officer password='{SECRET}'",
    "host=db dbname=tokenkeys",
])
def test_libpq_keyword_string_is_no_sqlite_path(text: str) -> None:
    with pytest.raises(UsageError, match="looks like a libpq keyword string") as err:
        parse_location(text)
    assert SECRET not in str(err.value)


def test_plain_paths_and_urls_still_parse() -> None:
    assert parse_location("/var/lib/tokenkeys/registry.sqlite").dialect == "sqlite"
    assert parse_location("/tmp/a=b/registry.sqlite").dialect == "sqlite"
    pg = parse_location("postgresql://officer@db/tokenkeys")
    assert pg.dialect == "postgresql" and pg.display == "postgresql://officer@db/tokenkeys"

