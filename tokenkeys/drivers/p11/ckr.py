"""The one CKR -> error-tree table, for both adapters.

Each adapter turns its binding's exception into CkrError(code); the token maps
that code here, once. PINs never reach a message: bindings report only the CKR.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from tokenkeys.errors import (
    DeviceError,
    DeviceRemoved,
    KeyNotFound,
    MechanismUnsupported,
    PinLocked,
    PinMissing,
    TokenKeysError,
    TokenNotFound,
)
from tokenkeys.i18n import N_, _

T = TypeVar("T")

CKR: dict[str, int] = {
    "CKR_ATTRIBUTE_TYPE_INVALID": 0x12,
    "CKR_ATTRIBUTE_VALUE_INVALID": 0x13,
    "CKR_ATTRIBUTE_READ_ONLY": 0x10,
    "CKR_ATTRIBUTE_SENSITIVE": 0x11,
    "CKR_ARGUMENTS_BAD": 0x7,
    "CKR_BUFFER_TOO_SMALL": 0x150,
    "CKR_CRYPTOKI_ALREADY_INITIALIZED": 0x191,
    "CKR_CRYPTOKI_NOT_INITIALIZED": 0x190,
    "CKR_DATA_INVALID": 0x20,
    "CKR_DATA_LEN_RANGE": 0x21,
    "CKR_DOMAIN_PARAMS_INVALID": 0x130,
    "CKR_DEVICE_ERROR": 0x30,
    "CKR_DEVICE_MEMORY": 0x31,
    "CKR_DEVICE_REMOVED": 0x32,
    "CKR_ENCRYPTED_DATA_INVALID": 0x40,
    "CKR_ENCRYPTED_DATA_LEN_RANGE": 0x41,
    "CKR_EXCEEDED_MAX_ITERATIONS": 0x1B5,
    "CKR_FUNCTION_CANCELED": 0x50,
    "CKR_FUNCTION_FAILED": 0x6,
    "CKR_FUNCTION_REJECTED": 0x200,
    "CKR_FUNCTION_NOT_SUPPORTED": 0x54,
    "CKR_KEY_HANDLE_INVALID": 0x60,
    "CKR_KEY_INDIGESTIBLE": 0x67,
    "CKR_KEY_NEEDED": 0x66,
    "CKR_KEY_NOT_NEEDED": 0x64,
    "CKR_KEY_SIZE_RANGE": 0x62,
    "CKR_KEY_NOT_WRAPPABLE": 0x69,
    "CKR_KEY_TYPE_INCONSISTENT": 0x63,
    "CKR_KEY_UNEXTRACTABLE": 0x6A,
    "CKR_GENERAL_ERROR": 0x5,
    "CKR_HOST_MEMORY": 0x2,
    "CKR_MECHANISM_INVALID": 0x70,
    "CKR_MECHANISM_PARAM_INVALID": 0x71,
    "CKR_OBJECT_HANDLE_INVALID": 0x82,
    "CKR_OPERATION_ACTIVE": 0x90,
    "CKR_OPERATION_NOT_INITIALIZED": 0x91,
    "CKR_PIN_EXPIRED": 0xA3,
    "CKR_PIN_INCORRECT": 0xA0,
    "CKR_PIN_INVALID": 0xA1,
    "CKR_PIN_LEN_RANGE": 0xA2,
    "CKR_PIN_LOCKED": 0xA4,
    "CKR_PIN_TOO_WEAK": 0x1B8,
    "CKR_PUBLIC_KEY_INVALID": 0x1B9,
    "CKR_RANDOM_NO_RNG": 0x121,
    "CKR_RANDOM_SEED_NOT_SUPPORTED": 0x120,
    "CKR_SESSION_CLOSED": 0xB0,
    "CKR_SESSION_COUNT": 0xB1,
    "CKR_SESSION_EXISTS": 0xB6,
    "CKR_SESSION_HANDLE_INVALID": 0xB3,
    "CKR_SESSION_PARALLEL_NOT_SUPPORTED": 0xB4,
    "CKR_SESSION_READ_ONLY": 0xB5,
    "CKR_SESSION_READ_ONLY_EXISTS": 0xB7,
    "CKR_SESSION_READ_WRITE_SO_EXISTS": 0xB8,
    "CKR_SIGNATURE_LEN_RANGE": 0xC1,
    "CKR_SIGNATURE_INVALID": 0xC0,
    "CKR_TEMPLATE_INCOMPLETE": 0xD0,
    "CKR_TEMPLATE_INCONSISTENT": 0xD1,
    "CKR_SLOT_ID_INVALID": 0x3,
    "CKR_TOKEN_NOT_PRESENT": 0xE0,
    "CKR_TOKEN_NOT_RECOGNIZED": 0xE1,
    "CKR_TOKEN_WRITE_PROTECTED": 0xE2,
    "CKR_UNWRAPPING_KEY_HANDLE_INVALID": 0xF0,
    "CKR_UNWRAPPING_KEY_SIZE_RANGE": 0xF1,
    "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT": 0xF2,
    "CKR_USER_NOT_LOGGED_IN": 0x101,
    "CKR_USER_ALREADY_LOGGED_IN": 0x100,
    "CKR_USER_ANOTHER_ALREADY_LOGGED_IN": 0x104,
    "CKR_USER_PIN_NOT_INITIALIZED": 0x102,
    "CKR_USER_TOO_MANY_TYPES": 0x105,
    "CKR_USER_TYPE_INVALID": 0x103,
    "CKR_WRAPPED_KEY_INVALID": 0x110,
    "CKR_WRAPPED_KEY_LEN_RANGE": 0x112,
    "CKR_WRAPPING_KEY_HANDLE_INVALID": 0x113,
    "CKR_WRAPPING_KEY_SIZE_RANGE": 0x114,
    "CKR_WRAPPING_KEY_TYPE_INCONSISTENT": 0x115,
    "CKR_OK": 0x0,
    "CKR_KEY_FUNCTION_NOT_PERMITTED": 0x68,
    "CKR_NO_EVENT": 0x8,
}
NAMES: dict[int, str] = {v: k for k, v in CKR.items()}


class CkrError(Exception):
    """A binding call failed with this CKR code (raised by the adapters only)."""

    def __init__(self, code: int) -> None:
        super().__init__(ckr_name(code))
        self.code = code


def ckr_name(code: int) -> str:
    return NAMES.get(code, f"CKR 0x{code:08X}")


REMOVED = (N_("the card was removed from its reader (or the device was reset): insert it and "
              "run the command again"))
_C = CKR
# CKR -> (tree class, one-line reason). Absent: DeviceError naming the CKR.
ERRORS: dict[int, tuple[type[TokenKeysError], str]] = {
    _C["CKR_DEVICE_REMOVED"]: (DeviceRemoved, REMOVED),
    _C["CKR_TOKEN_NOT_PRESENT"]: (DeviceRemoved, REMOVED),
    _C["CKR_TOKEN_NOT_RECOGNIZED"]: (TokenNotFound, N_("the device in the reader is not "
                                                       "recognised")),
    _C["CKR_SLOT_ID_INVALID"]: (DeviceRemoved, REMOVED),
    _C["CKR_SESSION_HANDLE_INVALID"]: (TokenNotFound, N_("the session with the device was lost")),
    _C["CKR_SESSION_CLOSED"]: (TokenNotFound, N_("the session with the device was lost")),
    _C["CKR_KEY_HANDLE_INVALID"]: (KeyNotFound, N_("the key is no longer on the device")),
    _C["CKR_OBJECT_HANDLE_INVALID"]: (KeyNotFound, N_("the key is no longer on the device")),
    _C["CKR_PIN_LOCKED"]: (PinLocked, ""),
    _C["CKR_USER_NOT_LOGGED_IN"]: (PinMissing, ""),
    _C["CKR_MECHANISM_INVALID"]: (MechanismUnsupported, ""),
    _C["CKR_MECHANISM_PARAM_INVALID"]: (MechanismUnsupported, ""),
    _C["CKR_KEY_TYPE_INCONSISTENT"]: (MechanismUnsupported, ""),
    _C["CKR_KEY_FUNCTION_NOT_PERMITTED"]: (MechanismUnsupported, ""),
    _C["CKR_KEY_SIZE_RANGE"]: (MechanismUnsupported, ""),
    _C["CKR_FUNCTION_NOT_SUPPORTED"]: (MechanismUnsupported, ""),
    _C["CKR_DEVICE_ERROR"]: (DeviceError, N_("the device reported an internal error")),
    _C["CKR_TOKEN_WRITE_PROTECTED"]: (DeviceError, N_("the token is write-protected")),
    _C["CKR_DEVICE_MEMORY"]: (DeviceError, N_("the token is full")),
    _C["CKR_TEMPLATE_INCONSISTENT"]: (DeviceError, N_("the token refused the object's "
                                                      "attributes")),
    _C["CKR_TEMPLATE_INCOMPLETE"]: (DeviceError, N_("the token refused the object's attributes")),
    _C["CKR_ATTRIBUTE_VALUE_INVALID"]: (DeviceError, N_("the token refused an attribute value")),
    _C["CKR_ATTRIBUTE_SENSITIVE"]: (DeviceError, N_("the attribute is sensitive")),
    _C["CKR_KEY_UNEXTRACTABLE"]: (DeviceError, N_("the key cannot leave the device")),
}
# What a device may answer when it is pulled out in the middle of a call, besides
# CKR_DEVICE_REMOVED (OpenSC 0.23 with a card pulled out: CKR_GENERAL_ERROR, or
# CKR_OPERATION_ACTIVE for the next call). Ambiguous: the token asks the reader whether
# the card is still in before naming the error (Profile.removal_codes, P11Token.explain).
MAYBE_REMOVED = frozenset(_C[n] for n in (
    "CKR_GENERAL_ERROR", "CKR_OPERATION_ACTIVE", "CKR_DEVICE_ERROR", "CKR_FUNCTION_FAILED",
    "CKR_SESSION_HANDLE_INVALID", "CKR_SESSION_CLOSED",
))
# Answers of a decryption the device performed that speak of the ciphertext only
# (bad padding, wrong length), on any device: the v1.5 countermeasure hides these
# and a profile's padding_codes, nothing else (Profile.is_padding_outcome).
PADDING_OUTCOME = frozenset(_C[n] for n in (
    "CKR_ENCRYPTED_DATA_INVALID", "CKR_ENCRYPTED_DATA_LEN_RANGE", "CKR_DATA_INVALID",
    "CKR_DATA_LEN_RANGE", "CKR_FUNCTION_FAILED", "CKR_ARGUMENTS_BAD",
))
# "Not these parameters": the negotiator falls back (raw RSA + software OAEP).
REFUSALS = frozenset(_C[n] for n in (
    "CKR_MECHANISM_INVALID", "CKR_MECHANISM_PARAM_INVALID", "CKR_ARGUMENTS_BAD",
))


def to_error(code: int, what: str, offered: Sequence[str] = ()) -> TokenKeysError:
    cls, reason = ERRORS.get(code, (DeviceError, ""))
    if cls is PinLocked:
        return PinLocked()
    if cls is PinMissing:
        return PinMissing(_("user login (call login first)"))
    if cls is MechanismUnsupported:
        return MechanismUnsupported(_("{what} ({code})").format(what=what, code=ckr_name(code)),
                                    offered)
    return cls(_("{what}: {reason}").format(what=what,
                                            reason=_(reason) if reason else ckr_name(code)))


@contextmanager
def ckr_errors(what: str, offered: Sequence[str] = ()) -> Iterator[None]:
    """Port calls in this block raise the error tree instead of CkrError."""
    try:
        yield
    except CkrError as exc:
        raise to_error(exc.code, what, offered) from None


def guard(fn: Callable[[], T], what: str, offered: Sequence[str] = ()) -> T:
    """Run a port call, turning CkrError into the error tree."""
    with ckr_errors(what, offered):
        return fn()
