"""The assistant's and the demo platform's pages in the browser's language.

The static files mark each text `{{t:English text}}` (in HTML, and inside the string
literals of the scripts) and the page's language `{{lang}}`. A page is served with each
mark replaced by its translation, escaped for where it stands (HTML text, a JavaScript
string). `extract` is the Babel extraction method for these marks (babel.cfg).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import IO, Any

from tokenkeys.i18n import _, accepted, language

STATIC = Path(__file__).with_name("static")
MARK = re.compile(r"\{\{t:((?:[^{}]|\{\w+\})*)\}\}")


def language_of_request(headers: Any) -> str:
    return accepted(headers.get("accept-language"))


@cache
def _source(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


@cache
def render(name: str, lang: str) -> str:
    """The static file `name` with its marks in `lang` (cached: the files never change)."""
    escape = _js if name.endswith(".js") else _html
    with language(lang):
        body = MARK.sub(lambda m: escape(_(m.group(1))), _source(name))
    return body.replace("{{lang}}", lang)


def _html(text: str) -> str:
    return html.escape(text, quote=True)


def _js(text: str) -> str:
    # Inside a double-quoted JavaScript string: JSON's escaping, without the quotes;
    # "<" escaped too, so that no text can close a <script>.
    return json.dumps(text, ensure_ascii=False)[1:-1].replace("<", "\\u003c")


def extract(fileobj: IO[bytes], keywords: Any, comment_tags: Any, options: Any
            ) -> Iterator[tuple[int, str, str, list[str]]]:
    """Babel extraction method: each {{t:...}} mark of an HTML or JavaScript file
    (Babel passes keywords, comment tags and options; marks need none of them)."""
    text = fileobj.read().decode("utf-8")
    for m in MARK.finditer(text):
        yield text.count("\n", 0, m.start()) + 1, "_", m.group(1), []
