"""The agent's side on the emulated OpenPGP card through the real CLI:
PIN retry counter and final-try guard, card removal and insertion seen by
`token list`. Runs after test_smartcard.py on the same session card."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest

from tests.smartcard.conftest import EmulatedCard, card_cli
from tokenkeys.config import Config
from tokenkeys.drivers import open_token
from tokenkeys.services.login import login
from tokenkeys.types import PinSource

pytestmark = pytest.mark.smartcard


def test_wrong_pins_count_down_and_the_final_try_is_guarded(card: EmulatedCard,
                                                            tmp_path: Path) -> None:
    start = card.pw1_tries()
    assert start == 3
    wrong = {"TOKENKEYS_PIN": "000000"}
    try:
        first = card_cli(card, tmp_path, "key", "list", "--token", card.uri, env=wrong)
        assert first.returncode == 4 and "PIN incorrect (more than one try left" in first.stderr
        assert card.pw1_tries() == 2
        second = card_cli(card, tmp_path, "key", "list", "--token", card.uri, env=wrong)
        assert second.returncode == 4 and "PIN incorrect (final try)" in second.stderr
        assert "000000" not in first.stderr + second.stderr
        assert card.pw1_tries() == 1
        # At the final try a PIN from the environment, even the right one, is not sent.
        for env in (wrong, {}):
            refused = card_cli(card, tmp_path, "--json", "key", "list", "--token", card.uri,
                               env=env)
            assert refused.returncode == 4
            error = json.loads(refused.stdout)["error"]
            assert error["type"] == "PinFinalTry" and "--allow-final-try" in error["message"]
            assert card.pw1_tries() == 1
        pin_file = tmp_path / "pin"
        pin_file.write_text(card.pin + "\n", encoding="utf-8")
        refused = card_cli(card, tmp_path, "key", "list", "--token", card.uri, "--pin-file",
                       pin_file, env={"TOKENKEYS_PIN": ""})
        assert refused.returncode == 4 and "a PIN from the PIN file is refused" in refused.stderr
        allowed = card_cli(card, tmp_path, "key", "list", "--token", card.uri, "--allow-final-try")
        assert allowed.returncode == 0, allowed.stderr
    finally:
        if card.pw1_tries() < start:  # leave the session card as it was found
            card_cli(card, tmp_path, "key", "list", "--token", card.uri, "--allow-final-try")
    assert card.pw1_tries() == start


def _card_listed(card: EmulatedCard, tmp: Path) -> bool:
    done = card_cli(card, tmp, "--json", "token", "list")
    assert done.returncode == 0, done.stderr
    return any(t["label"] == card.label for t in json.loads(done.stdout)["tokens"])


def test_token_list_sees_removal_and_insertion(card: EmulatedCard, tmp_path: Path) -> None:
    assert _card_listed(card, tmp_path)
    card.remove()
    try:
        assert not _card_listed(card, tmp_path)
    finally:
        card.insert()
    assert _card_listed(card, tmp_path)


def test_the_card_is_named_before_the_pin_is_asked(card: EmulatedCard,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[tuple[str, str]] = []

    def person(prompt: str) -> str:  # the agent at the keyboard, not the device
        said.append(("prompt", prompt))
        return card.pin

    monkeypatch.delenv("TOKENKEYS_PIN", raising=False)
    monkeypatch.setattr(getpass, "getpass", person)
    with open_token(card.uri, Config()) as token:
        serial = token.info().serial
        login(token, PinSource(interactive=True), announce=lambda m: said.append(("say", m)))
    assert [kind for kind, _ in said] == ["say", "prompt"]
    assert card.label in said[0][1] and serial in said[0][1]
