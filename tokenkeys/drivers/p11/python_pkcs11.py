"""Port adapter over python-pkcs11: the fast path for HSMs and SoftHSM2.

It releases the GIL in C_Decrypt, but crashes with two threads on SoftHSM2:
one device thread makes every call (drivers/device_thread.py). It
has no C_InitToken, C_InitPIN or working slot events: those answer
CKR_FUNCTION_NOT_SUPPORTED / no event, and the PyKCS11 adapter does them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pkcs11
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.constants import DEFAULT

from tokenkeys.drivers.p11 import ck
from tokenkeys.drivers.p11.ckr import CKR, CkrError
from tokenkeys.drivers.p11.port import Mech, MechInfo, Obj, SlotToken, Template, load_once
from tokenkeys.errors import ModuleNotFound
from tokenkeys.i18n import _

T = TypeVar("T")
BINDING = "python-pkcs11"
# python-pkcs11 exception class -> CKR name (from its map_rv_to_error).
_CKR_OF: dict[type[p11e.PKCS11Error], str] = {
    p11e.AttributeTypeInvalid: "CKR_ATTRIBUTE_TYPE_INVALID",
    p11e.AttributeValueInvalid: "CKR_ATTRIBUTE_VALUE_INVALID",
    p11e.AttributeReadOnly: "CKR_ATTRIBUTE_READ_ONLY",
    p11e.AttributeSensitive: "CKR_ATTRIBUTE_SENSITIVE",
    p11e.ArgumentsBad: "CKR_ARGUMENTS_BAD",
    p11e.DataInvalid: "CKR_DATA_INVALID",
    p11e.DataLenRange: "CKR_DATA_LEN_RANGE",
    p11e.DomainParamsInvalid: "CKR_DOMAIN_PARAMS_INVALID",
    p11e.DeviceError: "CKR_DEVICE_ERROR",
    p11e.DeviceMemory: "CKR_DEVICE_MEMORY",
    p11e.DeviceRemoved: "CKR_DEVICE_REMOVED",
    p11e.EncryptedDataInvalid: "CKR_ENCRYPTED_DATA_INVALID",
    p11e.EncryptedDataLenRange: "CKR_ENCRYPTED_DATA_LEN_RANGE",
    p11e.ExceededMaxIterations: "CKR_EXCEEDED_MAX_ITERATIONS",
    p11e.FunctionCancelled: "CKR_FUNCTION_CANCELED",
    p11e.FunctionFailed: "CKR_FUNCTION_FAILED",
    p11e.FunctionRejected: "CKR_FUNCTION_REJECTED",
    p11e.FunctionNotSupported: "CKR_FUNCTION_NOT_SUPPORTED",
    p11e.KeyHandleInvalid: "CKR_KEY_HANDLE_INVALID",
    p11e.KeyIndigestible: "CKR_KEY_INDIGESTIBLE",
    p11e.KeyNeeded: "CKR_KEY_NEEDED",
    p11e.KeyNotNeeded: "CKR_KEY_NOT_NEEDED",
    p11e.KeySizeRange: "CKR_KEY_SIZE_RANGE",
    p11e.KeyNotWrappable: "CKR_KEY_NOT_WRAPPABLE",
    p11e.KeyTypeInconsistent: "CKR_KEY_TYPE_INCONSISTENT",
    p11e.KeyUnextractable: "CKR_KEY_UNEXTRACTABLE",
    p11e.GeneralError: "CKR_GENERAL_ERROR",
    p11e.HostMemory: "CKR_HOST_MEMORY",
    p11e.MechanismInvalid: "CKR_MECHANISM_INVALID",
    p11e.MechanismParamInvalid: "CKR_MECHANISM_PARAM_INVALID",
    p11e.NoEvent: "CKR_NO_EVENT",
    p11e.ObjectHandleInvalid: "CKR_OBJECT_HANDLE_INVALID",
    p11e.OperationActive: "CKR_OPERATION_ACTIVE",
    p11e.OperationNotInitialized: "CKR_OPERATION_NOT_INITIALIZED",
    p11e.PinExpired: "CKR_PIN_EXPIRED",
    p11e.PinIncorrect: "CKR_PIN_INCORRECT",
    p11e.PinInvalid: "CKR_PIN_INVALID",
    p11e.PinLenRange: "CKR_PIN_LEN_RANGE",
    p11e.PinLocked: "CKR_PIN_LOCKED",
    p11e.PinTooWeak: "CKR_PIN_TOO_WEAK",
    p11e.PublicKeyInvalid: "CKR_PUBLIC_KEY_INVALID",
    p11e.RandomNoRNG: "CKR_RANDOM_NO_RNG",
    p11e.RandomSeedNotSupported: "CKR_RANDOM_SEED_NOT_SUPPORTED",
    p11e.SessionClosed: "CKR_SESSION_CLOSED",
    p11e.SessionCount: "CKR_SESSION_COUNT",
    p11e.SessionExists: "CKR_SESSION_EXISTS",
    p11e.SessionHandleInvalid: "CKR_SESSION_HANDLE_INVALID",
    p11e.SessionReadOnly: "CKR_SESSION_READ_ONLY",
    p11e.SessionReadOnlyExists: "CKR_SESSION_READ_ONLY_EXISTS",
    p11e.SessionReadWriteSOExists: "CKR_SESSION_READ_WRITE_SO_EXISTS",
    p11e.SignatureLenRange: "CKR_SIGNATURE_LEN_RANGE",
    p11e.SignatureInvalid: "CKR_SIGNATURE_INVALID",
    p11e.TemplateIncomplete: "CKR_TEMPLATE_INCOMPLETE",
    p11e.TemplateInconsistent: "CKR_TEMPLATE_INCONSISTENT",
    p11e.SlotIDInvalid: "CKR_SLOT_ID_INVALID",
    p11e.TokenNotPresent: "CKR_TOKEN_NOT_PRESENT",
    p11e.TokenNotRecognised: "CKR_TOKEN_NOT_RECOGNIZED",
    p11e.TokenWriteProtected: "CKR_TOKEN_WRITE_PROTECTED",
    p11e.UnwrappingKeyHandleInvalid: "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
    p11e.UnwrappingKeySizeRange: "CKR_UNWRAPPING_KEY_SIZE_RANGE",
    p11e.UnwrappingKeyTypeInconsistent: "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT",
    p11e.UserNotLoggedIn: "CKR_USER_NOT_LOGGED_IN",
    p11e.UserAlreadyLoggedIn: "CKR_USER_ALREADY_LOGGED_IN",
    p11e.AnotherUserAlreadyLoggedIn: "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
    p11e.UserPinNotInitialized: "CKR_USER_PIN_NOT_INITIALIZED",
    p11e.UserTooManyTypes: "CKR_USER_TOO_MANY_TYPES",
    p11e.WrappedKeyInvalid: "CKR_WRAPPED_KEY_INVALID",
    p11e.WrappedKeyLenRange: "CKR_WRAPPED_KEY_LEN_RANGE",
    p11e.WrappingKeyHandleInvalid: "CKR_WRAPPING_KEY_HANDLE_INVALID",
    p11e.WrappingKeySizeRange: "CKR_WRAPPING_KEY_SIZE_RANGE",
    p11e.WrappingKeyTypeInconsistent: "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
}
_LIBS: dict[str, Any] = {}
# Attributes python-pkcs11's default templates add that we never want implied.
_NO_DEFAULTS = (Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.SIGN, Attribute.VERIFY,
                Attribute.WRAP, Attribute.UNWRAP, Attribute.DERIVE, Attribute.ID, Attribute.LABEL)


def code_of(exc: p11e.PKCS11Error) -> int:
    return CKR.get(_CKR_OF.get(type(exc), ""), CKR["CKR_GENERAL_ERROR"])


def call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except p11e.PKCS11Error as exc:
        raise CkrError(code_of(exc)) from None


def _load(real: str) -> Any:
    try:
        return pkcs11.lib(real)
    except p11e.PKCS11Error as exc:
        if "already initialized" not in str(exc):
            raise ModuleNotFound(
                _("PKCS#11 module does not load: {real}").format(real=real)) from None
    # PyKCS11 initialised it first in this process (it accepts
    # CKR_CRYPTOKI_ALREADY_INITIALIZED, python-pkcs11 does not): use the
    # function list without a second C_Initialize.
    from pkcs11 import _pkcs11

    lib_type: Any = _pkcs11.lib
    return lib_type.__new__(lib_type, real)


def load_lib(module: str) -> Any:
    """pkcs11.lib of `module`, once per process (a second C_Initialize fails)."""
    return load_once(_LIBS, module, _load)


def _tpl(template: Template) -> dict[Any, Any]:
    return {Attribute(k): v for k, v in template.items()}


def _mech(mech: Mech) -> tuple[Mechanism, Any]:
    if mech.oaep is not None:
        o = mech.oaep
        return Mechanism(mech.mechanism), (Mechanism(o.hash), MGF(o.mgf), o.label)
    if mech.ecdh_point is not None:
        return Mechanism(mech.mechanism), (pkcs11.KDF.NULL, None, mech.ecdh_point)
    return Mechanism(mech.mechanism), None


def _value(attr: int, value: Any) -> Any:
    if value is None:
        return None
    if attr in ck.BOOL_ATTRS:
        return bool(value)
    if attr in ck.INT_ATTRS:
        return int(value)
    if attr in ck.STR_ATTRS:
        return str(value)
    return bytes(value)


class PyPkcs11Session:
    def __init__(self, token: Any, rw: bool) -> None:
        self._token = token
        self._rw = rw
        self._s = call(lambda: token.open(rw=rw))
        self._login: Any = None

    def login(self, pin: str | None, so: bool = False) -> None:
        # python-pkcs11 has no Session.login: a second session carries the login,
        # and login state is per token, so this session is logged in too.
        secret: Any = pkcs11.PROTECTED_AUTH if pin is None else pin
        kw = {"so_pin": secret} if so else {"user_pin": secret}
        self._login = call(lambda: self._token.open(rw=True, **kw))

    def logout(self) -> None:
        login, self._login = self._login, None
        if login is not None:
            call(login.close)  # closing the login session logs the token out

    def close(self) -> None:
        for s in (self._login, self._s):
            if s is not None:
                with contextlib.suppress(p11e.PKCS11Error):
                    s.close()
        self._login = None

    def find(self, template: Template) -> list[Obj]:
        return call(lambda: list(self._s.get_objects(_tpl(template))))

    def get(self, obj: Obj, attrs: Sequence[int]) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for a in attrs:
            try:
                out[a] = _value(a, obj[Attribute(a)])
            except (p11e.AttributeTypeInvalid, p11e.AttributeSensitive):
                out[a] = None
            except p11e.PKCS11Error as exc:
                raise CkrError(code_of(exc)) from None
        return out

    def set(self, obj: Obj, template: Template) -> None:
        def run() -> None:
            for k, v in template.items():
                obj[Attribute(k)] = v
        call(run)

    def generate_key_pair(self, mech: Mech, public: Template, private: Template
                          ) -> tuple[Obj, Obj]:
        key_type = KeyType.RSA if mech.mechanism == ck.CKM_RSA_PKCS_KEY_PAIR_GEN else KeyType.EC
        bits = public.get(ck.CKA_MODULUS_BITS)
        pair: tuple[Obj, Obj] = call(lambda: self._s.generate_keypair(
            key_type, bits, store=True, capabilities=0, mechanism=Mechanism(mech.mechanism),
            public_template=_tpl(public), private_template=_tpl(private)))
        return pair

    def generate_key(self, mech: Mech, template: Template) -> Obj:
        length = int(template.get(ck.CKA_VALUE_LEN, 32)) * 8
        tpl = {a: DEFAULT for a in _NO_DEFAULTS} | _tpl(template)
        return call(lambda: self._s.generate_key(
            KeyType(template[ck.CKA_KEY_TYPE]), length, capabilities=0,
            mechanism=Mechanism(mech.mechanism), template=tpl))

    def create(self, template: Template) -> Obj:
        return call(lambda: self._s.create_object(_tpl(template)))

    def destroy(self, obj: Obj) -> None:
        call(obj.destroy)

    def decrypt(self, key: Obj, mech: Mech, data: bytes) -> bytes:
        m, p = _mech(mech)
        return bytes(call(lambda: key.decrypt(data, mechanism=m, mechanism_param=p)))

    def sign(self, key: Obj, mech: Mech, data: bytes) -> bytes:
        m, p = _mech(mech)
        return bytes(call(lambda: key.sign(data, mechanism=m, mechanism_param=p)))

    def derive(self, key: Obj, mech: Mech, template: Template) -> Obj:
        m, p = _mech(mech)
        length = int(template[ck.CKA_VALUE_LEN]) * 8
        tpl = {a: DEFAULT for a in _NO_DEFAULTS} | _tpl(template)
        return call(lambda: key.derive_key(
            KeyType(template[ck.CKA_KEY_TYPE]), length, mechanism=m, mechanism_param=p,
            capabilities=0, template=tpl))

    def wrap(self, wrapping_key: Obj, key: Obj, mech: Mech) -> bytes:
        m, p = _mech(mech)
        return bytes(call(lambda: wrapping_key.wrap_key(key, mechanism=m, mechanism_param=p)))

    def unwrap(self, unwrapping_key: Obj, mech: Mech, data: bytes, template: Template) -> Obj:
        m, p = _mech(mech)
        # The default unwrap template adds usage attributes SoftHSM rejects (docs/drivers.md).
        tpl = {a: DEFAULT for a in _NO_DEFAULTS} | _tpl(template)
        return call(lambda: unwrapping_key.unwrap_key(
            ObjectClass(template[ck.CKA_CLASS]), KeyType(template[ck.CKA_KEY_TYPE]), data,
            mechanism=m, mechanism_param=p, store=bool(template.get(ck.CKA_TOKEN, False)),
            capabilities=0, template=tpl))

    def init_pin(self, pin: str) -> None:
        raise CkrError(CKR["CKR_FUNCTION_NOT_SUPPORTED"])


class PyPkcs11Port:
    binding = BINDING

    def __init__(self, module: str) -> None:
        self.module = module
        self._lib = load_lib(module)

    def _slot(self, slot: int) -> Any:
        for s in call(lambda: self._lib.get_slots(token_present=True)):
            if int(s.slot_id) == slot:
                return s
        raise CkrError(CKR["CKR_SLOT_ID_INVALID"])

    def slots(self) -> list[int]:
        return [int(s.slot_id) for s in call(lambda: self._lib.get_slots(token_present=True))]

    def token(self, slot: int) -> SlotToken:
        t = call(lambda: self._slot(slot).get_token())
        return SlotToken(slot, t.label.strip(), t.manufacturer_id.strip(), t.model.strip(),
                         bytes(t.serial).decode("ascii", "replace").strip(), int(t.flags))

    def mechanisms(self, slot: int) -> frozenset[str]:
        codes = call(lambda: self._slot(slot).get_mechanisms())
        return frozenset(m.name.lstrip("_") if isinstance(m, Mechanism) else f"0x{int(m):08X}"
                         for m in codes)

    def mechanism_info(self, slot: int, mechanism: int) -> MechInfo | None:
        try:
            info = self._slot(slot).get_mechanism_info(Mechanism(mechanism))
        except (p11e.PKCS11Error, ValueError, CkrError):
            return None
        return MechInfo(int(info.min_key_length), int(info.max_key_length), int(info.flags))

    def open_session(self, slot: int, rw: bool = True) -> PyPkcs11Session:
        token = call(lambda: self._slot(slot).get_token())
        return PyPkcs11Session(token, rw)

    def init_token(self, slot: int, so_pin: str, label: str) -> None:
        raise CkrError(CKR["CKR_FUNCTION_NOT_SUPPORTED"])

    def slot_event(self) -> bool:
        return False  # its wait_for_slot_event is broken (docs/drivers.md)

    def reinitialise(self) -> None:
        call(self._lib.reinitialize)
