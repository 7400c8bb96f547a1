"""Cards in readers: matching a URI, and waiting for a card with slot events."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

import PyKCS11

from tokenkeys.errors import UsageError
from tokenkeys.uri import Pkcs11Uri

WAIT_ENV = "TOKENKEYS_CARD_WAIT"
POLL_S = 0.1
RESCAN_S = 0.5  # rescan even without an event: some modules have no slot events


def card_wait_seconds() -> float:
    text = os.environ.get(WAIT_ENV, "0") or "0"
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{WAIT_ENV} must be a number of seconds, not {text!r}") from None
    return max(0.0, value)


@dataclass(frozen=True)
class Card:
    module: str
    slot: int
    label: str
    serial: str
    manufacturer: str
    model: str
    flags: int

    @classmethod
    def read(cls, lib: Any, module: str, slot: int) -> Card:
        ti = lib.getTokenInfo(slot)
        return cls(module, int(slot), ti.label.strip(), ti.serialNumber.strip(),
                   ti.manufacturerID.strip(), ti.model.strip(), int(ti.flags))

    def matches(self, uri: Pkcs11Uri) -> bool:
        wanted = {"token": self.label, "serial": self.serial, "manufacturer": self.manufacturer,
                  "model": self.model, "slot-id": str(self.slot)}
        return all(uri.attrs[k] == v for k, v in wanted.items() if k in uri.attrs)

    def uri(self) -> Pkcs11Uri:
        return Pkcs11Uri(attrs={"token": self.label, "serial": self.serial},
                         query={"module-path": self.module})


def scan(lib: Any, module: str) -> list[Card]:
    """Initialised cards now present; a card pulled out mid-scan is skipped."""
    cards = []
    for slot in lib.getSlotList(tokenPresent=True):
        with contextlib.suppress(PyKCS11.PyKCS11Error):
            card = Card.read(lib, module, slot)
            if card.flags & PyKCS11.CKF_TOKEN_INITIALIZED:
                cards.append(card)
    return cards


def pick(cards: list[Card], uri: Pkcs11Uri) -> Card | None:
    hits = [c for c in cards if c.matches(uri)]
    if len({c.serial for c in hits}) > 1:
        names = ", ".join(f"{c.label!r} serial {c.serial}" for c in hits)
        raise UsageError(f"several cards match ({names}): add serial= to the URI")
    # One card with several PIN slots (OpenPGP: "User PIN", "User PIN (sig)"):
    # OpenSC lists the decryption PIN's slot first.
    return hits[0] if hits else None


def wait_for_card(lib: Any, module: str, uri: Pkcs11Uri, timeout: float) -> Card | None:
    """Poll slot events (CKF_DONT_BLOCK) until a matching card is present, or None."""
    deadline = time.monotonic() + timeout
    next_scan = 0.0
    while True:
        event = False
        with contextlib.suppress(PyKCS11.PyKCS11Error):  # CKR_NO_EVENT, or not supported
            lib.waitForSlotEvent(PyKCS11.CKF_DONT_BLOCK)
            event = True
        now = time.monotonic()
        if event or now >= next_scan:
            next_scan = now + RESCAN_S
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                card = pick(scan(lib, module), uri)
                if card is not None:
                    return card
        if now >= deadline:
            return None
        time.sleep(POLL_S)


def describe(uri: Pkcs11Uri) -> str:
    keys = ("token", "serial", "slot-id", "manufacturer", "model")
    return ";".join(f"{k}={uri.attrs[k]}" for k in keys if k in uri.attrs) or "any card"
