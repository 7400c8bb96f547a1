"""Key objects of the smartcard driver (PyKCS11): error table, public keys, KeyHandle.

Run as `python -m tokenkeys.drivers.smartcard_keys MODULE SERIAL IDHEX` to print
a public key's SubjectPublicKeyInfo (hex) read in a fresh process: OpenSC 0.23
returns heap bytes after the modulus in the process that generated the key
(FINDINGS), and a new process reads it correctly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import PyKCS11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from tokenkeys.drivers.base import KeyHandle, PublicKey
from tokenkeys.drivers.negotiate import (
    DecryptFailed,
    MechanismRefused,
    negotiator_for,
)
from tokenkeys.drivers.pkcs11_keys import PARAMS_CURVE, ec_point
from tokenkeys.drivers.pkcs11_tables import digest, ec_point_of, ecdsa_der
from tokenkeys.errors import (
    DeviceError,
    MechanismUnsupported,
    PinLocked,
    PinMissing,
    TokenKeysError,
    TokenNotFound,
    UsageError,
)
from tokenkeys.types import KeyType

T = TypeVar("T")

REMOVED = "the card was removed or reset: insert it and run the command again"
# CKR -> (tree class, one-line reason). PyKCS11 messages are the CKR name only: no PIN.
ERRORS: dict[int, tuple[type[TokenKeysError], str]] = {
    PyKCS11.CKR_DEVICE_REMOVED: (TokenNotFound, REMOVED),
    PyKCS11.CKR_TOKEN_NOT_PRESENT: (TokenNotFound, REMOVED),
    PyKCS11.CKR_TOKEN_NOT_RECOGNIZED: (TokenNotFound, "the card in the reader is not recognised"),
    PyKCS11.CKR_SESSION_HANDLE_INVALID: (TokenNotFound, REMOVED),
    PyKCS11.CKR_SESSION_CLOSED: (TokenNotFound, REMOVED),
    PyKCS11.CKR_SLOT_ID_INVALID: (TokenNotFound, REMOVED),
    PyKCS11.CKR_PIN_LOCKED: (PinLocked, ""),
    PyKCS11.CKR_USER_NOT_LOGGED_IN: (PinMissing, ""),
    PyKCS11.CKR_MECHANISM_INVALID: (MechanismUnsupported, ""),
    PyKCS11.CKR_MECHANISM_PARAM_INVALID: (MechanismUnsupported, ""),
    PyKCS11.CKR_KEY_TYPE_INCONSISTENT: (MechanismUnsupported, ""),
    PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED: (MechanismUnsupported, ""),
    PyKCS11.CKR_KEY_SIZE_RANGE: (MechanismUnsupported, ""),
    PyKCS11.CKR_FUNCTION_NOT_SUPPORTED: (MechanismUnsupported, ""),
    PyKCS11.CKR_TOKEN_WRITE_PROTECTED: (DeviceError, "the card is write-protected"),
    PyKCS11.CKR_DEVICE_MEMORY: (DeviceError, "the card is full"),
    PyKCS11.CKR_TEMPLATE_INCONSISTENT: (DeviceError, "the card refused the object's attributes"),
    PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID: (DeviceError, "the card refused an attribute value"),
}
# Answers to a decrypt call that say nothing about the ciphertext: report them as they are
# (a removed card is no padding oracle); every other failure is the uniform DecryptFailed.
NOT_ABOUT_CIPHERTEXT = frozenset({
    PyKCS11.CKR_DEVICE_REMOVED, PyKCS11.CKR_TOKEN_NOT_PRESENT, PyKCS11.CKR_SESSION_HANDLE_INVALID,
    PyKCS11.CKR_SESSION_CLOSED, PyKCS11.CKR_USER_NOT_LOGGED_IN, PyKCS11.CKR_PIN_LOCKED,
})
RSA_SIGN: dict[str, int] = {
    "sha1": PyKCS11.CKM_SHA1_RSA_PKCS,
    "sha224": PyKCS11.CKM_SHA224_RSA_PKCS,
    "sha256": PyKCS11.CKM_SHA256_RSA_PKCS,
    "sha384": PyKCS11.CKM_SHA384_RSA_PKCS,
    "sha512": PyKCS11.CKM_SHA512_RSA_PKCS,
}


def ckr_name(exc: PyKCS11.PyKCS11Error) -> str:
    return str(PyKCS11.CKR.get(exc.value, f"CKR 0x{int(exc.value):08X}"))


def map_error(
    exc: PyKCS11.PyKCS11Error, what: str, offered: Sequence[str] = ()
) -> TokenKeysError:
    cls, reason = ERRORS.get(exc.value, (DeviceError, ""))
    if cls is PinLocked:
        return PinLocked()
    if cls is PinMissing:
        return PinMissing("user login (call login first)")
    if cls is MechanismUnsupported:
        return MechanismUnsupported(f"{what} ({ckr_name(exc)})", offered)
    return cls(f"{what}: {reason or ckr_name(exc)}")


def guard(fn: Callable[[], T], what: str, offered: Sequence[str] = ()) -> T:
    """Run a PyKCS11 call, mapping its errors into the tree."""
    try:
        return fn()
    except PyKCS11.PyKCS11Error as exc:
        raise map_error(exc, what, offered) from None


def _attrs(session: Any, obj: Any, names: Sequence[int]) -> list[Any]:
    return list(session.getAttributeValue(obj, list(names), allAsBinary=True))


def read_public_key(session: Any, obj: Any) -> PublicKey | None:
    """RSA or EC public key of a public/private key object; None when the values
    are implausible (OpenSC 0.23 in the generating process: the caller re-reads)."""
    (key_type,) = session.getAttributeValue(obj, [PyKCS11.CKA_KEY_TYPE])
    if key_type == PyKCS11.CKK_RSA:
        mod, exp = _attrs(session, obj, [PyKCS11.CKA_MODULUS, PyKCS11.CKA_PUBLIC_EXPONENT])
        try:
            (declared,) = session.getAttributeValue(obj, [PyKCS11.CKA_MODULUS_BITS])
        except PyKCS11.PyKCS11Error:
            declared = None  # optional on public keys
        n, e = int.from_bytes(bytes(mod), "big"), int.from_bytes(bytes(exp), "big")
        if isinstance(declared, int) and declared and n.bit_length() != declared:
            return None
        if e.bit_length() > 33 or n < 3:
            return None
        return rsa.RSAPublicNumbers(e, n).public_key()
    if key_type == PyKCS11.CKK_EC:
        params, point = _attrs(session, obj, [PyKCS11.CKA_EC_PARAMS, PyKCS11.CKA_EC_POINT])
        curve = PARAMS_CURVE.get(bytes(params))
        if curve is None:
            raise MechanismUnsupported("this EC curve", [c.name for c in PARAMS_CURVE.values()])
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(
                curve, ec_point(bytes(point), curve))
        except ValueError:
            return None  # the same OpenSC 0.23 bug, for EC points
    raise MechanismUnsupported(f"key type {key_type}", ["RSA", "EC"])


def read_public_key_fresh(module: str, serial: str, key_id: bytes) -> PublicKey:
    """The public key with `key_id` on the card `serial`, read by a new process."""
    done = subprocess.run(
        [sys.executable, "-m", __name__, module, serial, key_id.hex()],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"re-reading the new public key failed: {reason}")
    key = serialization.load_der_public_key(bytes.fromhex(done.stdout.strip()))
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise MechanismUnsupported("this key type", ["RSA", "EC"])
    return key


def _main(argv: Sequence[str]) -> int:
    module, serial, id_hex = argv
    lib = PyKCS11.PyKCS11Lib()
    lib.load(module)
    for slot in lib.getSlotList(tokenPresent=True):
        if lib.getTokenInfo(slot).serialNumber.strip() != serial:
            continue
        session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION)
        key_id = bytes.fromhex(id_hex)
        template = [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY), (PyKCS11.CKA_ID, key_id)]
        for obj in session.findObjects(template):
            key = read_public_key(session, obj)
            if key is not None:
                print(key.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
                ).hex())
                return 0
    print(f"no readable public key {id_hex} on card {serial}", file=sys.stderr)
    return 1


class SmartcardKeyHandle(KeyHandle):
    """A private key on a card. The private object is found by CKA_ID on first use,
    so handles listed before login work once the token is logged in."""

    def __init__(
        self,
        session: Callable[[], Any],
        public_key: PublicKey,
        certificate: x509.Certificate | None,
        *,
        key_id: bytes,
        label: str,
        uri: str,
        mechanisms: frozenset[str],
        device: tuple[str, str],
        locate: Callable[[bytes], Any],
    ) -> None:
        self._session = session
        self._locate = locate
        self._private: Any = None
        self._can_sign: bool | None = None
        self.id = key_id
        self.label = label
        self.public_key = public_key
        self.certificate = certificate
        self.extractable = False  # card keys never leave the card
        self.uri = uri
        self.mechanisms = mechanisms
        self._negotiator = negotiator_for(self, self.public_key, mechanisms, device)

    def __repr__(self) -> str:
        return f"SmartcardKeyHandle({self.uri})"

    def _key(self) -> Any:
        if self._private is None:
            self._private = self._locate(self.id)
        return self._private

    def _offered(self) -> list[str]:
        return sorted(self.mechanisms)

    # --- RsaOps (negotiate.py); failures about the ciphertext are the uniform DecryptFailed
    def _decrypt(self, ciphertext: bytes, mechanism: int) -> bytes:
        key = self._key()
        try:
            return bytes(self._session().decrypt(key, ciphertext, PyKCS11.Mechanism(mechanism)))
        except PyKCS11.PyKCS11Error as exc:
            if exc.value in NOT_ABOUT_CIPHERTEXT:
                raise map_error(exc, f"decrypting with {self.label!r}") from None
            if exc.value in (PyKCS11.CKR_MECHANISM_INVALID, PyKCS11.CKR_MECHANISM_PARAM_INVALID):
                raise MechanismRefused() from None
            raise DecryptFailed() from None

    def oaep(
        self, ciphertext: bytes, hash_name: str, mgf_hash_name: str, label: bytes | None
    ) -> bytes:
        # Never reached on OpenPGP cards (no CKM_RSA_PKCS_OAEP); refused so the
        # negotiator falls back to raw RSA or reports what the card offers.
        raise MechanismRefused()

    def raw(self, ciphertext: bytes) -> bytes:
        try:
            return self._decrypt(ciphertext, PyKCS11.CKM_RSA_X_509)
        except MechanismRefused:
            raise DecryptFailed() from None

    def pkcs1(self, ciphertext: bytes) -> bytes:
        try:
            return self._decrypt(ciphertext, PyKCS11.CKM_RSA_PKCS)
        except MechanismRefused:
            raise DecryptFailed() from None

    # --- KeyHandle ---
    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        if self._negotiator is None:
            raise UsageError(f"key {self.label!r} is not an RSA key: it cannot decrypt")
        return self._negotiator.decrypt(ciphertext, padding)

    def can_sign(self) -> bool:
        """CKA_SIGN of the private key (an OpenPGP decryption key says false). Requires login."""
        if self._can_sign is None:
            (flag,) = guard(lambda: self._session().getAttributeValue(
                self._key(), [PyKCS11.CKA_SIGN]), "reading CKA_SIGN")
            self._can_sign = bool(flag)
        return self._can_sign

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        if not self.can_sign():
            raise MechanismUnsupported(
                f"signing with card key {self.label!r} (id {self.id.hex()}, CKA_SIGN false)",
                ["decrypt" if self.key_type is KeyType.RSA else "derive"],
            )
        what = f"signing with {self.label!r}"
        if self.key_type is KeyType.RSA:
            mech = RSA_SIGN.get(algorithm.name)
            if mech is None:
                raise MechanismUnsupported(f"RSA PKCS#1 v1.5 with {algorithm.name}", list(RSA_SIGN))
            return bytes(guard(lambda: self._session().sign(
                self._key(), data, PyKCS11.Mechanism(mech)), what, self._offered()))
        value = digest(data, algorithm)
        rs = bytes(guard(lambda: self._session().sign(
            self._key(), value, PyKCS11.Mechanism(PyKCS11.CKM_ECDSA)), what, self._offered()))
        return ecdsa_der(rs)

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        if not isinstance(self.public_key, ec.EllipticCurvePublicKey):
            raise UsageError(f"key {self.label!r} is not an EC key: no ECDH")
        if "ECDH1_DERIVE" not in self.mechanisms:
            raise MechanismUnsupported("ECDH (CKM_ECDH1_DERIVE)", self._offered())
        point = ec_point_of(peer_public)
        size = (self.public_key.curve.key_size + 7) // 8
        template = [
            (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_GENERIC_SECRET),
            (PyKCS11.CKA_VALUE_LEN, size),
            (PyKCS11.CKA_TOKEN, False),
            (PyKCS11.CKA_SENSITIVE, False),
            (PyKCS11.CKA_EXTRACTABLE, True),
        ]

        def derive() -> bytes:
            session = self._session()
            mech = PyKCS11.ECDH1_DERIVE_Mechanism(point, PyKCS11.CKD_NULL)
            secret = session.deriveKey(self._key(), template, mech)
            try:
                (value,) = session.getAttributeValue(secret, [PyKCS11.CKA_VALUE], allAsBinary=True)
                return bytes(value)
            finally:
                session.destroyObject(secret)

        return guard(derive, f"ECDH with {self.label!r}", self._offered())


if __name__ == "__main__":
    # No PIN involved: public objects only.
    os.environ.pop("TOKENKEYS_PIN", None)
    sys.exit(_main(sys.argv[1:]))
