"""PKCS#12 (.p12/.pfx) files: write modern or Windows-legacy ones, read any common kind.

Modern output: AES-256-CBC under PBES2 with PBKDF2-HMAC-SHA256 for the key and
the certificates, and an HMAC-SHA256 MAC, every derivation at ITERATIONS.
cryptography fixes the MAC's iteration count at 2048, which would let an
attacker test passphrases against the MAC 300 times faster than against the
encryption, so the MAC is recomputed here at ITERATIONS (RFC 7292 appendix B).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from asn1crypto import algos as a1algos
from asn1crypto import pkcs12 as a1p12
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from tokenkeys import keyalg
from tokenkeys.errors import (
    CertificateRefused,
    FileMalformed,
    PassphraseIncorrect,
    PassphraseWeak,
    UsageError,
)
from tokenkeys.types import Secret

# 600,000: OWASP's 2023 figure for PBKDF2-HMAC-SHA256 (about 0.07 s per derivation
# here; a file costs three: key, certificates, MAC). With the 12-character minimum
# below it makes offline guessing slow, while export and import stay under a second.
ITERATIONS = 600_000
MIN_LENGTH = 12
MIN_DISTINCT = 6
MAX_FILE = 1 << 20  # a key, its certificate and a chain: a few KiB
MODERN = "AES-256-CBC, PBKDF2-HMAC-SHA256, MAC HMAC-SHA256"
LEGACY = "TripleDES-CBC (pbeWithSHA1And3-KeyTripleDES), MAC HMAC-SHA1"
LEGACY_WARNING = (
    "--legacy: TripleDES and SHA-1 are weak; use this file only for systems that cannot "
    "read AES-256 PKCS#12 files, and delete it once imported"
)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Contents:
    """What a PKCS#12 file held: the key, its certificate, the rest of the chain."""

    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    friendly_name: str | None


def check_strength(passphrase: Secret, designation: str) -> None:
    """Refuse a passphrase too weak to protect a key that opens every bid."""
    text = passphrase.reveal()
    problem = None
    if len(text) < MIN_LENGTH:
        problem = f"it has fewer than {MIN_LENGTH} characters"
    elif len(set(text)) < MIN_DISTINCT:
        problem = f"it has fewer than {MIN_DISTINCT} different characters"
    elif len(designation) >= 4 and designation.casefold() in text.casefold():
        problem = "it contains the key's name"
    if problem:
        raise PassphraseWeak(
            f"passphrase refused: {problem}. Anyone who copies the file can try passphrases "
            f"offline, so use at least {MIN_LENGTH} characters, {MIN_DISTINCT} of them "
            "different, not the key's name (four or more unrelated words work well)"
        )


def build(key: PrivateKey, certificate: x509.Certificate, chain: list[x509.Certificate],
          friendly_name: str, passphrase: Secret, *, legacy: bool = False) -> bytes:
    """The PKCS#12 DER (modern unless `legacy`), MAC at ITERATIONS."""
    password = passphrase.reveal().encode("utf-8")
    mac_hash: hashes.HashAlgorithm = hashes.SHA1() if legacy else hashes.SHA256()
    algorithm = (pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC if legacy
                 else pkcs12.PBES.PBESv2SHA256AndAES256CBC)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(ITERATIONS).key_cert_algorithm(algorithm).hmac_hash(mac_hash)
        .build(password)
    )
    der = pkcs12.serialize_key_and_certificates(
        friendly_name.encode("utf-8"), key, certificate, chain or None, encryption)
    return remac(der, passphrase, ITERATIONS)


def pkcs12_kdf(hash_name: str, passphrase: Secret, salt: bytes, purpose: int,
               iterations: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 key derivation (purpose 3: MAC key); size <= digest size."""
    v = hashlib.new(hash_name).block_size
    digest_size = hashlib.new(hash_name).digest_size
    if size > digest_size:
        raise UsageError("pkcs12_kdf: one block only")
    password = (passphrase.reveal() + "\0").encode("utf-16-be")  # BMPString, NUL-terminated
    block = hashlib.new(
        hash_name, bytes([purpose]) * v + _fill(salt, v) + _fill(password, v)).digest()
    for _ in range(iterations - 1):
        block = hashlib.new(hash_name, block).digest()
    return block[:size]


def _fill(data: bytes, v: int) -> bytes:
    """`data` repeated to fill whole v-byte blocks (RFC 7292 B.2 steps 2 and 3)."""
    if not data:
        return b""
    size = v * -(-len(data) // v)
    return (data * (size // len(data) + 1))[:size]


def remac(der: bytes, passphrase: Secret, iterations: int) -> bytes:
    """`der` with its MAC recomputed (same hash, new salt) at `iterations`."""
    pfx = a1p12.Pfx.load(der)
    old = pfx["mac_data"]
    hash_name = old["mac"]["digest_algorithm"]["algorithm"].native
    content = pfx["auth_safe"]["content"].native
    salt = secrets.token_bytes(16)
    size = hashlib.new(hash_name).digest_size
    key = pkcs12_kdf(hash_name, passphrase, salt, 3, iterations, size)
    mac = a1p12.MacData({
        "mac": {
            "digest_algorithm": a1algos.DigestAlgorithm({"algorithm": hash_name}),
            "digest": hmac.new(key, content, hash_name).digest(),
        },
        "mac_salt": salt,
        "iterations": iterations,
    })
    out: bytes = a1p12.Pfx({
        "version": pfx["version"], "auth_safe": pfx["auth_safe"], "mac_data": mac,
    }).dump()
    return out


def _check_structure(data: bytes, where: str) -> None:
    """FileMalformed unless `data` is a complete DER PKCS#12 (before any passphrase use)."""
    damaged = FileMalformed(f"{where} is not a PKCS#12 file, or it is damaged")
    if not data or data[0] != 0x30:
        raise damaged
    try:
        pfx = a1p12.Pfx.load(data, strict=True)
        if pfx["auth_safe"]["content_type"].native != "data":
            raise FileMalformed(f"{where}: public-key protected PKCS#12 files are not supported")
        pfx.authenticated_safe.native  # noqa: B018 - parses every ContentInfo
        if pfx["mac_data"].native is not None:
            pfx["mac_data"]["iterations"].native  # noqa: B018
    except FileMalformed:
        raise
    except Exception:  # asn1crypto raises ValueError, TypeError, KeyError... on bad input
        raise damaged from None


def parse(data: bytes, passphrase: Secret, where: str) -> Contents:
    """Open a PKCS#12 file: modern (PBES2/AES), legacy (3DES, RC2), OpenSSL or Windows made."""
    if len(data) > MAX_FILE:
        raise FileMalformed(f"{where} is larger than {MAX_FILE} bytes: not a key file")
    _check_structure(data, where)
    try:
        loaded = pkcs12.load_pkcs12(data, passphrase.reveal().encode("utf-8"))
    except UnsupportedAlgorithm:
        raise FileMalformed(f"{where} uses an encryption tokenkeys cannot read") from None
    except ValueError:
        raise PassphraseIncorrect(
            f"the passphrase does not open {where} (or the file was altered since it was "
            "made); nothing was imported"
        ) from None
    key = loaded.key
    if key is None:
        raise FileMalformed(f"{where} holds no private key (only certificates?)")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError(f"the key in {where} is {type(key).__name__}: tokenkeys keeps RSA "
                         "and EC P-256/P-384 keys")
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in keyalg.CURVES:
        raise UsageError(f"the key in {where} is on curve {key.curve.name}: tokenkeys keeps "
                         "EC keys on P-256 and P-384")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < keyalg.MIN_RSA_BITS:
        raise UsageError(f"the key in {where} is RSA-{key.key_size}: below 2048 bits it is "
                         "too weak to protect bids")
    certs = ([loaded.cert] if loaded.cert else []) + list(loaded.additional_certs)
    if not certs:
        raise FileMalformed(f"{where} holds no certificate for its key")
    mine = [c for c in certs if keyalg.same_key(c.certificate.public_key(), key.public_key())]
    if not mine:
        raise CertificateRefused(f"the certificate in {where} does not belong to its private key; "
                          "nothing was imported")
    leaf = mine[0]
    others = [c.certificate for c in certs if c is not leaf]
    name = leaf.friendly_name.decode("utf-8", "replace") if leaf.friendly_name else None
    return Contents(key, leaf.certificate, tuple(order_chain(leaf.certificate, others)), name)


_NAMES = {
    "pkcs12_sha1_tripledes_3key": "TripleDES (SHA-1)", "pkcs12_sha1_tripledes_2key":
    "2-key TripleDES (SHA-1)", "pkcs12_sha1_rc2_40": "RC2-40 (SHA-1)", "pkcs12_sha1_rc2_128":
    "RC2-128 (SHA-1)", "pkcs12_sha1_rc4_40": "RC4-40 (SHA-1)", "pkcs12_sha1_rc4_128":
    "RC4-128 (SHA-1)",
}
STRONG_ITERATIONS = 100_000


def _algorithm(alg: a1algos.EncryptionAlgorithm) -> tuple[str, int, bool]:
    """(name, iterations, legacy) of a PKCS#12 bag encryption."""
    name = alg["algorithm"].native
    if name == "pbes2":
        cipher = alg["parameters"]["encryption_scheme"]["algorithm"].native
        return f"PBES2 {cipher}", alg.kdf_iterations, not cipher.startswith("aes")
    return _NAMES.get(name, name), alg.kdf_iterations, True


def protection(data: bytes, where: str) -> tuple[str, tuple[str, ...]]:
    """How an (already opened) file is protected, and a warning when that is weak."""
    try:
        pfx = a1p12.Pfx.load(data)
        found: list[tuple[str, str, int, bool]] = []
        for info in pfx.authenticated_safe:
            if info["content_type"].native == "encrypted_data":
                alg = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
                found.append(("certificates", *_algorithm(alg)))
                continue
            for bag in a1p12.SafeContents.load(info["content"].native):
                if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                    found.append(("key", *_algorithm(bag["bag_value"]["encryption_algorithm"])))
        mac = pfx["mac_data"]
        parts = [f"{what}: {name}, {count} iterations" for what, name, count, _ in found]
        if mac.native is not None:
            mac_hash = mac["mac"]["digest_algorithm"]["algorithm"].native
            parts.append(f"MAC: HMAC-{mac_hash.upper()}, {mac['iterations'].native} iterations")
    except Exception:  # description only: the file itself was already opened
        return "unknown", ()
    reasons = []
    if any(legacy for *_, legacy in found):
        reasons.append("a legacy cipher")
    fewest = min((count for _, _, count, _ in found), default=STRONG_ITERATIONS)
    if fewest < STRONG_ITERATIONS:
        reasons.append(f"only {fewest} iterations")
    if not reasons:
        return "; ".join(parts), ()
    return "; ".join(parts), (
        f"{where} was weakly protected ({' and '.join(reasons)}): delete it once imported, "
        "and make the next one with `share export` (AES-256, 600000 iterations)",)


def order_chain(leaf: x509.Certificate,
                others: list[x509.Certificate]) -> list[x509.Certificate]:
    """Issuers nearest first (by name), then whatever does not chain, in file order."""
    ordered: list[x509.Certificate] = []
    rest = list(others)
    current = leaf
    while True:
        issuer = next((c for c in rest if c.subject == current.issuer
                       and c.subject != current.subject), None)
        if issuer is None:
            break
        ordered.append(issuer)
        rest.remove(issuer)
        current = issuer
    return ordered + rest
