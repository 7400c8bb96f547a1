"""Crash-safe generation of a named key pair and its certificate (`key generate`,
`key renew`, `ca create`).

"Is the name free?" and the creation happen under one lock per token, between
processes of this machine. The key carries a provisional label (PROVISIONAL +
name + ":" + 8 hex digits) until its certificate is stored and the registry has
recorded it (`commit`); only then does it get its name. A run killed before the
commit leaves a leftover the registry does not know, which `key cleanup` removes;
one killed after it leaves a key the registry knows, which the rerun or `key
cleanup` names (services.interrupted). On any failure before the commit the new
objects are destroyed (not a card's fixed slot: it cannot be given back).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography import x509

from tokenkeys.drivers.base import PROVISIONAL, KeyHandle, Token
from tokenkeys.drivers.capabilities import CertificateStore, SoAdministration, require
from tokenkeys.errors import KeyExists, KeyNotFound, TokenKeysError, UsageError
from tokenkeys.types import Algorithm, KeySpec


@contextlib.contextmanager
def designation_lock(token: Token) -> Iterator[None]:
    """Held across "is the designation free?" and the creation, between processes
    of this machine (one lock file per token)."""
    info = token.info()
    digest = hashlib.sha256(f"{info.module}|{info.serial}|{info.label}".encode()).hexdigest()[:24]
    path = Path(tempfile.gettempdir()) / f"tokenkeys-{os.getuid()}-{digest}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def fixed_slot(token: Token) -> bytes | None:
    """The CKA_ID a card gives every new key (OpenPGP: 02), or None."""
    return token.keygen_slot() if isinstance(token, SoAdministration) else None


def provisional_label(name: str) -> str:
    return f"{PROVISIONAL}{name}:{secrets.token_hex(4)}"


def intended_name(label: str) -> str | None:
    """The name a provisional label was made for (None: not a provisional label)."""
    if not label.startswith(PROVISIONAL):
        return None
    name, sep, tail = label[len(PROVISIONAL):].rpartition(":")
    return name if sep and name and len(tail) == 8 else None


def generate_named(token: Token, name: str, algorithm: Algorithm,
                   certify: Callable[[KeyHandle], x509.Certificate | None], *,
                   shareable: bool = False, replace: bool = False,
                   commit: Callable[[KeyHandle], object] | None = None,
                   undo: Callable[[KeyHandle], None] | None = None) -> KeyHandle:
    """Generate a key pair named `name` with the certificate `certify` makes for it
    (None: the key awaits one from a CA). `commit(key)` records it (the registry),
    still under its provisional label; `undo(key)` replaces deleting it when a step
    before the commit's end fails (it may keep a key the commit recorded after all).
    Requires login."""
    if name.startswith(PROVISIONAL):
        raise UsageError(f"a designation may not start with {PROVISIONAL!r}")
    store = require(token, CertificateStore, "storing certificates")
    slot = fixed_slot(token)
    with designation_lock(token):
        try:
            token.find_key(label=name)
        except KeyNotFound:
            pass
        else:
            raise KeyExists(f"a key named {name!r} already exists on this token")
        # A card with a fixed key slot names the key itself: no provisional label.
        label = name if slot is not None else provisional_label(name)
        key = token.generate_keypair(KeySpec(label=label, algorithm=algorithm,
                                             shareable=shareable, replace=replace))
        try:
            cert = certify(key)
            if cert is not None:
                store.store_certificate(key, cert)
            if commit is not None:
                commit(key)
        except BaseException:
            if slot is None:  # a card's slot cannot be given back: keep what it holds
                with contextlib.suppress(TokenKeysError):  # the original error matters more
                    (undo or token.delete)(key)
            raise
        if slot is None:
            token.set_label(key, name)  # last: only a complete, recorded key carries the name
    return key
