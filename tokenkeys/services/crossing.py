"""What crosses between a command and the processes it forks for a batch: the start
method, and errors (rebuilt on the other side as their own class)."""

from __future__ import annotations

import multiprocessing
import pickle
import sys
import threading
from typing import Any

from tokenkeys import errors
from tokenkeys.errors import DeviceError, TokenKeysError


def modules_loaded() -> bool:
    """Has this process loaded a PKCS#11 module? (A forked child would inherit it.)"""
    port = sys.modules.get("tokenkeys.drivers.p11.port")  # not imported: none loaded
    return bool(port is not None and port.LOADED)


def start_method() -> str:
    """fork while this process is still single-threaded and has not loaded a PKCS#11
    module (a child must not inherit an initialised library or a lock another thread
    holds): the child then shares the parent's imports instead of paying a new
    interpreter (about 0.4 s of CPU). spawn otherwise."""
    if ("fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
            and not modules_loaded()):
        return "fork"
    return "spawn"


def described(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """An exception as (class, message, attributes) that any process can rebuild: the
    nearest class of the error tree (DecryptFailed is an EnvelopeIntegrity), or
    ValueError, the padding outcome of a software key."""
    kind = next((c.__name__ for c in type(exc).__mro__
                 if getattr(errors, c.__name__, None) is c), "DeviceError")
    if isinstance(exc, ValueError) and not isinstance(exc, TokenKeysError):
        kind = "ValueError"
    attrs = dict(vars(exc))
    try:
        pickle.dumps(attrs)
    except Exception:
        attrs = {}
    return kind, str(exc), attrs


def error_class(name: str | None) -> type[TokenKeysError]:
    """The error class a name gives (a FileResult's error_type, described()'s class),
    TokenKeysError if none is: errors cross processes as names, and exit codes come
    from classes."""
    found = getattr(errors, name or "", None)
    if isinstance(found, type) and issubclass(found, TokenKeysError):
        return found
    return TokenKeysError


def rebuilt(kind: str, message: str, attrs: dict[str, Any]) -> Exception:
    """The exception described() described. A name it cannot give is a DeviceError."""
    if kind == "ValueError":
        return ValueError(message)
    cls = error_class(kind)
    if cls is TokenKeysError and kind != TokenKeysError.__name__:
        cls = DeviceError
    exc: Exception = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(attrs)
    return exc
