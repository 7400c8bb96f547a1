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
from asn1crypto import keys as a1keys
from asn1crypto import pkcs12 as a1p12
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from tokenkeys import keyalg
from tokenkeys.errors import (
    CertificateRefused,
    FileMalformed,
    PassphraseWeak,
    UsageError,
)
from tokenkeys.files import MAX_PKCS12
from tokenkeys.i18n import N_, _
from tokenkeys.services import pkcs12_read as p12read
from tokenkeys.services.ca import is_ca_certificate
from tokenkeys.types import Secret

# 600,000: OWASP's 2023 figure for PBKDF2-HMAC-SHA256 (about 0.07 s per derivation
# here; a file costs three: key, certificates, MAC). With the 12-character minimum
# below it makes offline guessing slow, while export and import stay under a second.
ITERATIONS = 600_000
MIN_LENGTH = 12
MIN_DISTINCT = 6
MAX_FILE = MAX_PKCS12
MODERN = "AES-256-CBC, PBKDF2-HMAC-SHA256, MAC HMAC-SHA256"
LEGACY = "TripleDES-CBC (pbeWithSHA1And3-KeyTripleDES), MAC HMAC-SHA1"
LEGACY_WARNING = (
    N_("--legacy: TripleDES and SHA-1 are weak; use this file only for systems that cannot "
       "read AES-256 PKCS#12 files, and delete it once imported")
)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Contents:
    """What a PKCS#12 file held: the key, its certificate, the rest of the chain."""

    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    friendly_name: str | None
    protection: str = ""
    warnings: tuple[str, ...] = ()


def check_strength(passphrase: Secret, designation: str) -> None:
    """Refuse a passphrase too weak to protect a key that opens every bid."""
    text = passphrase.reveal()
    problem = None
    if len(text) < MIN_LENGTH:
        problem = _("it has fewer than {count} characters").format(count=MIN_LENGTH)
    elif len(set(text)) < MIN_DISTINCT:
        problem = _("it has fewer than {count} different characters").format(count=MIN_DISTINCT)
    elif len(designation) >= 4 and designation.casefold() in text.casefold():
        problem = _("it contains the key's name")
    if problem:
        raise PassphraseWeak(
            _("passphrase refused: {problem}. Anyone who copies the file can try passphrases "
              "offline, so use at least {MIN_LENGTH} characters, {MIN_DISTINCT} of them "
              "different, not the key's name (four or more unrelated words work well)")
            .format(problem=problem, MIN_LENGTH=MIN_LENGTH, MIN_DISTINCT=MIN_DISTINCT)
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


def remac(der: bytes, passphrase: Secret, iterations: int) -> bytes:
    """`der` with its MAC recomputed (same hash, new salt) at `iterations`."""
    pfx = a1p12.Pfx.load(der)
    old = pfx["mac_data"]
    hash_name = old["mac"]["digest_algorithm"]["algorithm"].native
    content = pfx["auth_safe"]["content"].native
    salt = secrets.token_bytes(16)
    size = hashlib.new(hash_name).digest_size
    key = p12read.pkcs12_kdf(hash_name, passphrase, salt, 3, iterations, size)
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


MAX_RSA_BITS = 16384  # loading checks the key: bounded, as the file is not trusted
MAX_CHAIN = 8  # issuers kept above the key's certificate (a real chain has 1 to 3)
MAX_VERIFY = 64  # signature checks spent on linking them


def _private_key(der: bytes, where: str) -> PrivateKey:
    """The key, once its algorithm (read by asn1crypto, before cryptography loads it:
    no deprecation warning, no TypeError) is one tokenkeys keeps."""
    try:
        info = a1keys.PrivateKeyInfo.load(der)
        kind = info["private_key_algorithm"]["algorithm"].native
        curve = info["private_key_algorithm"]["parameters"] if kind == "ec" else None
        name = (curve.chosen.native if curve is not None and curve.name == "named"
                else _("explicit parameters"))
        bits = info.bit_size if kind == "rsa" else 0
    except Exception:  # asn1crypto raises ValueError, TypeError, KeyError... on bad input
        raise FileMalformed(_("{where} holds a damaged private key").format(where=where)) from None
    names = {"rsassa_pss": "RSA-PSS", "dsa": "DSA", "ed25519": "Ed25519", "ed448": "Ed448",
             "x25519": "X25519", "x448": "X448"}
    if kind == "ec":
        if name not in keyalg.CURVES:
            raise UsageError(_("the key in {where} is on curve {name}: tokenkeys keeps RSA "
                               "(2048 bits or more) and EC P-256/P-384 keys")
                             .format(where=where, name=name))
    elif kind != "rsa":
        shown = names.get(kind, str(kind))
        raise UsageError(_("the key in {where} is {shown}: tokenkeys keeps RSA (2048 bits or "
                           "more) and EC P-256/P-384 keys").format(where=where, shown=shown))
    elif bits > MAX_RSA_BITS:
        raise UsageError(_("the key in {where} is RSA-{bits}: tokenkeys keeps RSA (2048 bits "
                           "or more, up to {MAX_RSA_BITS}) and EC P-256/P-384 keys")
                         .format(where=where, bits=bits, MAX_RSA_BITS=MAX_RSA_BITS))
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FileMalformed(_("{where} holds a damaged private key").format(where=where)) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError(_("the key in {where} is {name__}: tokenkeys keeps RSA (2048 bits "
                           "or more) and EC P-256/P-384 keys")
                         .format(where=where, name__=type(key).__name__))
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < keyalg.MIN_RSA_BITS:
        raise UsageError(_("the key in {where} is RSA-{key_size}: below 2048 bits it is too "
                           "weak to protect bids").format(where=where, key_size=key.key_size))
    return key


def parse(data: bytes, passphrase: Secret, where: str) -> Contents:
    """Open a PKCS#12 file: modern (PBES2/AES), legacy (3DES, RC2), OpenSSL, Windows,
    Java, NSS or Bouncy Castle made (pkcs12_read: every count bounded first). Runs the
    derivations in a worker thread so that Ctrl-C stops them at once."""
    if len(data) > MAX_FILE:
        raise FileMalformed(_("{where} is larger than {MAX_FILE} bytes: not a key file")
                            .format(where=where, MAX_FILE=MAX_FILE))
    return p12read.interruptibly(lambda: _parse(data, passphrase, where))


def _parse(data: bytes, passphrase: Secret, where: str) -> Contents:
    opened = p12read.read(data, passphrase, where)
    if opened.key is None:
        raise FileMalformed(_("{where} holds no private key (only certificates?)")
                            .format(where=where))
    key = _private_key(opened.key, where)
    certs: list[tuple[x509.Certificate, bytes | None, str | None]] = []
    for der, key_id, name in opened.certificates:
        try:
            certs.append((x509.load_der_x509_certificate(der), key_id, name))
        except ValueError:
            raise FileMalformed(
                _("{where} holds a damaged certificate").format(where=where)) from None
    if not certs:
        raise FileMalformed(_("{where} holds no certificate for its key").format(where=where))
    mine = [c for c in certs if keyalg.same_key(c[0].public_key(), key.public_key())]
    if not mine:
        raise CertificateRefused(_("the certificate in {where} does not belong to its "
                                   "private key; nothing was imported").format(where=where))
    leaf, _key, leaf_name = mine[0]
    others = [c for c, _, _ in certs if c is not leaf]
    chain = linked_chain(leaf, others)
    warnings = _warnings(opened, where, len(others) - len(chain))
    name = leaf_name or opened.key_name
    return Contents(key, leaf, tuple(chain), name, protection(opened), warnings)


def _warnings(opened: p12read.Opened, where: str, dropped: int) -> tuple[str, ...]:
    out = []
    if not opened.has_mac:
        out.append(_("{where} has no MAC: its integrity was not protected, so nothing proves "
                     "it is the file that was made; import it only if it came to you by a "
                     "channel you trust").format(where=where))
    if dropped:
        out.append(_("{dropped} certificate(s) in {where} do not link the key's certificate "
                     "towards a root (or exceed {MAX_CHAIN} issuers): not stored")
                   .format(dropped=dropped, where=where, MAX_CHAIN=MAX_CHAIN))
    weak = _weakness(opened, where)
    return (*out, *weak)


STRONG_ITERATIONS = 100_000


def protection(opened: p12read.Opened) -> str:
    """How the file was protected: each part's encryption and count, then the MAC."""
    parts = [f"{p.what}: {p.name}, {p.iterations} iterations" for p in opened.protections]
    return "; ".join(parts) if parts else _("no encryption")


def _weakness(opened: p12read.Opened, where: str) -> tuple[str, ...]:
    """A warning when the file was weakly protected (legacy cipher, few iterations)."""
    found = [p for p in opened.protections if p.what != "MAC"]
    reasons = []
    if any(p.legacy for p in found):
        reasons.append(_("a legacy cipher"))
    fewest = min((p.iterations for p in found), default=STRONG_ITERATIONS)
    if fewest < STRONG_ITERATIONS:
        reasons.append(f"only {fewest} iterations")
    if not reasons:
        return ()
    return (_("{where} was weakly protected ({reasons}): delete it once imported, and make "
              "the next one with `share export` (AES-256, 600000 iterations)")
            .format(where=where, reasons=' and '.join(reasons)),)


def linked_chain(leaf: x509.Certificate,
                 others: list[x509.Certificate]) -> list[x509.Certificate]:
    """The issuers of `leaf`, nearest first, each a CA certificate whose signature
    verifies, up to a self-issued root or MAX_CHAIN; the other certificates are dropped.
    At most MAX_VERIFY signature checks, whatever the file holds."""
    chain: list[x509.Certificate] = []
    rest = list(others)
    current, budget = leaf, MAX_VERIFY
    while len(chain) < MAX_CHAIN and current.issuer != current.subject and budget > 0:
        issuer = None
        for candidate in [c for c in rest if c.subject == current.issuer]:
            if budget <= 0:
                break
            budget -= 1
            if not is_ca_certificate(candidate):
                continue
            try:
                current.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            issuer = candidate
            break
        if issuer is None:
            break
        chain.append(issuer)
        rest.remove(issuer)
        current = issuer
    return chain
