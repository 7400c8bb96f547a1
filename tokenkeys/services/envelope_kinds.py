"""Which envelope kinds a key can open, and what `seal` and `open` make of it.

The kinds come from one function (envelope_kinds: the key type and the device's
facts, through the decryption negotiation's own rule, services/device_caps.py),
shared by `key list`, the registry, `seal --consultation` and the card helper. An
OpenPGP card offers RSA_PKCS only (v1.5 only); SoftHSM2 offers raw RSA, so
tokenkeys decodes any OAEP hash in software; device OAEP that no profile vouches for
is claimed for SHA-1 only; v1.5 needs CKM_RSA_PKCS itself. The registry records
the kinds per key, with its certificate's fingerprint, so `seal` can choose
PKCS#1 v1.5 for a recipient whose key is known to open PKCS#1 v1.5 only (an
OpenPGP card).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tokenkeys import keyalg
from tokenkeys.config import APP, Config
from tokenkeys.drivers.base import HSM, DeviceFacts, KeyHandle
from tokenkeys.errors import PolicyRefused, TokenKeysError
from tokenkeys.i18n import _
from tokenkeys.services.device_caps import opens
from tokenkeys.types import KeyType

if TYPE_CHECKING:  # SQLAlchemy loads only when a registry is used (CLI start-up time)
    from tokenkeys.registry import Registry

# The order `seal` prefers when every recipient can open more than one: every one of
# keyalg.KEY_TRANSPORTS (tests/registry/test_kinds.py checks it).
TRANSPORT_PREFERENCE = ("oaep-sha256", "oaep-sha384", "oaep-sha512", "oaep-sha1", "pkcs1v15")


def envelope_kinds(key_type: KeyType | str,
                   device: DeviceFacts | Iterable[str]) -> tuple[str, ...]:
    """Key transports (RSA) or agreements (EC) an envelope may use for this key to open
    it: those the decryption negotiation surely opens on `device` (its facts, or bare
    mechanism names: a device known by nothing else)."""
    facts = device if isinstance(device, DeviceFacts) else DeviceFacts(HSM, frozenset(device))
    return tuple(opens(key_type, facts))


def choose_key_transport(recipients: Sequence[tuple[str, Sequence[str]]],
                         wanted: str | None) -> str:
    """The RSA key transport every RSA recipient can open (`wanted` if given and possible).

    `recipients` pairs a name with its envelope kinds; EC recipients ("ecdh") are ignored.
    """
    rsa_keys = [(name, set(kinds)) for name, kinds in recipients if "ecdh" not in kinds]
    if wanted is not None:
        unable = [name for name, kinds in rsa_keys if wanted not in kinds]
        if unable:
            raise PolicyRefused(_("key transport {wanted} cannot be opened by {unable}; "
                                  "leave --key-transport out to choose")
                                .format(wanted=wanted, unable=', '.join(unable)))
        return wanted
    for transport in TRANSPORT_PREFERENCE:
        if all(transport in kinds for _, kinds in rsa_keys):
            return transport
    names = ", ".join(f"{n} ({'/'.join(sorted(k)) or 'nothing'})" for n, k in rsa_keys)
    raise PolicyRefused(_("no key transport is openable by every recipient: {names}")
                        .format(names=names))


# Device mechanisms that open OAEP (on the device, or raw RSA plus software decoding).
OAEP_MECHANISMS = frozenset({"RSA_PKCS_OAEP", "RSA_X_509"})


def kinds_for(key: KeyHandle, facts: DeviceFacts) -> tuple[str, ...]:
    """The envelope kinds `key` can open on the device `facts` describe."""
    return envelope_kinds(key.key_type, facts)


def explain(message: str, offered: Iterable[str]) -> str:
    """A MechanismUnsupported message with the fix, when OAEP meets a v1.5-only device."""
    offered = set(offered)
    if "OAEP" in message and not offered & OAEP_MECHANISMS and "RSA_PKCS" in offered:
        return (_("{message}: this device opens PKCS#1 v1.5 envelopes only, and this one was "
                  "sealed with RSA-OAEP; ask for it sealed again with PKCS#1 v1.5 "
                  "(`tokenkeys seal --key-transport pkcs1v15`, or `openssl cms -encrypt`, "
                  "whose default it is), or open it on a device that offers OAEP")
                .format(message=message))
    return message


def known_kinds(registry: Registry, cert: x509.Certificate) -> tuple[str, ...] | None:
    """The kinds the registry records for the key of `cert` (on every device holding
    it), or None when it does not know the key."""
    rows = [r for r in registry.keys_by_public_key(keyalg.public_key_sha256(cert.public_key()))
            if r.deleted_at is None]
    if not rows:
        return None
    # The same key on several devices (a copy on a card): what every one opens.
    common = set(rows[0].envelope_kinds).intersection(*(r.envelope_kinds for r in rows[1:]))
    return tuple(sorted(common))


def key_transports_for(config: Config,
                       certs: Sequence[x509.Certificate]) -> tuple[str | None, ...]:
    """Per certificate, "pkcs1v15" when its RSA key is known to open PKCS#1 v1.5 but no
    OAEP, else None. The registry is opened once per seal, and only for RSA recipients;
    one that cannot be reached knows nothing: sealing to a certificate needs no registry."""
    from tokenkeys.services.access import open_registry

    chosen: list[str | None] = [None] * len(certs)
    wanted = [i for i, c in enumerate(certs) if isinstance(c.public_key(), rsa.RSAPublicKey)]
    if not wanted:
        return tuple(chosen)
    with contextlib.suppress(TokenKeysError), open_registry(config) as registry:
        for i in wanted:
            with contextlib.suppress(TokenKeysError):
                kinds = known_kinds(registry, certs[i])
                if kinds and keyalg.PKCS1V15 in kinds and not any(k.startswith("oaep")
                                                                  for k in kinds):
                    chosen[i] = keyalg.PKCS1V15
    return tuple(chosen)


def beside_registry(config: Config, name: str) -> Path:
    """A directory next to a SQLite registry; in the user data dir for PostgreSQL."""
    if "://" in config.registry:
        return Path(platformdirs.user_data_dir(APP)) / name
    return Path(config.registry).expanduser().parent / name
