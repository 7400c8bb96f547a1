"""Crash-safe generation of a named key pair and its certificate (`key generate`, `ca create`).

"Is the name free?" and the creation happen under one lock per token, between
processes of this machine. The key carries a provisional label until its
certificate is stored, so an interrupted run leaves a leftover that `key cleanup`
finds, never a half-made key under its name. On any failure after generation
the new objects are destroyed (not a card's fixed slot: it cannot be given back).
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
from tokenkeys.i18n import _
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


def generate_named(token: Token, name: str, algorithm: Algorithm,
                   certify: Callable[[KeyHandle], x509.Certificate | None], *,
                   shareable: bool = False, replace: bool = False) -> KeyHandle:
    """Generate a key pair named `name` with the certificate `certify` makes for it
    (None: the key awaits one from a CA). Requires login."""
    if name.startswith(PROVISIONAL):
        raise UsageError(_("a designation may not start with {PROVISIONAL!r}")
                         .format(PROVISIONAL=PROVISIONAL))
    store = require(token, CertificateStore, _("storing certificates"))
    slot = fixed_slot(token)
    with designation_lock(token):
        try:
            token.find_key(label=name)
        except KeyNotFound:
            pass
        else:
            raise KeyExists(_("a key named {name!r} already exists on this token")
                            .format(name=name))
        # A card with a fixed key slot names the key itself: no provisional label.
        label = name if slot is not None else f"{PROVISIONAL}{name}:{secrets.token_hex(4)}"
        key = token.generate_keypair(KeySpec(label=label, algorithm=algorithm,
                                             shareable=shareable, replace=replace))
        try:
            cert = certify(key)
            if cert is not None:
                store.store_certificate(key, cert)
            if slot is None:
                token.set_label(key, name)  # last: only a complete key carries the name
        except BaseException:
            if slot is None:  # a card's slot cannot be given back: keep what it holds
                with contextlib.suppress(TokenKeysError):  # the original error matters more
                    token.delete(key)
            raise
    return key
