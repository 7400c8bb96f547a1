"""Which envelope kinds a key can open, and what `seal` knows about a recipient's key.

The kinds come from the device's mechanisms (a card offering RSA_PKCS only
opens PKCS#1 v1.5 and never OAEP). What tokenkeys learned about a key is kept
by certificate fingerprint, so that `seal` can choose PKCS#1 v1.5 for a
recipient whose key cannot open OAEP.

Stand-in store: until the registry (issue 8) records the kinds, they live in
one small JSON file next to the registry database (`known_kinds`/`remember`
are the only two functions to replace).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tokenkeys.drivers.base import KeyHandle
from tokenkeys.files import write_atomic

RSA_PKCS1V15 = "rsa-pkcs1v15"
RSA_OAEP = "rsa-oaep"
ECDH = "ecdh"
# kind -> device mechanisms, any one of which opens it (OAEP: on device, or raw RSA
# plus software decoding; see drivers/negotiate.py).
MECHANISMS_FOR: dict[str, frozenset[str]] = {
    RSA_PKCS1V15: frozenset({"RSA_PKCS"}),
    RSA_OAEP: frozenset({"RSA_PKCS_OAEP", "RSA_X_509"}),
    ECDH: frozenset({"ECDH1_DERIVE"}),
}
STORE_NAME = "envelope-kinds.json"


def kinds_for(key: KeyHandle, mechanisms: frozenset[str]) -> tuple[str, ...]:
    """The envelope kinds `key` can open on a device offering `mechanisms`."""
    wanted = (RSA_PKCS1V15, RSA_OAEP) if isinstance(key.public_key, rsa.RSAPublicKey) else (ECDH,)
    return tuple(k for k in wanted if MECHANISMS_FOR[k] & mechanisms)


def explain(message: str, offered: Iterable[str]) -> str:
    """A MechanismUnsupported message with the fix, when OAEP meets a v1.5-only device."""
    offered = set(offered)
    if "OAEP" in message and not offered & MECHANISMS_FOR[RSA_OAEP] and "RSA_PKCS" in offered:
        return (f"{message}: this device opens PKCS#1 v1.5 envelopes only, and this one was "
                "sealed with RSA-OAEP; ask for it sealed again with PKCS#1 v1.5 (`tokenkeys "
                "seal --key-transport pkcs1v15`, or `openssl cms -encrypt`, whose default it "
                "is), or open it on a device that offers OAEP")
    return message


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def store_path(registry: Path) -> Path:
    return registry.parent / STORE_NAME


def _load(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(registry: Path, entries: Iterable[tuple[x509.Certificate, tuple[str, ...]]]) -> None:
    """Record the kinds of keys seen on a device. Best effort: a read-only data
    directory only means `seal` will not choose for these recipients."""
    path = store_path(registry)
    known = _load(path)
    changed = False
    for cert, kinds in entries:
        fp = fingerprint(cert)
        if known.get(fp) != list(kinds):
            known[fp] = list(kinds)
            changed = True
    if changed:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(known, indent=1, sort_keys=True).encode())


def known_kinds(registry: Path, cert: x509.Certificate) -> tuple[str, ...] | None:
    """The kinds recorded for the key of `cert`, or None when tokenkeys never saw it."""
    kinds = _load(store_path(registry)).get(fingerprint(cert))
    return tuple(kinds) if isinstance(kinds, list) else None


def key_transport_for(registry: Path, cert: x509.Certificate) -> str | None:
    """"pkcs1v15" when the key of `cert` is known to open PKCS#1 v1.5 but not OAEP."""
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        return None
    kinds = known_kinds(registry, cert)
    if kinds is not None and RSA_OAEP not in kinds and RSA_PKCS1V15 in kinds:
        return "pkcs1v15"
    return None
