"""What a device can do for tokenkeys, from what its driver measured (Token.facts()):
doctor's device lines, and the envelope kinds `key list` and the registry give a key.

The rules are the negotiations' own: decryption routes from drivers/negotiate.py
(transport_routes: what plan() would use, not merely what the module lists),
signing from drivers/negotiate_sign.py (signing_path), key sizes from the module's
key generation ranges. Nothing here knows a particular device.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenkeys import keyalg
from tokenkeys.drivers.base import DeviceFacts, Token
from tokenkeys.drivers.negotiate import transport_routes
from tokenkeys.drivers.negotiate_sign import signing_path
from tokenkeys.types import KeyType

IN_SOFTWARE = "software (the keystore's own key)"
ECDH = "device ECDH1_DERIVE"


def opens(key_type: KeyType | str, facts: DeviceFacts) -> dict[str, str]:
    """Envelope kinds a `key_type` key opens on this device, each with its route, in
    keyalg's order (RSA: the OAEP hashes, then v1.5; EC: ECDH)."""
    if KeyType(key_type) is KeyType.EC:
        routes = {"ecdh": ECDH} if "ECDH1_DERIVE" in facts.mechanisms else {}
    else:
        routes = transport_routes(facts.mechanisms, facts.known_oaep)
    return {kind: IN_SOFTWARE for kind in routes} if facts.in_software else routes


def signs(key_type: KeyType, facts: DeviceFacts) -> str | None:
    """How a certificate is signed with a `key_type` key (SHA-256); None: the key
    cannot sign, and its certificate comes from a CA."""
    if facts.in_software:
        return IN_SOFTWARE
    if key_type is KeyType.RSA and not facts.decryption_key_signs:
        return None
    return signing_path(key_type, facts.mechanisms, facts.sign_avoid)


def _fits(bits: int, low: int, high: int) -> bool:
    # Some modules give EC sizes in bytes, or 0: then the size says nothing.
    return not high or high < 128 or low <= bits <= high


@dataclass(frozen=True)
class KeyTypeCaps:
    """One key type on one device."""

    key_type: KeyType
    sizes: tuple[int, int] | None  # key generation (min, max) bits; None: no generation
    algorithms: tuple[str, ...]  # what `key generate --algorithm` can make here
    opens: dict[str, str]  # envelope kind -> how it is opened
    signs: str | None  # signing path; None: cannot sign

    def to_json(self) -> dict[str, object]:
        return {"key_type": self.key_type.value, "key_sizes": list(self.sizes or ()),
                "algorithms": list(self.algorithms), "opens": self.opens, "signs": self.signs}


@dataclass(frozen=True)
class DeviceCaps:
    """A device's class and, per key type, what it can do; `shares`: a shareable key
    can leave it wrapped (share export, share copy)."""

    device_class: str
    key_types: tuple[KeyTypeCaps, ...]
    shares: bool

    def to_json(self) -> dict[str, object]:
        return {"class": self.device_class, "shares": self.shares,
                "key_types": [k.to_json() for k in self.key_types]}


def capabilities(facts: DeviceFacts) -> DeviceCaps:
    """What the device can do, per key type tokenkeys knows."""
    per_type = []
    for key_type in KeyType:
        sizes = facts.key_sizes.get(key_type)
        algorithms = tuple(a.algorithm.value for a in keyalg.ALGORITHMS.values()
                           if a.key_type is key_type and sizes and _fits(a.bits, *sizes))
        per_type.append(KeyTypeCaps(key_type, sizes, algorithms, opens(key_type, facts),
                                    signs(key_type, facts)))
    return DeviceCaps(facts.device_class, tuple(per_type), facts.wraps)


def token_capabilities(token: Token) -> DeviceCaps:
    return capabilities(token.facts())
