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

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import (
    MGF1,
    OAEP,
    AsymmetricPadding,
    PKCS1v15,
)

from tokenkeys.drivers.oaep import HASHES, DecryptFailed, oaep_decode
from tokenkeys.errors import MechanismUnsupported, UsageError
from tokenkeys.i18n import _
from tokenkeys.keyalg import OAEP_TRANSPORTS, PKCS1V15, OaepPadding

__all__ = [
    "DEVICE_OAEP",
    "DEVICE_PKCS1",
    "RAW_OAEP",
    "DecryptFailed",
    "MechanismRefused",
    "OaepParams",
    "OaepSpec",
    "RsaNegotiator",
    "RsaOps",
    "oaep_route",
    "oaep_spec",
    "transport_routes",
]

OAEP_MECH = "RSA_PKCS_OAEP"
RAW_MECH = "RSA_X_509"
PKCS1_MECH = "RSA_PKCS"
RSA_MECHS = (OAEP_MECH, RAW_MECH, PKCS1_MECH)

# (hash, mgf1 hash, label?) a device is known to accept for on-device OAEP.
OaepParams = tuple[str, str, bool]
SHA1_ONLY: frozenset[OaepParams] = frozenset({("sha1", "sha1", False)})
# What a plain OAEP's MGF1 is compared with (cryptography keeps its hash private).
_MGF1_CANDIDATES = tuple((h.name, MGF1(h)) for h in (
    hashes.SHA1(), hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()))


# How plan() opens a key transport, as doctor shows it.
DEVICE_OAEP = "device RSA_PKCS_OAEP"
RAW_OAEP = "device RSA_X_509 + software OAEP"
DEVICE_PKCS1 = "device RSA_PKCS"


def oaep_route(mechanisms: frozenset[str], known_oaep: frozenset[OaepParams] | None,
               params: OaepParams) -> str | None:
    """Where plan() sends OAEP `params` first: on the device when it offers OAEP and
    the profile does not rule these parameters out, else raw RSA plus software
    decoding, else nowhere (None)."""
    if OAEP_MECH in mechanisms and (known_oaep is None or params in known_oaep):
        return DEVICE_OAEP
    return RAW_OAEP if RAW_MECH in mechanisms else None


def transport_routes(mechanisms: frozenset[str], known_oaep: frozenset[OaepParams] | None
                     ) -> dict[str, str]:
    """The key transports (keyalg names) plan() surely opens, each with its route: what
    `key list` claims and doctor shows. A device OAEP no profile vouches for is tried
    for any hash, but claimed for SHA-1 only (PKCS#11's default, the one every device
    does), unless raw RSA backs it up."""
    routes: dict[str, str] = {}
    for kind, name in OAEP_TRANSPORTS.items():
        route = oaep_route(mechanisms, known_oaep, (name, name, False))
        if route == DEVICE_OAEP and known_oaep is None:
            if RAW_MECH in mechanisms:
                route = f"{DEVICE_OAEP}, else {RAW_OAEP.removeprefix('device ')}"
            elif name != "sha1":
                route = None
        if route is not None:
            routes[kind] = route
    if PKCS1_MECH in mechanisms:
        routes[PKCS1V15] = DEVICE_PKCS1
    return routes


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


@dataclass(frozen=True)
class OaepSpec:
    """The OAEP parameters a decryption needs; hashes named as cryptography does (sha256)."""

    hash_name: str
    mgf_hash_name: str
    label: bytes | None = None

    @property
    def form(self) -> OaepParams:
        """What a profile lists as known to work (whether there is a label, not which)."""
        return self.hash_name, self.mgf_hash_name, self.label is not None


def oaep_spec(padding: OAEP) -> OaepSpec:
    """The parameters of `padding`, through public members only."""
    if isinstance(padding, OaepPadding):
        spec = OaepSpec(padding.algorithm.name, padding.mgf_algorithm.name,
                        padding.label or None)
    else:
        spec = _plain_oaep_spec(padding)
    names = (spec.hash_name, spec.mgf_hash_name)
    if any(n not in HASHES for n in names):
        raise MechanismUnsupported(_("OAEP with {names}").format(names="/".join(names)),
                                   sorted(HASHES))
    return spec


def _plain_oaep_spec(padding: OAEP) -> OaepSpec:
    """cryptography shows a plain OAEP's hash; its MGF1 and label can only be
    compared, so one with a label must come as an OaepPadding."""
    mgf_name = next((name for name, mgf in _MGF1_CANDIDATES if padding.mgf == mgf),
                    _("an unknown mask generation"))
    if padding not in (OAEP(padding.mgf, padding.algorithm, None),
                       OAEP(padding.mgf, padding.algorithm, b"")):
        raise UsageError(_("an OAEP label reaches a device only in an OaepPadding "
                           "(tokenkeys.envelope.identity): cryptography does not show it"))
    return OaepSpec(padding.algorithm.name, mgf_name)


Decrypt = Callable[[bytes], bytes]


@dataclass
class RsaNegotiator:
    """One per key handle. Not thread-safe (neither is python-pkcs11)."""

    ops: RsaOps
    mechanisms: frozenset[str]
    key_bytes: int
    # OAEP parameters known to work on the device; None means "try, fall back on refusal".
    known_oaep: frozenset[OaepParams] | None = None
    modulus: int = 0  # the key's n; 0: unknown (only the length is checked)
    _plans: dict[OaepSpec, Decrypt] = field(default_factory=dict)
    _refused: set[OaepParams] = field(default_factory=set)

    def device_oaep_ok(self, params: OaepParams) -> bool:
        return params not in self._refused and oaep_route(
            self.mechanisms, self.known_oaep, params) == DEVICE_OAEP

    def offered(self) -> list[str]:
        return [m for m in RSA_MECHS if m in self.mechanisms] or sorted(self.mechanisms)

    def plan(self, padding: AsymmetricPadding) -> tuple[str, Decrypt]:
        """(description, callable) for this padding, cached."""
        if isinstance(padding, PKCS1v15):
            if PKCS1_MECH not in self.mechanisms:
                raise MechanismUnsupported(_("RSA PKCS#1 v1.5 (CKM_RSA_PKCS)"), self.offered())
            return DEVICE_PKCS1, self.ops.pkcs1
        if not isinstance(padding, OAEP):
            raise UsageError(_("unsupported RSA padding {name}").format(name=padding.name))
        spec = oaep_spec(padding)
        cached = self._plans.get(spec)
        if cached is not None:
            return "cached", cached
        if self.device_oaep_ok(spec.form):
            fn = self._device_oaep(spec)
            desc = DEVICE_OAEP
        elif RAW_MECH in self.mechanisms:
            fn = self._raw_oaep(spec)
            desc = RAW_OAEP
        else:
            wanted = f"RSA-OAEP {spec.hash_name}/MGF1-{spec.mgf_hash_name}" + (
                _(" with label") if spec.label else "")
            raise MechanismUnsupported(wanted, self.offered())
        self._plans[spec] = fn
        return desc, fn

    def _raw_oaep(self, spec: OaepSpec) -> Decrypt:
        raw, k = self.ops.raw, self.key_bytes

        def decrypt(ciphertext: bytes) -> bytes:
            return oaep_decode(raw(ciphertext), k, spec.hash_name, spec.mgf_hash_name, spec.label)

        return decrypt

    def _device_oaep(self, spec: OaepSpec) -> Decrypt:
        oaep = self.ops.oaep

        def decrypt(ciphertext: bytes) -> bytes:
            try:
                return oaep(ciphertext, spec.hash_name, spec.mgf_hash_name, spec.label)
            except MechanismRefused:
                # Remember, so the next call goes straight to the fallback.
                self._refused.add(spec.form)
                self._plans.pop(spec, None)
                if RAW_MECH not in self.mechanisms:
                    wanted = f"RSA-OAEP {spec.hash_name}/MGF1-{spec.mgf_hash_name}"
                    raise MechanismUnsupported(wanted, self.offered()) from None
                fallback = self._raw_oaep(spec)
                self._plans[spec] = fallback
                return fallback(ciphertext)

        return decrypt

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        if len(ciphertext) != self.key_bytes or (
                self.modulus and int.from_bytes(ciphertext, "big") >= self.modulus):
            # Not a ciphertext of this key (another recipient's block, or damaged):
            # reported like any other failure, without a device call. Public facts
            # only, so nothing about the padding leaks. A card sent such a block
            # answers a device-level error (emulated OpenPGP card: 6F00, which OpenSC
            # 0.23 reports as CKR_GENERAL_ERROR).
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
                         key_bytes=(public_key.key_size + 7) // 8, known_oaep=known_oaep,
                         modulus=public_key.public_numbers().n)
