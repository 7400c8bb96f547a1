"""The one algorithm table: algorithm <-> key type <-> curve (OID) <-> hash <-> key id,
and the names every layer shares: RSA key transports, OAEP hashes, validity limits.

Drivers (templates, key reading), certificates, the envelope layer, the
services and the CLI all read these facts here. The key id is computed once:
SHA-1 of the subjectPublicKey bits (RFC 5280 section 4.2.1.2 method 1), which is
also the SKI tokenkeys writes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from tokenkeys.types import Algorithm, KeyType

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


@dataclass(frozen=True)
class Curve:
    name: str  # as cryptography spells it
    short: str  # as the CLI and CMS algorithm names spell it (p256)
    curve: type[ec.EllipticCurve]
    params: bytes  # DER of the named-curve OID: CKA_EC_PARAMS
    hash: type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]  # ECDSA signature hash


CURVES: dict[str, Curve] = {c.name: c for c in (
    Curve("secp256r1", "p256", ec.SECP256R1, bytes.fromhex("06082a8648ce3d030107"), hashes.SHA256),
    Curve("secp384r1", "p384", ec.SECP384R1, bytes.fromhex("06052b81040022"), hashes.SHA384),
)}
CURVE_BY_PARAMS: dict[bytes, Curve] = {c.params: c for c in CURVES.values()}


@dataclass(frozen=True)
class AlgInfo:
    algorithm: Algorithm
    key_type: KeyType
    bits: int
    curve: Curve | None = None


ALGORITHMS: dict[Algorithm, AlgInfo] = {
    Algorithm.RSA2048: AlgInfo(Algorithm.RSA2048, KeyType.RSA, 2048),
    Algorithm.RSA3072: AlgInfo(Algorithm.RSA3072, KeyType.RSA, 3072),
    Algorithm.RSA4096: AlgInfo(Algorithm.RSA4096, KeyType.RSA, 4096),
    Algorithm.EC_P256: AlgInfo(Algorithm.EC_P256, KeyType.EC, 256, CURVES["secp256r1"]),
    Algorithm.EC_P384: AlgInfo(Algorithm.EC_P384, KeyType.EC, 384, CURVES["secp384r1"]),
}
MIN_RSA_BITS = min(a.bits for a in ALGORITHMS.values() if a.key_type is KeyType.RSA)
# RSA signatures are PKCS#1 v1.5 with SHA-256.
RSA_SIGNATURE_HASH = hashes.SHA256

# RSA-OAEP hashes (MGF1 with the same), by cryptography's names: what tokenkeys
# seals with and wraps keys with.
OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# Opening also takes SHA-224, which other tools may seal with.
OAEP_OPEN_HASHES = frozenset({*OAEP_HASHES, "sha224"})
# RSA key transports, as the CLI, SealOptions and the registry's envelope kinds name
# them: "oaep-<hash>" -> its OAEP hash, then PKCS#1 v1.5.
OAEP_TRANSPORTS: dict[str, str] = {f"oaep-{name}": name for name in OAEP_HASHES}
PKCS1V15 = "pkcs1v15"
KEY_TRANSPORTS = (*OAEP_TRANSPORTS, PKCS1V15)
DEFAULT_KEY_TRANSPORT = "oaep-sha256"

# Validity limits, in days: a key's certificate (key generate, adopt --self-sign,
# renew, ca issue) ten years at most; a CA's twenty, so that it can outlive them.
MAX_DAYS = 3650
MAX_CA_DAYS = 7300


def info(algorithm: Algorithm) -> AlgInfo:
    return ALGORITHMS[algorithm]


def key_id(public_key: PublicKey) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING value: CKA_ID, SKI, soft key id."""
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        bits = public_key.public_bytes(serialization.Encoding.X962,
                                       serialization.PublicFormat.UncompressedPoint)
    return hashlib.sha1(bits).digest()


def algorithm_name(public_key: PublicKey) -> str:
    """rsa2048 ... ec-p256; curves outside the table as ec-<name>."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    curve = CURVES.get(public_key.curve.name)
    return f"ec-{curve.short}" if curve else f"ec-{public_key.curve.name}"


def signature_hash(public_key: PublicKey) -> SignatureHash:
    if isinstance(public_key, rsa.RSAPublicKey):
        return RSA_SIGNATURE_HASH()
    curve = CURVES.get(public_key.curve.name)
    return curve.hash() if curve else hashes.SHA256()


def same_key(a: object, b: object) -> bool:
    """Two public keys (e.g. a certificate's and a key's) are the same key."""
    if not isinstance(a, PublicKey) or not isinstance(b, PublicKey):
        return False
    return key_id(a) == key_id(b)


def public_key_sha256(public_key: PublicKeyTypes) -> str:
    """SHA-256 of the SubjectPublicKeyInfo, lowercase hex: a key pair's identity in the
    registry and the pin a consultation keeps of its keys (any certificate of the key
    has the same)."""
    return hashlib.sha256(public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


class OaepPadding(OAEP):
    """cryptography's OAEP (MGF1) with its parameters public.

    cryptography keeps the MGF1 hash and the label private, and a device needs
    both: the envelope hands these to Identity.decrypt, and a driver reads them here.
    """

    def __init__(self, algorithm: hashes.HashAlgorithm, mgf_algorithm: hashes.HashAlgorithm,
                 label: bytes | None = None) -> None:
        super().__init__(mgf=MGF1(mgf_algorithm), algorithm=algorithm, label=label)
        self.mgf_algorithm = mgf_algorithm
        self.label = label
