"""Crash-safe generation of a named key pair and its certificate (`key generate`,
`key renew`, `ca create`).

"Is the name free?" and the creation happen under one lock per token, between
processes of this machine. The key is made under a provisional label (PROVISIONAL +
name + ":" + 8 hex digits); its certificate is stored; its private key takes the
name; the registry records it (`commit`); then its public key and certificate take
the name (Token.label_public_objects: never an in-place rewrite of a recorded key).
A run killed before the commit leaves a leftover the registry does not know, which
the rerun or `key cleanup` removes; one killed after it leaves a key the registry
knows, which the rerun or `key cleanup` finishes (services.interrupted). On any
failure before the commit the new objects are destroyed (not a card's fixed slot:
it cannot be given back).
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

from tokenkeys.drivers.base import PROVISIONAL, KeyHandle, Token, provisional_stem
from tokenkeys.drivers.capabilities import CertificateStore, SoAdministration, require
from tokenkeys.errors import (
    KeyExists,
    KeyNotFound,
    MultipleKeysFound,
    TokenKeysError,
    UsageError,
)
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


def provisional_label(name: str) -> str:
    return f"{PROVISIONAL}{name}:{secrets.token_hex(4)}"


def intended_name(label: str) -> str | None:
    """The name a provisional label was made for (None: not a provisional label)."""
    if not label.startswith(PROVISIONAL):
        return None
    name, sep, tail = label[len(PROVISIONAL):].rpartition(":")
    return name if sep and name and len(tail) == 8 else None


def unfinished(token: Token, key_id: bytes) -> list[str]:
    """The provisional labels of objects with `key_id`: a run is still making, or was
    interrupted making, that key (its private key may already have its name)."""
    return sorted({o.label for o in token.provisional_objects() if o.id == key_id})


def remove_unrecorded(token: Token, key_id: bytes) -> None:
    """Remove what an interrupted run left of the key `key_id`, which the caller has
    checked no registry records: its private key (if it is under a provisional label
    or the name the run meant), then its provisional objects."""
    labels = unfinished(token, key_id)
    names = {intended_name(provisional_stem(lbl) or lbl) for lbl in labels}
    with contextlib.suppress(KeyNotFound, MultipleKeysFound):
        key = token.find_key(key_id=key_id)
        if key.label.startswith(PROVISIONAL) or key.label in names:
            token.discard_unfinished(key)
    for label in unfinished(token, key_id):
        token.destroy_provisional(label)


# Whether a registry records the key with this CKA_ID at the token.
Recorded = Callable[[bytes], bool]


def _clear_name(token: Token, name: str, recorded: Recorded | None) -> None:
    """Remove what interrupted runs left meaning to make a key `name` that no registry
    records (with `recorded` to ask one); then refuse a name a key on the token has."""
    if recorded is not None:
        meant = {o.id for o in token.provisional_objects()
                 if intended_name(provisional_stem(o.label) or o.label) == name}
        for key_id in sorted(meant):
            if not recorded(key_id):
                remove_unrecorded(token, key_id)
    try:
        token.find_key(label=name)
    except KeyNotFound:
        return
    raise KeyExists(_("a key named {name!r} already exists on this token").format(name=name))


def generate_named(token: Token, name: str, algorithm: Algorithm,
                   certify: Callable[[KeyHandle], x509.Certificate | None], *,
                   shareable: bool = False, replace: bool = False,
                   commit: Callable[[KeyHandle], object] | None = None,
                   recorded: Recorded | None = None) -> KeyHandle:
    """Generate a key pair named `name` with the certificate `certify` makes for it
    (None: the key awaits one from a CA). `commit(key)` records it (the registry)
    once its private key has its name; `recorded(key)` asks that registry whether it
    records a key: when a step before the commit's end fails, a key it records (the
    answer was lost) stays, any other is destroyed; and an unrecorded leftover of an
    interrupted run under `name` is removed first. Requires login."""
    if name.startswith(PROVISIONAL):
        raise UsageError(_("a designation may not start with {PROVISIONAL!r}")
                         .format(PROVISIONAL=PROVISIONAL))
    store = require(token, CertificateStore, _("storing certificates"))
    slot = fixed_slot(token)
    with designation_lock(token):
        _clear_name(token, name, recorded)
        # A card with a fixed key slot names the key itself: no provisional label.
        label = name if slot is not None else provisional_label(name)
        key = token.generate_keypair(KeySpec(label=label, algorithm=algorithm,
                                             shareable=shareable, replace=replace))
        try:
            cert = certify(key)
            if cert is not None:
                store.store_certificate(key, cert)
            if slot is None:
                # In place on some devices: done while no registry records the key,
                # so a kill inside this write can only damage an unrecorded leftover.
                token.label_private_key(key, name)
            if commit is not None:
                commit(key)
        except BaseException:
            if slot is None:  # a card's slot cannot be given back: keep what it holds
                with contextlib.suppress(TokenKeysError):  # the original error matters more
                    if recorded is None or not recorded(key.id):
                        token.discard_unfinished(key)
            raise
        if slot is None:
            token.label_public_objects(key, name)
    return key
