"""Token initialisation (C_InitToken + C_InitPIN), through PyKCS11: python-pkcs11 has none.

Run as `python -m tokenkeys.drivers.p11.admin MODULE LABEL`: the SO PIN and user
PIN come from TOKENKEYS_SO_PIN / TOKENKEYS_PIN, never from argv.
"""

from __future__ import annotations

import argparse
import os
import sys

from tokenkeys.drivers.p11 import ck, discovery
from tokenkeys.drivers.p11.ckr import CKR, CkrError
from tokenkeys.drivers.p11.port import Port, SlotToken
from tokenkeys.errors import (
    DeviceError,
    PinMissing,
    PolicyRefused,
    TokenKeysError,
    TokenNotFound,
    UsageError,
)
from tokenkeys.i18n import N_, _
from tokenkeys.types import Secret, TokenInfo

LABEL_LEN = 32
_MESSAGES = {
    CKR["CKR_PIN_INCORRECT"]: N_("SO PIN incorrect"),
    CKR["CKR_PIN_LOCKED"]: N_("SO PIN locked"),
    CKR["CKR_PIN_LEN_RANGE"]: N_("PIN length out of the token's range"),
    CKR["CKR_SESSION_EXISTS"]: N_("the token has open sessions; close them first"),
    CKR["CKR_FUNCTION_NOT_SUPPORTED"]: N_("the token does not support initialisation"),
}


def _device_error(exc: CkrError, what: str) -> DeviceError:
    reason = _MESSAGES.get(exc.code)
    return DeviceError(_("{what}: {reason}").format(what=what,
                                                    reason=_(reason) if reason else str(exc)))


def check_label(label: str) -> None:
    raw = label.encode("utf-8")
    if not raw or len(raw) > LABEL_LEN:
        raise UsageError(_("token label must be 1-{LABEL_LEN} bytes of UTF-8: {label!r}")
                         .format(LABEL_LEN=LABEL_LEN, label=label))


def check_pin_policy(st: SlotToken, so_pin: Secret, user_pin: Secret) -> None:
    """Before C_InitToken: a PIN the token would refuse must not leave it half-initialised."""
    low, high = st.min_pin or 1, st.max_pin or 255
    for what, pin in (("SO PIN", so_pin), ("user PIN", user_pin)):
        n = len(pin.reveal().encode("utf-8"))
        if n < low:
            raise UsageError(
                _("the {what} is too short: this token needs {low} to {high} characters")
                .format(what=what, low=low, high=high))
        if n > high:
            raise UsageError(_("the {what} is too long: this token needs {low} to {high} "
                               "characters").format(what=what, low=low, high=high))


def _tokens(port: Port) -> list[SlotToken]:
    """Every readable slot's token. One another process is writing can answer
    CKR_GENERAL_ERROR for a moment (SoftHSM file store): skip it."""
    out = []
    for slot in port.slots():
        try:
            out.append(port.token(slot))
        except CkrError:
            continue
    return out


def find_token_slot(port: Port, label: str) -> int | None:
    for st in _tokens(port):
        if st.flags & ck.CKF_TOKEN_INITIALIZED and st.label == label:
            return st.slot
    return None


def init_token(module: str, label: str, so_pin: Secret, user_pin: Secret,
               slot: int | None = None) -> TokenInfo:
    """C_InitToken + C_InitPIN. Slot ids change afterwards, so the result is found by label."""
    check_label(label)
    port = discovery.port_for(module, discovery.PYKCS11)
    try:
        if find_token_slot(port, label) is not None:
            raise PolicyRefused(_("a token labelled {label!r} already exists in {module}: "
                                  "labels name tokens, so they must be unique")
                                .format(label=label, module=module))
        tokens = {st.slot: st for st in _tokens(port)}
        if slot is not None and slot in tokens and tokens[slot].flags & ck.CKF_TOKEN_INITIALIZED:
            raise PolicyRefused(_("token {label!r} in slot {slot} is already initialised; "
                                  "re-initialising would erase every key on it")
                                .format(label=tokens[slot].label, slot=slot))
        if slot is None:
            free = [s for s, st in tokens.items() if not st.flags & ck.CKF_TOKEN_INITIALIZED]
            if not free:
                raise TokenNotFound(_("no uninitialised token in {module}").format(module=module))
            slot = free[0]
        if slot in tokens:
            check_pin_policy(tokens[slot], so_pin, user_pin)
        try:
            port.init_token(slot, so_pin.reveal(), label)
        except CkrError as exc:
            raise _device_error(
                exc, _("cannot initialise token {label!r}").format(label=label)) from None
        new_slot = find_token_slot(port, label)
        if new_slot is None:
            raise DeviceError(_("token {label!r} not visible after initialisation")
                              .format(label=label))
        session = port.open_session(new_slot, rw=True)
        try:
            session.login(so_pin.reveal(), so=True)
            session.init_pin(user_pin.reveal())
            session.logout()
        except CkrError as exc:
            raise _device_error(
                exc, _("cannot set the user PIN of {label!r}").format(label=label)) from None
        finally:
            session.close()
        return discovery.token_info(port.token(new_slot), module)
    except CkrError as exc:
        raise _device_error(exc, _("token initialisation in {module} failed")
                                 .format(module=module)) from None


def _env_secret(var: str) -> Secret:
    value = os.environ.get(var)
    if not value:
        raise PinMissing(var)
    return Secret(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokenkeys.drivers.p11.admin",
        description="Initialise a token. PINs from TOKENKEYS_SO_PIN and TOKENKEYS_PIN.")
    parser.add_argument("module")
    parser.add_argument("label")
    parser.add_argument("--slot", type=int, default=None)
    parser.add_argument("--if-missing", action="store_true", help="leave an existing token alone")
    args = parser.parse_args(argv)
    try:
        if args.if_missing:
            slot = find_token_slot(discovery.port_for(args.module, discovery.PYKCS11), args.label)
            if slot is not None:
                print(_("token {label!r} exists (slot {slot}); left alone")
                      .format(label=args.label, slot=slot))
                return 0
        info = init_token(args.module, args.label, _env_secret("TOKENKEYS_SO_PIN"),
                          _env_secret("TOKENKEYS_PIN"), args.slot)
    except TokenKeysError as exc:
        print(_("error: {exc}").format(exc=exc), file=sys.stderr)
        return exc.exit_code
    print(_("token {label!r} initialised (serial {serial}, slot {slot})")
          .format(label=info.label, serial=info.serial, slot=info.slot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
