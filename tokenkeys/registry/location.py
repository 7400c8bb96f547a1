"""Where the registry lives: a SQLite file path or a postgresql:// URL.

The PostgreSQL password never goes in the URL: libpq finds it in PGPASSWORD,
~/.pgpass or a service file. A URL carrying one is refused, and URLs are shown
with any password removed all the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tokenkeys.errors import UsageError
from tokenkeys.i18n import _

PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


@dataclass(frozen=True)
class Location:
    dialect: str  # "sqlite" | "postgresql"
    path: Path | None
    url: str  # SQLAlchemy URL
    display: str  # safe to print


# `scheme://user:password@host`, any scheme. Greedy up to the last `@` of the word:
# a password may hold an `@` itself, and over-redacting is harmless.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):\S*@")
# A libpq keyword/value string ("host=db dbname=x"); it is no file path.
_CONNINFO = re.compile(r"(?i)(?:^\s*(?:host|hostaddr|port|dbname|user|service|sslmode)"
                       r"|\bpassword)\s*=")


def redact(text: str) -> str:
    """Remove a password from every URL or `password=` setting in `text`."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", text)


def parse_location(text: str) -> Location:
    if text.startswith(PG_SCHEMES):
        parts = urlsplit(text)
        query = {k.lower() for k, _ in parse_qsl(parts.query)}
        if parts.password is not None or "password" in query:
            raise UsageError(
                _("a password in the registry URL is refused: use PGPASSWORD, ~/.pgpass or a "
                  "PostgreSQL service file")
            )
        rest = text.split("://", 1)[1]
        return Location("postgresql", None, f"postgresql+psycopg://{rest}", redact(text))
    if "://" in text:
        raise UsageError(_("unsupported registry location {text!r} (a file path or a "
                           "postgresql:// URL)").format(text=redact(text)))
    if _CONNINFO.search(text):
        raise UsageError(_("the registry location looks like a libpq keyword string: give a "
                           "postgresql:// URL without a password, or a file path"))
    path = Path(text).expanduser()
    return Location("sqlite", path, f"sqlite:///{path}", str(path))
