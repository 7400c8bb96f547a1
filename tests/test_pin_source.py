"""PIN input never costs a try by mistake; one documented order of sources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tokenkeys.errors import PinMissing, UsageError
from tokenkeys.types import PinSource

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _read(source: PinSource) -> str | None:
    pin = source.read()
    return None if pin is None else pin.reveal()


@pytest.mark.parametrize("content", ["1234\nsecond line\n", "1234\r\nsecond\r\n", "1234",
                                     "1234\n\n\n"])
def test_pin_file_gives_its_first_line(tmp_path: Path, content: str) -> None:
    f = tmp_path / "pin"
    f.write_bytes(content.encode())
    assert _read(PinSource(file=f, interactive=False)) == "1234"


@pytest.mark.parametrize("content", ["", "\n", "\r\nsecret on line two\n"])
def test_empty_first_line_is_refused_not_sent(tmp_path: Path, content: str) -> None:
    f = tmp_path / "pin"
    f.write_bytes(content.encode())
    with pytest.raises(UsageError, match="empty first line"):
        PinSource(file=f, interactive=False).read()


def test_empty_environment_variable_is_no_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEYS_PIN", "")
    with pytest.raises(PinMissing):
        PinSource(interactive=False).read()


def test_empty_prompt_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENKEYS_PIN", raising=False)
    monkeypatch.setattr("getpass.getpass", lambda _prompt: "")
    with pytest.raises(UsageError, match="nothing was sent"):
        PinSource(interactive=True).read()


def test_order_pinpad_then_file_then_environment_then_prompt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "pin"
    f.write_text("from-file\n")
    monkeypatch.setenv("TOKENKEYS_PIN", "from-env")
    monkeypatch.setattr("getpass.getpass", lambda _prompt: "typed")
    assert _read(PinSource(file=f, interactive=True)) == "from-file"
    assert _read(PinSource(interactive=True)) == "from-env"
    monkeypatch.delenv("TOKENKEYS_PIN")
    assert _read(PinSource(interactive=True)) == "typed"
    assert _read(PinSource(pinpad=True, interactive=True)) is None
    with pytest.raises(UsageError, match="exclude each other"):
        PinSource(pinpad=True, file=f).read()


def test_docs_state_the_same_order() -> None:
    """The security officer guide's PIN table lists the sources in the code's order."""
    text = (DOCS / "security-officer.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| user PIN |"))
    order = [m.group(0) for m in re.finditer(r"--pinpad|--pin-file|TOKENKEYS_PIN|prompt", row)]
    assert order == ["--pinpad", "--pin-file", "TOKENKEYS_PIN", "prompt"], row
    for guide in ("ci.md", "agent.md", "errors.md"):
        body = (DOCS / guide).read_text(encoding="utf-8")
        assert "TOKENKEYS_PIN` wins" not in body and "environment wins" not in body, guide
