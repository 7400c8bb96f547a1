"""Mechanism negotiation for RSA decryption: the one shared place, driver-independent.

A driver gives the device's mechanism names, the OAEP parameters its profile
knows to work (drivers/p11/profiles.py), the key size, and an RsaOps with three
primitive calls. The negotiator picks:

1. on-device CKM_RSA_PKCS_OAEP when the device supports those exact parameters;
2. else raw CKM_RSA_X_509 on the device and OAEP decoded in software (oaep.py);
3. else MechanismUnsupported naming what the device offers.

PKCS#1 v1.5 goes to CKM_RSA_PKCS; every failure is the uniform DecryptFailed,
which the envelope layer answers with its Bleichenbacher countermeasure.
Choices are cached per negotiator (one per key handle), so the batch path
does a dict lookup and one device call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import (
    OAEP,
    AsymmetricPadding,
    PKCS1v15,
)

from tokenkeys.drivers.oaep import HASHES, DecryptFailed, oaep_decode
from tokenkeys.errors import MechanismUnsupported, UsageError

__all__ = [
    "DecryptFailed",
    "MechanismRefused",
    "OaepParams",
    "RsaNegotiator",
    "RsaOps",
    "oaep_params",
]

OAEP_MECH = "RSA_PKCS_OAEP"
RAW_MECH = "RSA_X_509"
PKCS1_MECH = "RSA_PKCS"
RSA_MECHS = (OAEP_MECH, RAW_MECH, PKCS1_MECH)

# (hash, mgf1 hash, label?) a device is known to accept for on-device OAEP.
OaepParams = tuple[str, str, bool]
SHA1_ONLY: frozenset[OaepParams] = frozenset({("sha1", "sha1", False)})


class MechanismRefused(Exception):
    """Raised by RsaOps.oaep when the device rejects the mechanism or its parameters
    (CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID, CKR_ARGUMENTS_BAD)."""


class RsaOps(Protocol):
    """Primitive device calls. Failures other than MechanismRefused raise DecryptFailed."""

    def oaep(
        self, ciphertext: bytes, hash_name: str, mgf_hash_name: str, label: bytes | None
    ) -> bytes: ...

    def raw(self, ciphertext: bytes) -> bytes: ...

    def pkcs1(self, ciphertext: bytes) -> bytes: ...


def oaep_params(padding: OAEP) -> tuple[str, str, bytes | None]:
    """(hash, mgf1 hash, label) names as cryptography spells them (sha256 ...)."""
    algorithm = padding.algorithm
    mgf_algorithm = getattr(padding.mgf, "_algorithm", algorithm)
    # cryptography has no public accessor for the label.
    label: bytes | None = getattr(padding, "_label", None) or None
    names = (algorithm.name, mgf_algorithm.name)
    if any(n not in HASHES for n in names):
        raise MechanismUnsupported(f"OAEP with {'/'.join(names)}", sorted(HASHES))
    return names[0], names[1], label


Decrypt = Callable[[bytes], bytes]


@dataclass
class RsaNegotiator:
    """One per key handle. Not thread-safe (neither is python-pkcs11)."""

    ops: RsaOps
    mechanisms: frozenset[str]
    key_bytes: int
    # OAEP parameters known to work on the device; None means "try, fall back on refusal".
    known_oaep: frozenset[OaepParams] | None = None
    _plans: dict[tuple[str, str, bytes | None], Decrypt] = field(default_factory=dict)
    _refused: set[OaepParams] = field(default_factory=set)

    def device_oaep_ok(self, params: OaepParams) -> bool:
        if OAEP_MECH not in self.mechanisms or params in self._refused:
            return False
        return self.known_oaep is None or params in self.known_oaep

    def offered(self) -> list[str]:
        return [m for m in RSA_MECHS if m in self.mechanisms] or sorted(self.mechanisms)

    def plan(self, padding: AsymmetricPadding) -> tuple[str, Decrypt]:
        """(description, callable) for this padding, cached."""
        if isinstance(padding, PKCS1v15):
            if PKCS1_MECH not in self.mechanisms:
                raise MechanismUnsupported("RSA PKCS#1 v1.5 (CKM_RSA_PKCS)", self.offered())
            return "device RSA_PKCS", self.ops.pkcs1
        if not isinstance(padding, OAEP):
            raise UsageError(f"unsupported RSA padding {padding.name}")
        hash_name, mgf_name, label = oaep_params(padding)
        key = (hash_name, mgf_name, label)
        cached = self._plans.get(key)
        if cached is not None:
            return "cached", cached
        params: OaepParams = (hash_name, mgf_name, label is not None)
        if self.device_oaep_ok(params):
            fn = self._device_oaep(hash_name, mgf_name, label, params)
            desc = "device RSA_PKCS_OAEP"
        elif RAW_MECH in self.mechanisms:
            fn = self._raw_oaep(hash_name, mgf_name, label)
            desc = "device RSA_X_509 + software OAEP"
        else:
            wanted = f"RSA-OAEP {hash_name}/MGF1-{mgf_name}" + (" with label" if label else "")
            raise MechanismUnsupported(wanted, self.offered())
        self._plans[key] = fn
        return desc, fn

    def _raw_oaep(self, hash_name: str, mgf_name: str, label: bytes | None) -> Decrypt:
        raw, k = self.ops.raw, self.key_bytes

        def decrypt(ciphertext: bytes) -> bytes:
            return oaep_decode(raw(ciphertext), k, hash_name, mgf_name, label)

        return decrypt

    def _device_oaep(
        self, hash_name: str, mgf_name: str, label: bytes | None, params: OaepParams
    ) -> Decrypt:
        oaep = self.ops.oaep

        def decrypt(ciphertext: bytes) -> bytes:
            try:
                return oaep(ciphertext, hash_name, mgf_name, label)
            except MechanismRefused:
                # Remember, so the next call goes straight to the fallback.
                self._refused.add(params)
                self._plans.pop((hash_name, mgf_name, label), None)
                if RAW_MECH not in self.mechanisms:
                    wanted = f"RSA-OAEP {hash_name}/MGF1-{mgf_name}"
                    raise MechanismUnsupported(wanted, self.offered()) from None
                fallback = self._raw_oaep(hash_name, mgf_name, label)
                self._plans[(hash_name, mgf_name, label)] = fallback
                return fallback(ciphertext)

        return decrypt

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        if len(ciphertext) != self.key_bytes:
            # Wrong length is a damaged recipient, reported like any other failure.
            raise DecryptFailed()
        return self.plan(padding)[1](ciphertext)


def negotiator_for(
    ops: RsaOps, public_key: object, mechanisms: frozenset[str],
    known_oaep: frozenset[OaepParams] | None = None,
) -> RsaNegotiator | None:
    """The negotiator of an RSA key handle; None for other key types."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        return None
    return RsaNegotiator(ops=ops, mechanisms=mechanisms,
                         key_bytes=(public_key.key_size + 7) // 8, known_oaep=known_oaep)
