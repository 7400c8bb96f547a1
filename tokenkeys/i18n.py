"""Translations: gettext catalogs in tokenkeys/locale, English by default, French for fr_*.

The language comes from `--lang`, then the configuration's `lang`, then the variables
gettext reads (LANGUAGE, LC_ALL, LC_MESSAGES, LANG, the first one set). The catalog is
picked here, never through locale.setlocale: it works where no French system locale is
installed. The assistant answers each request in the language its browser asks for
(`language()` sets it for the request's context only).

Messages are whole sentences with named placeholders, translated before they are
filled: `_("key {name} expired").format(name=...)`. Untrusted values never select a
translation, and the faces escape the final text (cli.app.visible, JSON, textContent).
`N_()` marks a text translated later, where it is shown (click help texts, tables).
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime
from functools import cache
from pathlib import Path

DOMAIN = "tokenkeys"
LOCALE_DIR = Path(__file__).with_name("locale")
LANGUAGES = ("en", "fr")
ENVIRONMENT = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")  # gettext.find's order

_process: str | None = None  # set_language(); None: from the environment, on first use
_request: ContextVar[str | None] = ContextVar("tokenkeys_language", default=None)


def language_of(value: str | None) -> str | None:
    """'fr' for fr, fr_FR.UTF-8, fr-CA, fr:en; 'en' for any other name; None for none."""
    if not value:
        return None
    first = value.split(":")[0].strip().lower()
    if not first:
        return None
    return "fr" if first == "fr" or first.startswith(("fr_", "fr-", "fr.", "fr@")) else "en"


def from_environment(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    for name in ENVIRONMENT:
        lang = language_of(env.get(name))
        if lang is not None:
            return lang
    return "en"


def set_language(lang: str | None) -> str:
    """The process's language (None: from the environment again); returns it."""
    global _process
    _process = language_of(lang) or from_environment()
    return _process


def current_language() -> str:
    global _process
    lang = _request.get()
    if lang is not None:
        return lang
    if _process is None:
        _process = from_environment()
    return _process


@contextmanager
def language(lang: str) -> Iterator[None]:
    """`lang` for this context (a request of the assistant), the process's elsewhere."""
    token = _request.set(language_of(lang) or "en")
    try:
        yield
    finally:
        _request.reset(token)


def accepted(header: str | None) -> str:
    """The language an Accept-Language header prefers among ours (English by default)."""
    best, best_q = "en", -1.0
    for position, part in enumerate((header or "").split(",")):
        tag, _sep, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _eq, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and q > 0 and q - position * 1e-6 > best_q:
            best, best_q = primary, q - position * 1e-6
    return best


@cache
def translations(lang: str) -> gettext.NullTranslations:
    if lang == "en":
        return gettext.NullTranslations()
    folder = LOCALE_DIR / lang / "LC_MESSAGES"
    mo, po = folder / f"{DOMAIN}.mo", folder / f"{DOMAIN}.po"
    try:
        mo_time = mo.stat().st_mtime
    except FileNotFoundError:
        mo_time = None
    if po.exists() and (mo_time is None or po.stat().st_mtime > mo_time):
        # A source checkout whose catalog was not compiled, or edited since.
        return _from_po(po)
    if mo_time is None:
        return gettext.NullTranslations()
    with mo.open("rb") as f:
        return gettext.GNUTranslations(f)


def _from_po(po: Path) -> gettext.NullTranslations:
    from io import BytesIO

    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po.open("rb") as f:
        catalog = read_po(f)
    buffer = BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def _(message: str) -> str:
    return translations(current_language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current_language()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks `message` for the catalog; it is translated where it is shown."""
    return message


def Nn_(singular: str, plural: str) -> tuple[str, str]:
    """Marks a plural pair for the catalog; ngettext() translates it where it is shown."""
    return singular, plural


def format_date(value: date | datetime) -> str:
    """A date for people: 2026-12-06 in English (as before), 6 décembre 2026 in French."""
    day = value.date() if isinstance(value, datetime) else value
    lang = current_language()
    if lang == "en":
        return day.isoformat()
    from babel.dates import format_date as babel_date

    return str(babel_date(day, format="long", locale=lang))


def format_number(value: int | float) -> str:
    """A number for people: 1234 in English (as before), 1 234 in French."""
    lang = current_language()
    if lang == "en":
        return str(value)
    from babel.numbers import format_decimal

    return str(format_decimal(value, locale=lang))
