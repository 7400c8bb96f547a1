"""The narrow binding port: what P11Token needs from a PKCS#11 binding, nothing more.

Numbers are PKCS#11's (ck.py). Object handles are opaque. Every failure is a
CkrError(code) (ckr.py), so one table maps errors for both bindings. Attribute
values: bool for ck.BOOL_ATTRS, int for ck.INT_ATTRS, str for CKA_LABEL, bytes
otherwise, None when the device does not give it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tokenkeys.errors import ModuleNotFound
from tokenkeys.i18n import _

log = logging.getLogger("tokenkeys.drivers")

T = TypeVar("T")
Template = dict[int, Any]
Obj = Any  # a binding's object handle: opaque above the adapter


@dataclass(frozen=True)
class SlotToken:
    """CK_TOKEN_INFO of the token in a slot, the fields tokenkeys uses (stripped)."""

    slot: int
    label: str
    manufacturer: str
    model: str
    serial: str
    flags: int
    min_pin: int = 0  # ulMinPinLen / ulMaxPinLen; 0 when the binding does not say
    max_pin: int = 0


@dataclass(frozen=True)
class OaepParam:
    hash: int  # CKM_SHA_1 ...
    mgf: int  # CKG_MGF1_SHA1 ...
    label: bytes | None = None


@dataclass(frozen=True)
class Mech:
    """A mechanism and its parameter: OAEP, an ECDH peer point (CKD_NULL), or none."""

    mechanism: int
    oaep: OaepParam | None = None
    ecdh_point: bytes | None = None


@dataclass(frozen=True)
class MechInfo:
    min_key_size: int
    max_key_size: int
    flags: int


class Session(Protocol):
    """One PKCS#11 session. Login state is per token (PKCS#11), not per session."""

    def login(self, pin: str | None, so: bool = False) -> None:
        """C_Login; pin None means the reader's PIN pad (protected authentication path)."""

    def logout(self) -> None: ...

    def close(self) -> None: ...

    def find(self, template: Template) -> list[Obj]: ...

    def get(self, obj: Obj, attrs: Sequence[int]) -> dict[int, Any]: ...

    def set(self, obj: Obj, template: Template) -> None: ...

    def generate_key_pair(self, mech: Mech, public: Template, private: Template
                          ) -> tuple[Obj, Obj]: ...

    def generate_key(self, mech: Mech, template: Template) -> Obj: ...

    def create(self, template: Template) -> Obj: ...

    def destroy(self, obj: Obj) -> None: ...

    def decrypt(self, key: Obj, mech: Mech, data: bytes) -> bytes: ...

    def sign(self, key: Obj, mech: Mech, data: bytes) -> bytes: ...

    def derive(self, key: Obj, mech: Mech, template: Template) -> Obj: ...

    def wrap(self, wrapping_key: Obj, key: Obj, mech: Mech) -> bytes: ...

    def unwrap(self, unwrapping_key: Obj, mech: Mech, data: bytes, template: Template) -> Obj: ...

    def init_pin(self, pin: str) -> None:
        """C_InitPIN (logged in as SO)."""


class Port(Protocol):
    """One loaded module through one binding."""

    binding: str  # "python-pkcs11" | "pykcs11"
    module: str

    def slots(self) -> list[int]:
        """Slots with a token present."""

    def token(self, slot: int) -> SlotToken: ...

    def mechanisms(self, slot: int) -> frozenset[str]:
        """Mechanism names without CKM_ (unknown vendor ones as 0x%08X)."""

    def mechanism_info(self, slot: int, mechanism: int) -> MechInfo | None: ...

    def open_session(self, slot: int, rw: bool = True) -> Session: ...

    def init_token(self, slot: int, so_pin: str, label: str) -> None:
        """C_InitToken; label unpadded (the adapter pads to 32 bytes)."""

    def slot_event(self) -> bool:
        """Non-blocking C_WaitForSlotEvent: True if a slot changed (False when
        there is none or the module/binding has no events)."""

    def reinitialise(self) -> None:
        """C_Finalize + C_Initialize: every session of this module in the process ends."""


# Every module this process has loaded (and initialised), through either binding.
LOADED: set[str] = set()


def load_once(cache: dict[str, T], module: str, load: Callable[[str], T]) -> T:
    """`load(real path)` once per process and real path: a symlinked second path
    would C_Initialize twice. `load` raises ModuleNotFound when the module does not load."""
    real = os.path.realpath(module)
    lib = cache.get(real)
    if lib is None:
        if not os.path.isfile(real):
            raise ModuleNotFound(_("PKCS#11 module not found: {module}").format(module=module))
        LOADED.add(real)  # before C_Initialize: a module that failed half-way counts too
        with native_stderr_logged(real):
            lib = cache[real] = load(real)
    return lib


@contextmanager
def native_stderr_logged(module: str) -> Iterator[None]:
    """What a module writes on stderr while it initialises goes to the debug log, not to
    the user's terminal: tpm2-pkcs11 on a machine without a TPM prints a dozen TSS lines
    at C_Initialize. tokenkeys says in one line what failed (ModuleNotFound...).
    fd 2 is the process's: for these milliseconds, other threads' stderr goes there too."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                said = sink.read(64 << 10).decode("utf-8", "replace").strip()
                if said:
                    log.debug("%s wrote while initialising: %s", module, said)
    finally:
        os.close(saved)
