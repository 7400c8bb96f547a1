"""Login rules of the smartcard driver with a fake PyKCS11 (no reader needed):
PIN pad, retry flags, SO switch. The emulated reader has no PIN pad."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import PyKCS11
import pytest

from tokenkeys.drivers.pkcs11_tables import CKF_PROTECTED_AUTHENTICATION_PATH
from tokenkeys.drivers.smartcard import SmartcardToken
from tokenkeys.drivers.smartcard_keys import map_error
from tokenkeys.drivers.smartcard_slots import Card
from tokenkeys.errors import PinIncorrect, PinLocked, PinMissing, TokenNotFound, UsageError
from tokenkeys.types import PinSource, Secret, given_pin


@dataclass
class FakeSession:
    answer: int = PyKCS11.CKR_OK
    logins: list[tuple[str | None, int]] = field(default_factory=list)

    def login(self, pin: str | None, user_type: int) -> None:
        self.logins.append((pin, user_type))
        if self.answer != PyKCS11.CKR_OK:
            raise PyKCS11.PyKCS11Error(self.answer)

    def logout(self) -> None:
        pass

    def closeSession(self) -> None:
        pass


@dataclass
class FakeLib:
    session: FakeSession
    flags: int = 0

    def openSession(self, slot: int, flags: int) -> FakeSession:
        return self.session

    def getTokenInfo(self, slot: int) -> Any:
        return type("TI", (), {"flags": self.flags})()


def _token(flags: int = 0, answer: int = PyKCS11.CKR_OK,
           manufacturer: str = "OpenPGP project") -> tuple[SmartcardToken, FakeLib]:
    lib = FakeLib(FakeSession(answer), flags)
    card = Card("/x/opensc-pkcs11.so", 0, "card", "1234", manufacturer, "m", flags)
    return SmartcardToken(lib, card), lib


def test_pinpad_logs_in_without_pin() -> None:
    token, lib = _token(flags=CKF_PROTECTED_AUTHENTICATION_PATH)
    token.login(PinSource(pinpad=True, interactive=False))
    assert lib.session.logins == [(None, PyKCS11.CKU_USER)]


def test_pinpad_asked_but_reader_has_none() -> None:
    token, lib = _token()
    with pytest.raises(PinMissing, match="no PIN pad"):
        token.login(PinSource(pinpad=True, interactive=False))
    assert lib.session.logins == []


@pytest.mark.parametrize(("flags", "hint"), [
    (PyKCS11.CKF_USER_PIN_FINAL_TRY, "final try"),
    (PyKCS11.CKF_USER_PIN_COUNT_LOW, "count low"),
    (0, "more than one try left; this card reports only the final try"),
])
def test_wrong_pin_hint_from_flags(flags: int, hint: str) -> None:
    token, lib = _token(flags=flags, answer=PyKCS11.CKR_PIN_INCORRECT)
    with pytest.raises(PinIncorrect) as caught:
        token.login(given_pin(Secret("999999")))
    assert caught.value.tries_left == hint and "999999" not in str(caught.value)
    assert len(lib.session.logins) == 1  # never retried


def test_generic_card_without_flags_says_unknown() -> None:
    token, _ = _token(answer=PyKCS11.CKR_PIN_INCORRECT, manufacturer="Other")
    with pytest.raises(PinIncorrect) as caught:
        token.login(given_pin(Secret("999999")))
    assert caught.value.tries_left is None


def test_locked_and_length() -> None:
    token, _ = _token(flags=PyKCS11.CKF_USER_PIN_LOCKED, answer=PyKCS11.CKR_PIN_INCORRECT)
    with pytest.raises(PinLocked):
        token.login(given_pin(Secret("999999")))
    token, _ = _token(answer=PyKCS11.CKR_PIN_LEN_RANGE)
    with pytest.raises(UsageError, match="no try used"):
        token.login(given_pin(Secret("1")))


def test_as_so_relogs_the_user() -> None:
    token, lib = _token()
    token.login(given_pin(Secret("123456")))
    token.set_so_pin_source(given_pin(Secret("12345678")))
    assert token.as_so(lambda: 42) == 42
    assert [t for _, t in lib.session.logins] == [
        PyKCS11.CKU_USER, PyKCS11.CKU_SO, PyKCS11.CKU_USER]


def test_removed_card_maps_to_token_not_found() -> None:
    err = map_error(PyKCS11.PyKCS11Error(PyKCS11.CKR_DEVICE_REMOVED), "decrypting")
    assert isinstance(err, TokenNotFound) and "removed" in str(err)
