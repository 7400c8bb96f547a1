"""Translations: the French catalog is complete and consistent with the code, uses the
glossary's words (docs/fr/glossaire.md), and the language is chosen as documented."""

from __future__ import annotations

import os
import re
import shutil
import string
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from tokenkeys import i18n
from tokenkeys.i18n import _, accepted, format_date, format_number, language, ngettext

ROOT = Path(__file__).resolve().parents[1]
PO = ROOT / "tokenkeys" / "locale" / "fr" / "LC_MESSAGES" / "tokenkeys.po"
GLOSSARY = ROOT / "docs" / "fr" / "glossaire.md"
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2), "Nn_": (1, 2)}


def _extracted() -> set[str | tuple[str, str]]:
    """What `.ci/i18n extract` takes from the code, with babel.cfg (Babel's own API)."""
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    found: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=KEYWORDS):
        found.add(message if isinstance(message, str) else (message[0], message[1]))
    return found


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    with PO.open("rb") as f:
        return read_po(f)


def _fields(text: str) -> list[str]:
    """The placeholders of a message: {name!r:spec} fields and %(name)s ones."""
    fields = [f"{name}!{conv}:{spec}" for _lit, name, spec, conv
              in string.Formatter().parse(text) if name is not None]
    return sorted(fields + re.findall(r"%\([a-z]+\)s", text))


def test_every_message_in_the_code_has_a_french_translation(catalog) -> None:  # type: ignore[no-untyped-def]
    in_code = _extracted()
    in_po = {m.id for m in catalog if m.id}
    missing = sorted(map(str, in_code - in_po))
    assert not missing, f"not in the .po (run .ci/i18n extract, then translate): {missing[:10]}"
    untranslated = [m.id for m in catalog if m.id and not (
        m.string if isinstance(m.string, str) else all(m.string))]
    assert not untranslated, untranslated[:10]
    stale = sorted(map(str, in_po - in_code))
    assert not stale, f"in the .po but no longer in the code: {stale[:10]}"


def test_no_fuzzy_nor_obsolete_entries(catalog) -> None:  # type: ignore[no-untyped-def]
    assert not catalog.fuzzy
    assert [m.id for m in catalog if m.id and m.fuzzy] == []
    assert not catalog.obsolete
    assert "#~" not in PO.read_text(encoding="utf-8")


def test_placeholders_match(catalog) -> None:  # type: ignore[no-untyped-def]
    wrong = []
    for m in catalog:
        if not m.id:
            continue
        ids = [m.id] if isinstance(m.id, str) else list(m.id)
        strings = [m.string] if isinstance(m.string, str) else list(m.string)
        for source, text in zip(ids * len(strings), strings, strict=False):
            if _fields(source) != _fields(text):
                wrong.append((source, text))
        if isinstance(m.id, tuple) and _fields(m.id[1]) != _fields(strings[-1]):
            wrong.append((m.id[1], strings[-1]))
    assert wrong == []


def test_plural_forms_are_french(catalog) -> None:  # type: ignore[no-untyped-def]
    assert catalog.plural_forms == "nplurals=2; plural=(n > 1);"


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="gettext's msgfmt not installed")
def test_msgfmt_check(tmp_path: Path) -> None:
    done = subprocess.run(["msgfmt", "--check", "-o", str(tmp_path / "x.mo"), str(PO)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr


# --- the glossary ---------------------------------------------------------------
def _glossary() -> list[tuple[str, str, list[str]]]:
    """(English term, French word, forbidden synonyms) rows of docs/fr/glossaire.md."""
    rows = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] and not set(cells[0]) <= {"-", " "} \
                and cells[0] != "Code (anglais)":
            forbidden = [w.strip().strip("«» ").strip() for w in cells[2].split(";")]
            rows.append((cells[0], cells[1], [w for w in forbidden if w and w != "—"]))
    return rows


def forbidden_words(text: str, rows: list[tuple[str, str, list[str]]]) -> list[str]:
    """The glossary's forbidden synonyms that `text` uses (the right words removed first:
    "bi-clé de secours" is right even though "clé de secours" alone is not)."""
    lowered = text.lower()
    for _en, right, _bad in rows:
        for word in right.split(","):
            lowered = lowered.replace(word.strip().lower(), " ")
    return [bad for _en, _right, bads in rows for bad in bads
            if re.search(r"(?<![\w-])" + re.escape(bad.lower()) + r"(?![\w-])", lowered)]


def test_glossary_has_the_platform_words() -> None:
    rows = {en: fr for en, fr, _bad in _glossary()}
    assert rows["key pair"] == "bi-clé"
    assert rows["backup key"] == "bi-clé de secours"
    assert rows["envelope, bid"] == "pli"
    assert rows["designation"] == "désignation"
    assert rows["opening"] == "ouverture des plis"
    assert rows["shareable, extractable"] == "exportable"


def test_the_glossary_test_catches_a_synonym() -> None:
    rows = _glossary()
    assert forbidden_words("Générer une paire de clés", rows) == ["paire de clés"]
    assert forbidden_words("le bi-clé de secours est prêt", rows) == []


def test_translations_use_the_glossary_words(catalog) -> None:  # type: ignore[no-untyped-def]
    rows = _glossary()
    found = []
    for m in catalog:
        if m.id:
            for text in [m.string] if isinstance(m.string, str) else m.string:
                bad = forbidden_words(text, rows)
                if bad:
                    found.append((text, bad))
    assert found == []


def test_the_guides_use_the_glossary_words() -> None:
    rows = _glossary()
    for guide in ("agent.md", "responsable-securite.md"):
        text = (ROOT / "docs" / "fr" / guide).read_text(encoding="utf-8")
        prose = re.sub(r"```.*?```|`[^`]*`", " ", text, flags=re.S)  # commands stay as they are
        assert forbidden_words(prose, rows) == [], guide


# --- choosing the language ------------------------------------------------------
@pytest.mark.parametrize(("environ", "lang"), [
    ({}, "en"),
    ({"LANG": "fr_FR.UTF-8"}, "fr"),
    ({"LANG": "fr_CA.UTF-8"}, "fr"),
    ({"LANG": "fr"}, "fr"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({"LANG": "de_DE.UTF-8"}, "en"),
    ({"LANG": "fr_FR.UTF-8", "LC_MESSAGES": "en_GB.UTF-8"}, "en"),
    ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "fr_BE.UTF-8"}, "fr"),
    ({"LC_MESSAGES": "fr_FR.UTF-8", "LC_ALL": "C"}, "en"),
    ({"LC_ALL": "fr_FR.UTF-8", "LANG": "en_US.UTF-8"}, "fr"),
    ({"LANGUAGE": "fr:en", "LANG": "en_US.UTF-8"}, "fr"),
    ({"LANG": ""}, "en"),
])
def test_language_from_the_environment(environ: dict[str, str], lang: str) -> None:
    assert i18n.from_environment(environ) == lang


@pytest.mark.parametrize(("header", "lang"), [
    (None, "en"), ("fr", "fr"), ("fr-FR,fr;q=0.9,en;q=0.8", "fr"), ("en-US,en;q=0.9", "en"),
    ("de-DE,fr;q=0.5", "fr"), ("en;q=0.5,fr;q=0.8", "fr"), ("fr;q=0", "en"), ("*", "en"),
])
def test_language_from_accept_language(header: str | None, lang: str) -> None:
    assert accepted(header) == lang


def test_plurals_and_french_formats() -> None:
    singular = plural = "{opened} opened, {skipped} skipped, {failed} failed"
    with language("fr"):
        shown = [ngettext(singular, plural, n).format(opened=n, skipped=0, failed=0)
                 for n in (0, 1, 12)]
        assert shown == ["0 pli ouvert, 0 sauté(s), 0 en échec",
                         "1 pli ouvert, 0 sauté(s), 0 en échec",
                         "12 plis ouverts, 0 sauté(s), 0 en échec"]
        assert format_date(date(2026, 12, 6)) == "6 décembre 2026"
        assert format_date(datetime(2026, 1, 1, 23, 0)) == "1 janvier 2026"
        assert format_number(1234) == "1\u202f234"
        assert _("expires soon") == "expire bientôt"
    with language("en"):
        assert format_date(date(2026, 12, 6)) == "2026-12-06" and format_number(1234) == "1234"


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG") and
            not k.startswith("TOKENKEYS_")}
    return subprocess.run([sys.executable, "-m", "tokenkeys", *args], capture_output=True,
                          text=True, env={**base, **env}, timeout=60)


def test_lang_option_then_configuration_then_locale(tmp_path: Path) -> None:
    """No French system locale is installed here (`locale -a`): the catalog is chosen by
    tokenkeys, not by setlocale."""
    french, english = "Afficher ce message et quitter.", "Show this message and exit."
    assert french in _run(["--help"], LANG="fr_FR.UTF-8").stdout
    assert english in _run(["--help"], LANG="C.UTF-8").stdout
    assert english in _run(["--lang", "en", "--help"], LANG="fr_FR.UTF-8").stdout
    assert french in _run(["--lang=fr", "key", "--help"], LANG="C.UTF-8").stdout
    config = tmp_path / "config.toml"
    config.write_text('lang = "fr"\n')
    assert french in _run(["--config", str(config), "--help"], LANG="C.UTF-8").stdout
    assert french in _run(["--help"], LANG="C", TOKENKEYS_CONFIG=str(config)).stdout
    assert english in _run(["--lang", "en", "--config", str(config), "--help"]).stdout
    # The error line is French too, and its untrusted part still escaped.
    failed = _run(["consultation", "show", "AO\x1b[31m"], LANG="fr_FR.UTF-8",
                  TOKENKEYS_REGISTRY=str(tmp_path / "r.sqlite"))
    assert failed.stderr == ("tokenkeys : erreur : consultation inconnue 'AO\\x1b[31m' dans le "
                             "service 'default'\n")


def test_a_catalog_edited_since_its_compilation_is_read_from_the_po(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "fr" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    shutil.copy(PO, folder / "tokenkeys.po")
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.translations.cache_clear()
    try:
        with language("fr"):
            assert _("valid") == "valide"  # no .mo at all: compiled in memory
    finally:
        i18n.translations.cache_clear()


def test_no_error_is_raised_with_an_untranslated_sentence() -> None:
    """The extractor sees only what `_()` wraps: a tokenkeys error raised with a bare
    sentence ("…", f"…" or "…".format) would stay English without any test noticing."""
    import ast
    import inspect

    from tokenkeys import errors

    names = {n for n, c in inspect.getmembers(errors, inspect.isclass)
             if issubclass(c, errors.TokenKeysError)}

    def bare(node: ast.expr) -> bool:
        if isinstance(node, ast.Constant | ast.JoinedStr):
            return isinstance(node, ast.JoinedStr) or isinstance(node.value, str)
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "format" and isinstance(node.func.value, ast.Constant))

    found = []
    for path in sorted((ROOT / "tokenkeys").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in names and node.args and bare(node.args[0])):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found
