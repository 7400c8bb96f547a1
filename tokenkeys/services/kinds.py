"""Which envelope kinds a key can open, from its type and its device's mechanisms.

One small table-like function the registry, `seal --consultation` and the card
helper share. Device limits come through mechanisms(): an OpenPGP card offers
RSA_PKCS only (v1.5 only); SoftHSM2 offers raw RSA, so tokenkeys decodes any OAEP
hash in software (FINDINGS.md); device OAEP alone is assumed SHA-1 only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenkeys.errors import PolicyRefused
from tokenkeys.types import KeyType

OAEP_HASHES = ("oaep-sha1", "oaep-sha256", "oaep-sha384", "oaep-sha512")
# The order `seal` prefers when every recipient can open more than one.
TRANSPORT_PREFERENCE = ("oaep-sha256", "oaep-sha384", "oaep-sha512", "oaep-sha1", "pkcs1v15")


def envelope_kinds(key_type: KeyType | str, mechanisms: Iterable[str]) -> tuple[str, ...]:
    """Key transports (RSA) or agreements (EC) an envelope may use for this key to open it."""
    mechs = frozenset(mechanisms)
    if KeyType(key_type) is KeyType.EC:
        return ("ecdh",) if "ECDH1_DERIVE" in mechs else ()
    kinds: list[str] = []
    if "RSA_X_509" in mechs:
        kinds.extend(OAEP_HASHES)
    elif "RSA_PKCS_OAEP" in mechs:
        kinds.append("oaep-sha1")
    if "RSA_PKCS" in mechs or "RSA_X_509" in mechs:
        kinds.append("pkcs1v15")
    return tuple(kinds)


def choose_key_transport(recipients: Sequence[tuple[str, Sequence[str]]],
                         wanted: str | None) -> str:
    """The RSA key transport every RSA recipient can open (`wanted` if given and possible).

    `recipients` pairs a name with its envelope kinds; EC recipients ("ecdh") are ignored.
    """
    rsa = [(name, set(kinds)) for name, kinds in recipients if "ecdh" not in kinds]
    if wanted is not None:
        unable = [name for name, kinds in rsa if wanted not in kinds]
        if unable:
            raise PolicyRefused(f"key transport {wanted} cannot be opened by "
                                f"{', '.join(unable)}; leave --key-transport out to choose")
        return wanted
    for transport in TRANSPORT_PREFERENCE:
        if all(transport in kinds for _, kinds in rsa):
            return transport
    names = ", ".join(f"{n} ({'/'.join(sorted(k)) or 'nothing'})" for n, k in rsa)
    raise PolicyRefused(f"no key transport is openable by every recipient: {names}")
