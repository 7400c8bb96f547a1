"""Port adapter over PyKCS11: OpenSC cards, C_InitToken/C_InitPIN and slot events.

It initialises with CKF_OS_LOCKING_OK (thread-safe) but holds the GIL, so it
is not the batch fast path. A blocking slot wait would hold the GIL: events
are polled with CKF_DONT_BLOCK.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import PyKCS11

from tokenkeys.drivers.p11 import ck
from tokenkeys.drivers.p11.ckr import CKR, CkrError
from tokenkeys.drivers.p11.port import Mech, MechInfo, Obj, SlotToken, Template, load_once
from tokenkeys.errors import ModuleNotFound
from tokenkeys.i18n import _

T = TypeVar("T")
BINDING = "pykcs11"
LABEL_LEN = 32  # CK_TOKEN_INFO.label: 32 blank-padded bytes; initToken does not pad
# Kept for the process: PyKCS11 calls C_Finalize when a lib object is collected,
# which would also end python-pkcs11's use of the same module in this process.
_LIBS: dict[str, Any] = {}


# PyKCS11 names 0x1040 by its PKCS#11 2.11 name; python-pkcs11 and the rest of
# tokenkeys by the current one, so both bindings report the same set.
_CANONICAL = {"ECDSA_KEY_PAIR_GEN": "EC_KEY_PAIR_GEN"}


def call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except PyKCS11.PyKCS11Error as exc:
        raise CkrError(int(exc.value)) from None


def _check(rv: int) -> None:
    if rv != CKR["CKR_OK"]:
        raise CkrError(int(rv))


def _load(real: str) -> Any:
    lib = PyKCS11.PyKCS11Lib()
    try:
        lib.load(real)
    except PyKCS11.PyKCS11Error:
        raise ModuleNotFound(_("PKCS#11 module does not load: {real}").format(real=real)) from None
    return lib


def _tpl(template: Template) -> list[tuple[int, Any]]:
    return [(k, v) for k, v in template.items()]


def _mech(mech: Mech) -> Any:
    if mech.oaep is not None:
        o = mech.oaep
        return PyKCS11.RSAOAEPMechanism(o.hash, o.mgf, o.label)
    if mech.ecdh_point is not None:
        return PyKCS11.ECDH1_DERIVE_Mechanism(mech.ecdh_point, PyKCS11.CKD_NULL)
    return PyKCS11.Mechanism(mech.mechanism, None)


def _value(attr: int, raw: Any) -> Any:
    if raw is None:
        return None
    data = bytes(raw)
    if attr in ck.BOOL_ATTRS:
        return any(data)
    if attr in ck.INT_ATTRS:
        return int.from_bytes(data, "little")  # CK_ULONG, host order
    if attr in ck.STR_ATTRS:
        return data.decode("utf-8", "replace")
    return data


class PyKcs11Session:
    def __init__(self, lib: Any, slot: int, rw: bool) -> None:
        flags = PyKCS11.CKF_SERIAL_SESSION | (PyKCS11.CKF_RW_SESSION if rw else 0)
        self._s = call(lambda: lib.openSession(slot, flags))

    def login(self, pin: str | None, so: bool = False) -> None:
        # None: the reader's PIN pad (protected authentication path) asks for it.
        call(lambda: self._s.login(pin, PyKCS11.CKU_SO if so else PyKCS11.CKU_USER))

    def logout(self) -> None:
        call(self._s.logout)

    def close(self) -> None:
        with contextlib.suppress(PyKCS11.PyKCS11Error):
            self._s.closeSession()

    def find(self, template: Template) -> list[Obj]:
        return call(lambda: list(self._s.findObjects(_tpl(template))))

    def get(self, obj: Obj, attrs: Sequence[int]) -> dict[int, Any]:
        values = call(lambda: self._s.getAttributeValue(obj, list(attrs), allAsBinary=True))
        return {a: _value(a, v) for a, v in zip(attrs, values, strict=True)}

    def set(self, obj: Obj, template: Template) -> None:
        call(lambda: self._s.setAttributeValue(obj, _tpl(template)))

    def generate_key_pair(self, mech: Mech, public: Template, private: Template
                          ) -> tuple[Obj, Obj]:
        pair: tuple[Obj, Obj] = call(lambda: self._s.generateKeyPair(
            _tpl(public), _tpl(private), mecha=_mech(mech)))
        return pair

    def generate_key(self, mech: Mech, template: Template) -> Obj:
        return call(lambda: self._s.generateKey(_tpl(template), mecha=_mech(mech)))

    def create(self, template: Template) -> Obj:
        return call(lambda: self._s.createObject(_tpl(template)))

    def destroy(self, obj: Obj) -> None:
        call(lambda: self._s.destroyObject(obj))

    def decrypt(self, key: Obj, mech: Mech, data: bytes) -> bytes:
        """C_DecryptInit, then ONE C_Decrypt into a buffer as long as the input (an RSA
        plaintext never is longer). PyKCS11's Session.decrypt asks for the length
        first: on a card that decrypts twice, and OpenSC 0.23 leaves the operation
        active when that length query fails, so every later C_DecryptInit of the
        session answers CKR_OPERATION_ACTIVE. A call with a buffer ends it."""
        low, session = self._s.lib, self._s.session

        def run() -> bytes:
            _check(low.C_DecryptInit(session, _mech(mech).to_native(), key))
            out = PyKCS11.ckbytelist(bytes(len(data)))
            rv = low.C_Decrypt(session, PyKCS11.ckbytelist(data), out)
            if rv == CKR["CKR_BUFFER_TOO_SMALL"]:  # not RSA: ask the length (ends it)
                out = PyKCS11.ckbytelist()
                _check(low.C_Decrypt(session, PyKCS11.ckbytelist(data), out))
                rv = low.C_Decrypt(session, PyKCS11.ckbytelist(data), out)
            _check(rv)
            return bytes(out)

        return call(run)

    def sign(self, key: Obj, mech: Mech, data: bytes) -> bytes:
        return bytes(call(lambda: self._s.sign(key, data, _mech(mech))))

    def derive(self, key: Obj, mech: Mech, template: Template) -> Obj:
        return call(lambda: self._s.deriveKey(key, _tpl(template), _mech(mech)))

    def wrap(self, wrapping_key: Obj, key: Obj, mech: Mech) -> bytes:
        return bytes(call(lambda: self._s.wrapKey(wrapping_key, key, _mech(mech))))

    def unwrap(self, unwrapping_key: Obj, mech: Mech, data: bytes, template: Template) -> Obj:
        return call(lambda: self._s.unwrapKey(unwrapping_key, data, _tpl(template), _mech(mech)))

    def init_pin(self, pin: str) -> None:
        call(lambda: self._s.initPin(pin))


class PyKcs11Port:
    binding = BINDING

    def __init__(self, module: str) -> None:
        self.module = module
        self._lib = load_once(_LIBS, module, _load)

    def slots(self) -> list[int]:
        return [int(s) for s in call(lambda: self._lib.getSlotList(tokenPresent=True))]

    def reader_slots(self) -> list[int]:
        """Every slot, with or without a token: OpenSC has one per card reader."""
        return [int(s) for s in call(lambda: self._lib.getSlotList(tokenPresent=False))]

    def token(self, slot: int) -> SlotToken:
        ti = call(lambda: self._lib.getTokenInfo(slot))
        return SlotToken(slot, ti.label.strip(), ti.manufacturerID.strip(), ti.model.strip(),
                         ti.serialNumber.strip(), int(ti.flags), int(ti.ulMinPinLen),
                         int(ti.ulMaxPinLen))

    def mechanisms(self, slot: int) -> frozenset[str]:
        names = call(lambda: self._lib.getMechanismList(slot))
        return frozenset(_CANONICAL.get(n, n) for n in (str(n).removeprefix("CKM_")
                                                        for n in names))

    def mechanism_info(self, slot: int, mechanism: int) -> MechInfo | None:
        try:
            info = self._lib.getMechanismInfo(slot, PyKCS11.CKM[mechanism])
        except (PyKCS11.PyKCS11Error, KeyError):
            return None
        return MechInfo(int(info.ulMinKeySize), int(info.ulMaxKeySize), int(info.flags))

    def open_session(self, slot: int, rw: bool = True) -> PyKcs11Session:
        return PyKcs11Session(self._lib, slot, rw)

    def init_token(self, slot: int, so_pin: str, label: str) -> None:
        padded = label + " " * (LABEL_LEN - len(label.encode("utf-8")))
        call(lambda: self._lib.initToken(slot, so_pin, padded))

    def slot_event(self) -> bool:
        try:
            self._lib.waitForSlotEvent(PyKCS11.CKF_DONT_BLOCK)
        except PyKCS11.PyKCS11Error:
            return False  # CKR_NO_EVENT, or not supported
        return True

    def reinitialise(self) -> None:
        low = self._lib.lib
        low.C_Finalize()
        rv = low.C_Initialize()
        if rv not in (CKR["CKR_OK"], CKR["CKR_CRYPTOKI_ALREADY_INITIALIZED"]):
            raise CkrError(int(rv))
