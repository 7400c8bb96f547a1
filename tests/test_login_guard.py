"""The login guard's rules (services/login.py): where a PIN comes from, and what the
token's PIN flags allow before anything is sent. The card itself is exercised in
tests/smartcard/test_smartcard_workflow.py; here the flags are plain values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenkeys.errors import PinFinalTry, PinLocked
from tokenkeys.services.login import check_before_login, pin_origin
from tokenkeys.types import PinSource, Secret, TokenInfo


def _info(*flags: str) -> TokenInfo:
    return TokenInfo(label="OpenPGP card (User PIN)", manufacturer="OpenPGP project",
                     model="PKCS#15 emulated", serial="000f5a1c", module="opensc", slot=1,
                     flags=("login-required", *flags))


def test_pin_origin_follows_the_order_of_pin_sources(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENKEYS_PIN", raising=False)
    assert pin_origin(PinSource(interactive=True)) == "prompt"
    monkeypatch.setenv("TOKENKEYS_PIN", "123456")
    assert pin_origin(PinSource()) == "env"
    assert pin_origin(PinSource(file=tmp_path / "pin")) == "file"
    assert pin_origin(PinSource(pinpad=True)) == "pinpad"
    assert pin_origin(PinSource(value=Secret("1"))) == "given"


@pytest.mark.parametrize("origin", ["env", "file"])
def test_final_try_refuses_an_unattended_pin(origin: str) -> None:
    with pytest.raises(PinFinalTry) as caught:
        check_before_login(_info("user-pin-final-try"), origin)
    message = str(caught.value)
    assert "final PIN try" in message and "--allow-final-try" in message
    assert "000f5a1c" in message and "refused without being sent" in message
    check_before_login(_info("user-pin-final-try"), origin, allow_final_try=True)


@pytest.mark.parametrize("origin", ["prompt", "pinpad", "given"])
def test_final_try_lets_a_person_type_the_pin(origin: str) -> None:
    check_before_login(_info("user-pin-final-try"), origin)


def test_count_low_alone_is_no_reason_to_refuse() -> None:
    check_before_login(_info("user-pin-count-low"), "env")


@pytest.mark.parametrize("origin", ["env", "prompt", "pinpad"])
def test_locked_pin_is_never_sent_and_says_how_to_unlock(origin: str) -> None:
    with pytest.raises(PinLocked) as caught:
        check_before_login(_info("user-pin-locked"), origin, allow_final_try=True)
    assert "SO (admin) PIN" in str(caught.value) and "unblock" in str(caught.value)
    assert PinLocked.exit_code == PinFinalTry.exit_code == 4
