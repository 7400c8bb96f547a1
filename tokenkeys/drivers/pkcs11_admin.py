"""Token administration on PyKCS11: python-pkcs11 0.10 has no C_InitToken.

Run as `python -m tokenkeys.drivers.pkcs11_admin MODULE LABEL`: the SO PIN and
user PIN come from TOKENKEYS_SO_PIN / TOKENKEYS_PIN, never from argv.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

import PyKCS11

from tokenkeys.drivers.pkcs11_tables import token_flag_words
from tokenkeys.errors import (
    DeviceError,
    ModuleNotFound,
    PinMissing,
    PolicyRefused,
    TokenKeysError,
    TokenNotFound,
    UsageError,
)
from tokenkeys.types import Secret, TokenInfo

LABEL_LEN = 32  # CK_TOKEN_INFO.label is 32 blank-padded bytes
_RV_MESSAGES = {
    PyKCS11.CKR_PIN_INCORRECT: "SO PIN incorrect",
    PyKCS11.CKR_PIN_LOCKED: "SO PIN locked",
    PyKCS11.CKR_PIN_LEN_RANGE: "PIN length out of the token's range",
    PyKCS11.CKR_SESSION_EXISTS: "the token has open sessions; close them first",
    PyKCS11.CKR_FUNCTION_NOT_SUPPORTED: "the token does not support initialisation",
}


def _device_error(exc: PyKCS11.PyKCS11Error, what: str) -> TokenKeysError:
    # str(exc) is only the CKR name and code: never the PIN.
    msg = _RV_MESSAGES.get(exc.value, str(exc))
    return DeviceError(f"{what}: {msg}")


# Kept for the process: PyKCS11 calls C_Finalize when a lib object is collected,
# which would also end python-pkcs11's use of the same module in this process.
_LIBS: dict[str, Any] = {}


def load_pykcs11(module: str) -> Any:
    module = os.path.realpath(module)
    if module in _LIBS:
        return _LIBS[module]
    if not os.path.exists(module):
        raise ModuleNotFound(f"PKCS#11 module not found: {module}")
    # python-pkcs11 fails on CKR_CRYPTOKI_ALREADY_INITIALIZED but PyKCS11 accepts
    # it, so python-pkcs11 must initialise the module first in a shared process.
    from tokenkeys.drivers.pkcs11 import load_lib

    load_lib(module)
    lib = PyKCS11.PyKCS11Lib()
    try:
        lib.load(module)
    except PyKCS11.PyKCS11Error:
        raise ModuleNotFound(f"PKCS#11 module does not load: {module}") from None
    _LIBS[module] = lib
    return lib


def _pad_label(label: str) -> str:
    raw = label.encode("utf-8")
    if not raw or len(raw) > LABEL_LEN:
        raise UsageError(f"token label must be 1-{LABEL_LEN} bytes of UTF-8: {label!r}")
    return label + " " * (LABEL_LEN - len(raw))


def _info(lib: Any, module: str, slot: int) -> TokenInfo:
    ti = lib.getTokenInfo(slot)
    return TokenInfo(
        label=ti.label.strip(),
        manufacturer=ti.manufacturerID.strip(),
        model=ti.model.strip(),
        serial=ti.serialNumber.strip(),
        module=module,
        slot=slot,
        flags=token_flag_words(int(ti.flags)),
    )


def _token_infos(lib: Any) -> list[tuple[int, Any]]:
    """(slot, CK_TOKEN_INFO) of readable slots. A token another process is writing
    can answer CKR_GENERAL_ERROR for a moment (SoftHSM file store): skip it."""
    infos = []
    for slot in lib.getSlotList(tokenPresent=True):
        try:
            infos.append((int(slot), lib.getTokenInfo(slot)))
        except PyKCS11.PyKCS11Error:
            continue
    return infos


def find_token_slot(lib: Any, label: str) -> int | None:
    """Slot of the initialised token labelled `label`, or None."""
    for slot, ti in _token_infos(lib):
        if ti.flags & PyKCS11.CKF_TOKEN_INITIALIZED and ti.label.strip() == label:
            return slot
    return None


def init_token(
    module: str, label: str, so_pin: Secret, user_pin: Secret, slot: int | None = None
) -> TokenInfo:
    """C_InitToken + C_InitPIN. Slot ids change afterwards, so the result is found by label."""
    padded = _pad_label(label)
    lib = load_pykcs11(module)
    try:
        if find_token_slot(lib, label) is not None:
            raise PolicyRefused(
                f"a token labelled {label!r} already exists in {module}: labels name tokens, "
                "so they must be unique"
            )
        infos = dict(_token_infos(lib))
        if slot is not None and slot in infos and infos[slot].flags & PyKCS11.CKF_TOKEN_INITIALIZED:
            raise PolicyRefused(
                f"token {infos[slot].label.strip()!r} in slot {slot} is already initialised; "
                "re-initialising would erase every key on it"
            )
        if slot is None:
            free = [
                s for s, ti in _token_infos(lib) if not ti.flags & PyKCS11.CKF_TOKEN_INITIALIZED
            ]
            if not free:
                raise TokenNotFound(f"no uninitialised token in {module}")
            slot = int(free[0])
        try:
            lib.initToken(slot, so_pin.reveal(), padded)
        except PyKCS11.PyKCS11Error as exc:
            raise _device_error(exc, f"cannot initialise token {label!r}") from None
        new_slot = find_token_slot(lib, label)
        if new_slot is None:
            raise DeviceError(f"token {label!r} not visible after initialisation")
        session = lib.openSession(new_slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
        try:
            session.login(so_pin.reveal(), PyKCS11.CKU_SO)
            session.initPin(user_pin.reveal())
            session.logout()
        except PyKCS11.PyKCS11Error as exc:
            raise _device_error(exc, f"cannot set the user PIN of {label!r}") from None
        finally:
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                session.closeSession()
        return _info(lib, module, new_slot)
    except PyKCS11.PyKCS11Error as exc:
        raise _device_error(exc, f"token initialisation in {module} failed") from None


def _env_secret(var: str) -> Secret:
    value = os.environ.get(var)
    if not value:
        raise PinMissing(var)
    return Secret(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokenkeys.drivers.pkcs11_admin",
        description="Initialise a token. PINs from TOKENKEYS_SO_PIN and TOKENKEYS_PIN.",
    )
    parser.add_argument("module")
    parser.add_argument("label")
    parser.add_argument("--slot", type=int, default=None)
    parser.add_argument("--if-missing", action="store_true", help="leave an existing token alone")
    args = parser.parse_args(argv)
    try:
        if args.if_missing:
            lib = load_pykcs11(args.module)
            slot = find_token_slot(lib, args.label)
            if slot is not None:
                print(f"token {args.label!r} exists (slot {slot}); left alone")
                return 0
        info = init_token(
            args.module,
            args.label,
            _env_secret("TOKENKEYS_SO_PIN"),
            _env_secret("TOKENKEYS_PIN"),
            args.slot,
        )
    except TokenKeysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"token {info.label!r} initialised (serial {info.serial}, slot {info.slot})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
