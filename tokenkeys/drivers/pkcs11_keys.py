"""Key objects of the python-pkcs11 driver: templates, public-key reading, KeyHandle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pkcs11
from asn1crypto.core import OctetString
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from pkcs11 import MGF, Attribute, Mechanism, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as p11e

from tokenkeys.drivers.base import KeyHandle, PublicKey, Runner
from tokenkeys.drivers.negotiate import (
    DecryptFailed,
    MechanismRefused,
    negotiator_for,
)
from tokenkeys.drivers.pkcs11_tables import digest, ec_point_of, ecdsa_der
from tokenkeys.errors import MechanismUnsupported, TokenKeysError, UsageError
from tokenkeys.types import Algorithm, KeySpec, KeyType
from tokenkeys.uri import Pkcs11Uri

T = TypeVar("T")


class Guard(Protocol):
    """Runs a device call, mapping python-pkcs11 errors into the tree."""

    def __call__(self, fn: Callable[[], T], what: str, /) -> T: ...

# DER of the named-curve OIDs: CKA_EC_PARAMS.
CURVE_PARAMS: dict[str, bytes] = {
    "secp256r1": bytes.fromhex("06082a8648ce3d030107"),
    "secp384r1": bytes.fromhex("06052b81040022"),
}
PARAMS_CURVE: dict[bytes, ec.EllipticCurve] = {
    CURVE_PARAMS["secp256r1"]: ec.SECP256R1(),
    CURVE_PARAMS["secp384r1"]: ec.SECP384R1(),
}
P11_KEY_TYPE: dict[KeyType, P11KeyType] = {KeyType.RSA: P11KeyType.RSA, KeyType.EC: P11KeyType.EC}
# Usage attributes per key type, all explicit: SoftHSM defaults absent ones to true.
PRIVATE_USAGE: dict[KeyType, dict[Attribute, bool]] = {
    KeyType.RSA: {Attribute.DECRYPT: True, Attribute.SIGN: True, Attribute.UNWRAP: True,
                  Attribute.DERIVE: False},
    KeyType.EC: {Attribute.DERIVE: True, Attribute.SIGN: True, Attribute.DECRYPT: False,
                 Attribute.UNWRAP: False},
}
PUBLIC_USAGE: dict[KeyType, dict[Attribute, bool]] = {
    KeyType.RSA: {Attribute.ENCRYPT: True, Attribute.VERIFY: True, Attribute.WRAP: True},
    KeyType.EC: {Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False},
}
RSA_SIGN: dict[str, Mechanism] = {
    "sha1": Mechanism.SHA1_RSA_PKCS,
    "sha224": Mechanism.SHA224_RSA_PKCS,
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}
OAEP_HASH: dict[str, tuple[Mechanism, MGF]] = {
    "sha1": (Mechanism.SHA_1, MGF.SHA1),
    "sha224": (Mechanism.SHA224, MGF.SHA224),
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}
# Device answers meaning "not these parameters", not "bad ciphertext".
REFUSALS = (p11e.MechanismInvalid, p11e.MechanismParamInvalid, p11e.ArgumentsBad)


def key_type_of(algorithm: Algorithm) -> KeyType:
    return KeyType.RSA if algorithm.is_rsa else KeyType.EC


def keygen_templates(spec: KeySpec, temp_id: bytes) -> tuple[dict[Attribute, Any], ...]:
    """(public, private) templates; the real CKA_ID is set once the public key is known."""
    kt = key_type_of(spec.algorithm)
    common = {Attribute.TOKEN: True, Attribute.LABEL: spec.label, Attribute.ID: temp_id}
    public = {**common, Attribute.PRIVATE: False, **PUBLIC_USAGE[kt]}
    if kt is KeyType.EC:
        public[Attribute.EC_PARAMS] = CURVE_PARAMS[spec.algorithm.curve]
    private = {
        **common,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: spec.shareable,
        **PRIVATE_USAGE[kt],
    }
    return public, private


def ec_point(raw: bytes, curve: ec.EllipticCurve) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING by the spec; some modules give the bare point."""
    if len(raw) == 2 * ((curve.key_size + 7) // 8) + 1:
        return raw
    try:
        return bytes(OctetString.load(raw).native)
    except ValueError:
        return raw


def read_public_key(obj: Any) -> PublicKey:
    """From a CKO_PUBLIC_KEY or CKO_PRIVATE_KEY object (RSA: modulus/exponent; EC: point)."""
    if obj.key_type == P11KeyType.RSA:
        n = int.from_bytes(obj[Attribute.MODULUS], "big")
        e = int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if obj.key_type == P11KeyType.EC:
        curve = PARAMS_CURVE.get(bytes(obj[Attribute.EC_PARAMS]))
        if curve is None:
            raise MechanismUnsupported("this EC curve", [c.name for c in PARAMS_CURVE.values()])
        point = ec_point(bytes(obj[Attribute.EC_POINT]), curve)
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    raise MechanismUnsupported(f"key type {obj.key_type!r}", ["RSA", "EC"])


def key_id_for(public_key: PublicKey) -> bytes:
    """RFC 5280 method 1: SHA-1 of the subjectPublicKey bits (= SKI digest)."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


def certificate_template(label: str, key_id: bytes, cert: x509.Certificate) -> dict[Attribute, Any]:
    return {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.LABEL: label,
        Attribute.ID: key_id,
        Attribute.SUBJECT: cert.subject.public_bytes(),
        Attribute.ISSUER: cert.issuer.public_bytes(),
        # CKA_SERIAL_NUMBER is the DER INTEGER, not the bare value.
        Attribute.SERIAL_NUMBER: der_integer(cert.serial_number),
        Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
    }


def der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    return b"\x02" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


class Pkcs11KeyHandle(KeyHandle):
    """A private key object kept by handle; decrypt does no attribute reads."""

    def __init__(
        self,
        private: Any | None,
        public_key: PublicKey,
        certificate: x509.Certificate | None,
        *,
        key_id: bytes,
        label: str,
        extractable: bool,
        uri: str,
        mechanisms: frozenset[str],
        device: tuple[str, str],
        guard: Guard,
        locate: Callable[[], Any],
    ) -> None:
        self._private = private
        self._locate = locate
        self._guard = guard
        self.id = key_id
        self.label = label
        self.public_key = public_key
        self.certificate = certificate
        self.extractable = extractable
        self.uri = uri
        self._run: Runner = _here
        self._negotiator = negotiator_for(self, self.public_key, mechanisms, device)

    def __repr__(self) -> str:
        return f"Pkcs11KeyHandle({self.uri})"

    def _key(self) -> Any:
        """The private key object; found by CKA_ID on first use when the handle came
        from public objects (listed before login)."""
        if self._private is None:
            self._private = self._locate()
        return self._private

    @property
    def private_object(self) -> Any:
        return self._key()

    def run_device_calls_with(self, runner: Runner | None) -> None:
        self._run = runner or _here

    # --- RsaOps: primitive device calls; failures are uniform DecryptFailed ---
    def oaep(
        self, ciphertext: bytes, hash_name: str, mgf_hash_name: str, label: bytes | None
    ) -> bytes:
        param = (OAEP_HASH[hash_name][0], OAEP_HASH[mgf_hash_name][1], label)
        try:
            return bytes(self._run(lambda: self._key().decrypt(
                ciphertext, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=param
            )))
        except REFUSALS:
            raise MechanismRefused() from None
        except p11e.PKCS11Error:
            raise DecryptFailed() from None

    def raw(self, ciphertext: bytes) -> bytes:
        try:
            return bytes(self._run(
                lambda: self._key().decrypt(ciphertext, mechanism=Mechanism.RSA_X_509)))
        except p11e.PKCS11Error:
            raise DecryptFailed() from None

    def pkcs1(self, ciphertext: bytes) -> bytes:
        try:
            return bytes(self._run(
                lambda: self._key().decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS)))
        except p11e.PKCS11Error:
            raise DecryptFailed() from None

    # --- KeyHandle ---
    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        if self._negotiator is None:
            raise UsageError(f"key {self.label!r} is not an RSA key: it cannot decrypt")
        return self._negotiator.decrypt(ciphertext, padding)

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        if self.key_type is KeyType.RSA:
            mech = RSA_SIGN.get(algorithm.name)
            if mech is None:
                raise MechanismUnsupported(f"RSA PKCS#1 v1.5 with {algorithm.name}", list(RSA_SIGN))
            signature: bytes = self._guard(
                lambda: bytes(self._run(lambda: self._key().sign(data, mechanism=mech))),
                f"signing with {self.label!r}",
            )
            return signature
        value = digest(data, algorithm)
        rs: bytes = self._guard(
            lambda: bytes(self._run(lambda: self._key().sign(value, mechanism=Mechanism.ECDSA))),
            f"signing with {self.label!r}",
        )
        return ecdsa_der(rs)

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        if not isinstance(self.public_key, ec.EllipticCurvePublicKey):
            raise UsageError(f"key {self.label!r} is not an EC key: no ECDH")
        if peer_public.curve.name != self.public_key.curve.name:
            raise UsageError(f"peer key is on {peer_public.curve.name}, "
                             f"key {self.label!r} on {self.public_key.curve.name}")
        point = ec_point_of(peer_public)
        size = (self.public_key.curve.key_size + 7) // 8

        def derive() -> bytes:
            secret = self._key().derive_key(
                P11KeyType.GENERIC_SECRET, size * 8,
                mechanism=Mechanism.ECDH1_DERIVE,
                mechanism_param=(pkcs11.KDF.NULL, None, point),
                template={Attribute.TOKEN: False, Attribute.SENSITIVE: False,
                          Attribute.EXTRACTABLE: True, Attribute.PRIVATE: True},
            )
            try:
                return bytes(secret[Attribute.VALUE])
            finally:
                secret.destroy()

        z: bytes = self._guard(lambda: self._run(derive), f"ECDH with {self.label!r}")
        return z


def _here(fn: Callable[[], Any]) -> Any:
    return fn()


def build_handle(
    find: Callable[..., list[Any]],
    anchor: Any,
    *,
    base_uri: Pkcs11Uri,
    mechanisms: frozenset[str],
    device: tuple[str, str],
    guard: Guard,
    locate: Callable[[bytes], Any],
    public_obj: Any | None = None,
) -> Pkcs11KeyHandle:
    """A handle from a private key, or (before login) a public key or certificate."""
    is_private = anchor.object_class == ObjectClass.PRIVATE_KEY
    wanted = [Attribute.ID, Attribute.LABEL] + ([Attribute.EXTRACTABLE] if is_private else [])
    attrs = anchor.get_attributes(wanted)
    key_id = bytes(attrs[Attribute.ID])
    label = str(attrs[Attribute.LABEL])
    certs = find(class_=ObjectClass.CERTIFICATE, id=key_id) if key_id else []
    if anchor.object_class == ObjectClass.CERTIFICATE:
        certs = [anchor]
    cert = x509.load_der_x509_certificate(bytes(certs[0][Attribute.VALUE])) if certs else None
    if public_obj is None and anchor.object_class == ObjectClass.PUBLIC_KEY:
        public_obj = anchor
    if public_obj is None and key_id:
        pubs = find(class_=ObjectClass.PUBLIC_KEY, id=key_id)
        public_obj = pubs[0] if pubs else None
    public_key: PublicKey
    if public_obj is not None:
        public_key = read_public_key(public_obj)
    elif cert is not None:
        cert_key = cert.public_key()
        if not isinstance(cert_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise MechanismUnsupported("this certificate's key type", ["RSA", "EC"])
        public_key = cert_key
    else:
        public_key = read_public_key(anchor)  # SoftHSM keeps n/e on the private key
    uri = base_uri.with_object(label, key_id)
    uri = Pkcs11Uri(attrs={**uri.attrs, "type": "private"}, id=uri.id, query=uri.query)
    return Pkcs11KeyHandle(
        anchor if is_private else None, public_key, cert,
        key_id=key_id, label=label,
        # Unknown before login: reported as not extractable.
        extractable=bool(attrs[Attribute.EXTRACTABLE]) if is_private else False,
        uri=str(uri), mechanisms=mechanisms, device=device, guard=guard,
        locate=lambda: locate(key_id),
    )


def guard_errors(
    mapper: Callable[[p11e.PKCS11Error, str], TokenKeysError],
) -> Guard:
    """Run a device call, turning python-pkcs11 errors into the tree."""

    def run(fn: Callable[[], T], what: str) -> T:
        try:
            return fn()
        except p11e.PKCS11Error as exc:
            raise mapper(exc, what) from None

    return run
