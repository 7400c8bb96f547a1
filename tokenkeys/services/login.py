"""Logging in to a card an agent can trust: PIN flags read first, final-try guard.

Before any PIN is read, the token's flags are checked:
- a locked user PIN stops at once, saying how to unlock it (nothing is sent);
- at "final try", a PIN from TOKENKEYS_PIN or a PIN file is refused unless
  the caller allows it: a stale PIN in a script would lock the card;
- when the PIN will be typed (prompt or PIN pad), the card's label and serial
  are shown first, so that the agent knows which card is in.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tokenkeys.drivers.base import Token
from tokenkeys.errors import PinFinalTry, PinLocked
from tokenkeys.i18n import N_, _
from tokenkeys.types import PinSource, Secret, TokenInfo, given_pin

FINAL_TRY = "user-pin-final-try"
LOCKED = "user-pin-locked"
UNLOCK_HOW = (N_("the security officer unblocks it with the SO (admin) PIN or the card's "
                 "reset code (e.g. `pkcs15-tool --unblock-pin`, or `gpg --card-edit` then "
                 "`admin`, `passwd` on OpenPGP cards); tokenkeys sends nothing to a locked "
                 "card"))


def pin_origin(source: PinSource) -> str:
    """Where `source.read()` would take the PIN from, without reading it."""
    if source.value is not None:
        return "given"
    if source.pinpad:
        return "pinpad"
    if source.file is not None:
        return "file"
    if os.environ.get(source.env_var):  # empty counts as not set (types.PinSource)
        return "env"
    return "prompt"


def describe_card(info: TokenInfo) -> str:
    return f"token {info.label!r} (serial {info.serial})"


def check_before_login(info: TokenInfo, origin: str, *, allow_final_try: bool = False) -> None:
    """Raise before any PIN is sent: PinLocked, or PinFinalTry for an unattended PIN."""
    if LOCKED in info.flags:
        raise PinLocked(_("user PIN"), how=UNLOCK_HOW)
    if FINAL_TRY in info.flags and origin in ("env", "file") and not allow_final_try:
        where = "TOKENKEYS_PIN" if origin == "env" else "the PIN file"
        raise PinFinalTry(where, describe_card(info))


def login(token: Token, source: PinSource, *, allow_final_try: bool = False,
          announce: Callable[[str], None] | None = None) -> Secret | None:
    """Check the flags, show the card when a person types the PIN, log in once.

    Returns the PIN read (None with a PIN pad) so that a batch can hand it to
    worker processes without asking again.
    """
    info = token.info()
    origin = pin_origin(source)
    check_before_login(info, origin, allow_final_try=allow_final_try)
    typed = origin == "pinpad" or (origin == "prompt" and source.interactive)
    if announce is not None and typed:
        final = _(" - FINAL PIN TRY: a wrong PIN locks it") if FINAL_TRY in info.flags else ""
        announce(_("{info} is in{final}").format(info=describe_card(info), final=final))
    pin = source.read()
    token.login(given_pin(pin) if pin is not None else source)
    return pin
