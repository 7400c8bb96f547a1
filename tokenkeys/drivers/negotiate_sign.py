"""Mechanism negotiation for signing: the one shared place, driver-independent
(negotiate.py is its counterpart for decryption).

For a certificate, a CSR or a CA signature, a key signs with:

1. the device's hash-and-sign mechanism when it offers it (CKM_SHA256_RSA_PKCS,
   CKM_ECDSA_SHA256...): the data goes to the device whole;
2. else the hash computed in software and signed raw: RSA as a PKCS#1 v1.5
   DigestInfo through CKM_RSA_PKCS (opencryptoki 3.8 has no CKM_SHA256_RSA_PKCS),
   EC through CKM_ECDSA;
3. else MechanismUnsupported naming what the device offers (the key then awaits a
   certificate from a CA).

A device profile lists a hash-and-sign mechanism in `sign_avoid` only where the
device offers it and it does not work; nothing else here knows a device.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto.algos import DigestInfo
from asn1crypto.core import Null
from cryptography.hazmat.primitives import hashes

from tokenkeys.errors import MechanismUnsupported
from tokenkeys.i18n import _
from tokenkeys.types import KeyType

RSA_RAW = "RSA_PKCS"
EC_RAW = "ECDSA"
# (key type, hash) -> the device mechanism that hashes and signs in one call.
HASH_AND_SIGN: dict[tuple[KeyType, str], str] = {
    **{(KeyType.RSA, h): f"{h.upper()}_RSA_PKCS" for h in ("sha224", "sha256", "sha384",
                                                             "sha512")},
    (KeyType.RSA, "sha1"): "SHA1_RSA_PKCS",
    **{(KeyType.EC, h): f"ECDSA_{h.upper()}" for h in ("sha1", "sha224", "sha256", "sha384",
                                                         "sha512")},
}


@dataclass(frozen=True)
class SignPlan:
    """How one signature is made: `mechanism` on the device, over the whole data
    (hash-and-sign) or over a software hash (wrapped in a DigestInfo for RSA)."""

    key_type: KeyType
    hash_name: str
    mechanism: str
    prehash: bool

    @property
    def path(self) -> str:
        """What doctor and the docs call it."""
        if not self.prehash:
            return f"device {self.mechanism}"
        if self.key_type is KeyType.RSA:
            return f"software {self.hash_name} + DigestInfo, device {self.mechanism}"
        return f"software {self.hash_name}, device {self.mechanism}"

    def payload(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """What goes to the device."""
        if not self.prehash:
            return data
        h = hashes.Hash(algorithm)
        h.update(data)
        value = h.finalize()
        if self.key_type is KeyType.EC:
            return value
        # RFC 8017 9.2 step 2: DigestInfo with explicit NULL parameters (absent
        # parameters would be another encoding, which verifiers reject).
        return bytes(DigestInfo({"digest_algorithm": {"algorithm": self.hash_name,
                                                      "parameters": Null()},
                                 "digest": value}).dump())


def sign_plan(key_type: KeyType, hash_name: str, mechanisms: frozenset[str],
              avoid: frozenset[str] = frozenset()) -> SignPlan:
    """The plan for signing `hash_name` with a `key_type` key on a device offering
    `mechanisms` (a profile's `avoid` removed); MechanismUnsupported when there is none."""
    usable = mechanisms - avoid
    whole = HASH_AND_SIGN.get((key_type, hash_name))
    if whole is None:
        raise MechanismUnsupported(
            _("signing with {hash_name}").format(hash_name=hash_name),
            sorted(h for (kt, h) in HASH_AND_SIGN if kt is key_type))
    if whole in usable:
        return SignPlan(key_type, hash_name, whole, prehash=False)
    raw = RSA_RAW if key_type is KeyType.RSA else EC_RAW
    if raw in usable:
        return SignPlan(key_type, hash_name, raw, prehash=True)
    offered = sorted(m for m in usable if m == raw or m in HASH_AND_SIGN.values())
    raise MechanismUnsupported(_("{upper} signing with {hash_name} (CKM_{whole} or CKM_{raw})")
                               .format(upper=key_type.value.upper(), hash_name=hash_name,
                                       whole=whole, raw=raw), offered or sorted(usable))


def signing_path(key_type: KeyType, mechanisms: frozenset[str],
                 avoid: frozenset[str] = frozenset(), hash_name: str = "sha256") -> str | None:
    """How a certificate would be signed on this device (None: it cannot sign)."""
    try:
        return sign_plan(key_type, hash_name, mechanisms, avoid).path
    except MechanismUnsupported:
        return None
