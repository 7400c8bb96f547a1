"""Reading a PKCS#12 file without trusting it.

Every iteration count is checked against MAX_ITERATIONS before the derivation
that uses it; private keys are counted before any is decrypted; BER (NSS,
Bouncy Castle) is read as asn1crypto parses it, never through a deprecated
fallback; and the derivations release the GIL or run as Python loops, so that
`interruptibly` lets Ctrl-C through.

Hand-written on purpose: cryptography's load_pkcs12 does all of this in one call
that cannot bound the counts of bags nested in encrypted containers, returns one
key whatever the file holds, and cannot be interrupted. The primitives stay the
libraries': asn1crypto parses, cryptography decrypts and loads keys, hashlib
derives PBKDF2, pycryptodomex decrypts RC2 with a 40-bit key (cryptography's RC2
takes 128-bit keys only), which OpenSSL's -legacy files use for their certificates.
Only what no library offers is written here: RFC 7292 appendix B's KDF.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from asn1crypto import keys as a1keys
from asn1crypto import pkcs12 as a1p12
from Cryptodome.Cipher import ARC2
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, TripleDES
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tokenkeys.errors import FileMalformed, PassphraseIncorrect
from tokenkeys.i18n import _
from tokenkeys.types import Secret

# The ceiling of every iteration count (MAC, key bag, certificate container, PBKDF2
# or PKCS#12 KDF). Producers write: OpenSSL 2048, Windows 2000, the JDK 10000,
# tokenkeys itself 600000 (the largest known); ten times that, rounded up to 10**7.
MAX_ITERATIONS = 10_000_000
MAX_CONTAINERS = 4  # encrypted certificate containers: producers write one
MAX_DEPTH = 4  # SafeContents nested in SafeContents
HASHES = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})
# (cipher, key bytes, block bytes) of the PKCS#12 password-based encryptions.
_PKCS12_PBE = {
    "pkcs12_sha1_tripledes_3key": ("3des", 24, 8), "pkcs12_sha1_tripledes_2key": ("3des", 16, 8),
    "pkcs12_sha1_rc2_128": ("rc2", 16, 8), "pkcs12_sha1_rc2_40": ("rc2", 5, 8),
    "pkcs12_sha1_rc4_128": ("rc4", 16, 0), "pkcs12_sha1_rc4_40": ("rc4", 5, 0),
}
_PBES2_CIPHERS = {"aes128_cbc": ("aes", 16, 16), "aes192_cbc": ("aes", 24, 16),
                  "aes256_cbc": ("aes", 32, 16), "tripledes_3key": ("3des", 24, 8)}
NAMES = {
    "pkcs12_sha1_tripledes_3key": "TripleDES (SHA-1)", "pkcs12_sha1_tripledes_2key":
    "2-key TripleDES (SHA-1)", "pkcs12_sha1_rc2_40": "RC2-40 (SHA-1)", "pkcs12_sha1_rc2_128":
    "RC2-128 (SHA-1)", "pkcs12_sha1_rc4_40": "RC4-40 (SHA-1)", "pkcs12_sha1_rc4_128":
    "RC4-128 (SHA-1)",
}


@dataclass(frozen=True)
class Protection:
    what: str  # "key", "certificates" or "MAC"
    name: str  # "PBES2 aes256_cbc", "TripleDES (SHA-1)", "HMAC-SHA256"
    iterations: int
    legacy: bool


@dataclass
class Opened:
    """What a file holds, decrypted: PKCS#8 DER of its key (None: no key), its
    certificates (DER, localKeyId, friendlyName), how each part was protected."""

    key: bytes | None = None
    key_id: bytes | None = None
    key_name: str | None = None
    certificates: list[tuple[bytes, bytes | None, str | None]] = field(default_factory=list)
    protections: list[Protection] = field(default_factory=list)
    has_mac: bool = False


def _damaged(where: str) -> FileMalformed:
    return FileMalformed(_("{where} is not a PKCS#12 file, or it is damaged").format(where=where))


def _wrong(where: str) -> PassphraseIncorrect:
    return PassphraseIncorrect(_("the passphrase does not open {where} (or the file was "
                                 "altered since it was made); nothing was imported")
                               .format(where=where))


def _unreadable(where: str, name: str) -> FileMalformed:
    return FileMalformed(_("{where} uses an encryption tokenkeys cannot read ({name})")
                         .format(where=where, name=name))


def check_iterations(count: object, what: str, where: str) -> int:
    """The count, once it is within 1..MAX_ITERATIONS; refused before any derivation."""
    if not isinstance(count, int) or count <= 0:
        raise FileMalformed(_("{where} is damaged: its {what} iteration count is {count!r} "
                              "(it must be 1 or more)")
                            .format(where=where, what=what, count=count))
    if count > MAX_ITERATIONS:
        raise FileMalformed(_("{where} asks for {count} iterations for its {what}: tokenkeys "
                              "refuses more than {MAX_ITERATIONS} (no known tool writes over "
                              "600000), as deriving them would take minutes")
                            .format(where=where, count=count, what=what,
                                    MAX_ITERATIONS=MAX_ITERATIONS))
    return count


def pkcs12_kdf(hash_name: str, passphrase: Secret, salt: bytes, purpose: int,
               iterations: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 (purpose 1: key, 2: IV, 3: MAC key). A Python loop: it
    lets signals through, and costs about 1 s per million iterations here."""
    new: Callable[..., Any] = getattr(hashlib, hash_name)
    v = new().block_size
    password = (passphrase.reveal() + "\0").encode("utf-16-be")  # BMPString, NUL-terminated
    i_block = _fill(salt, v) + _fill(password, v)
    out = b""
    while True:
        a: bytes = new(bytes([purpose]) * v + i_block).digest()
        for _round in range(iterations - 1):
            a = new(a).digest()
        out += a
        if len(out) >= size:
            return out[:size]
        b = int.from_bytes(_fill(a, v), "big") + 1
        i_block = b"".join(
            ((int.from_bytes(i_block[j:j + v], "big") + b) % (1 << (8 * v))).to_bytes(v, "big")
            for j in range(0, len(i_block), v))


def _fill(data: bytes, v: int) -> bytes:
    """`data` repeated to fill whole v-byte blocks (RFC 7292 B.2 steps 2 and 3)."""
    if not data:
        return b""
    size = v * -(-len(data) // v)
    return (data * (size // len(data) + 1))[:size]


def _describe(alg: Any) -> tuple[str, int]:
    """(name, iterations) of a bag or container encryption, as asn1crypto parsed it."""
    name = alg["algorithm"].native
    if name == "pbes2":
        kdf = alg["parameters"]["key_derivation_func"]
        cipher = alg["parameters"]["encryption_scheme"]["algorithm"].native
        if kdf["algorithm"].native != "pbkdf2":
            return f"PBES2 {kdf['algorithm'].native}", 1
        return f"PBES2 {cipher}", kdf["parameters"]["iteration_count"].native
    if name in _PKCS12_PBE:
        return NAMES[name], alg["parameters"]["iterations"].native
    return str(name), 1


def _decrypt(alg: Any, ciphertext: bytes, passphrase: Secret, what: str, where: str) -> bytes:
    """Decrypt a bag or container; its iteration count was checked by the caller."""
    name = alg["algorithm"].native
    params = alg["parameters"]
    if name == "pbes2":
        kdf, scheme = params["key_derivation_func"], params["encryption_scheme"]
        cipher_name = scheme["algorithm"].native
        if kdf["algorithm"].native != "pbkdf2" or cipher_name not in _PBES2_CIPHERS:
            raise _unreadable(where, f"PBES2 {cipher_name}")
        kdf_params = kdf["parameters"]
        prf = kdf_params["prf"]["algorithm"].native.removeprefix("hmac_with_")
        salt = kdf_params["salt"]
        if prf not in HASHES or salt.name != "specified":
            raise _unreadable(where, f"PBKDF2 with {prf}")
        cipher, size, block = _PBES2_CIPHERS[cipher_name]
        iterations = check_iterations(kdf_params["iteration_count"].native, what, where)
        # hashlib's PBKDF2 releases the GIL: Ctrl-C is handled meanwhile (interruptibly).
        key = hashlib.pbkdf2_hmac(prf, passphrase.reveal().encode("utf-8"), salt.native,
                                  iterations, size)
        iv = scheme["parameters"].native
    elif name in _PKCS12_PBE:
        cipher, size, block = _PKCS12_PBE[name]
        iterations = check_iterations(params["iterations"].native, what, where)
        salt_bytes = params["salt"].native
        key = pkcs12_kdf("sha1", passphrase, salt_bytes, 1, iterations, size)
        iv = pkcs12_kdf("sha1", passphrase, salt_bytes, 2, iterations, 8) if block else b""
    else:
        raise _unreadable(where, str(name))
    if not isinstance(iv, bytes) or (block and len(iv) != block):
        raise _damaged(where)
    if cipher == "rc4":
        return Cipher(ARC4(key), None).decryptor().update(ciphertext)
    if not ciphertext or len(ciphertext) % block:
        raise _wrong(where)
    if cipher == "rc2":
        # The stub omits effective_keylen, which ARC2.new documents and takes.
        rc2 = ARC2.new(key, ARC2.MODE_CBC, iv=iv, effective_keylen=8 * size)  # type: ignore[call-arg]
        padded = rc2.decrypt(ciphertext)
    else:
        algorithm = algorithms.AES(key) if cipher == "aes" else TripleDES(key)
        dec = Cipher(algorithm, modes.CBC(iv)).decryptor()
        padded = dec.update(ciphertext) + dec.finalize()
    unpadder = padding.PKCS7(8 * block).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise _wrong(where) from None


def _check_mac(pfx: Any, content: bytes, passphrase: Secret, where: str) -> Protection:
    mac = pfx["mac_data"]
    hash_name = mac["mac"]["digest_algorithm"]["algorithm"].native
    if hash_name not in HASHES:
        raise _unreadable(where, f"MAC {hash_name}")
    iterations = check_iterations(mac["iterations"].native, "MAC", where)
    size = hashlib.new(hash_name).digest_size
    key = pkcs12_kdf(hash_name, passphrase, mac["mac_salt"].native, 3, iterations, size)
    if not hmac.compare_digest(hmac.new(key, content, hash_name).digest(),
                               mac["mac"]["digest"].native):
        raise _wrong(where)
    return Protection("MAC", f"HMAC-{hash_name.upper()}", iterations, hash_name == "sha1")


def _attributes(bag: Any) -> tuple[bytes | None, str | None]:
    key_id = name = None
    for attr in bag["bag_attributes"]:
        kind, values = attr["type"].native, attr["values"]
        if kind == "local_key_id" and len(values):
            key_id = values[0].native
        elif kind == "friendly_name" and len(values):
            name = values[0].native
    return key_id, name


def _bags(contents: Any, depth: int, where: str) -> list[Any]:
    """Every SafeBag, nested SafeContents flattened (at most MAX_DEPTH deep)."""
    if depth > MAX_DEPTH:
        raise FileMalformed(_("{where} nests its contents more than {MAX_DEPTH} levels deep")
                            .format(where=where, MAX_DEPTH=MAX_DEPTH))
    out: list[Any] = []
    for bag in contents:
        if bag["bag_id"].native == "safe_contents":
            out.extend(_bags(bag["bag_value"], depth + 1, where))
        else:
            out.append(bag)
    return out


def _refuse_many_keys(bags: list[Any], where: str) -> None:
    keys = sum(b["bag_id"].native in ("key_bag", "pkcs8_shrouded_key_bag") for b in bags)
    if keys > 1:
        raise FileMalformed(_("{where} holds {keys} private keys: tokenkeys imports a file "
                              "holding one key, so that it is clear which key is imported")
                            .format(where=where, keys=keys))


def read(data: bytes, passphrase: Secret, where: str) -> Opened:
    """Check the structure and every visible count, verify the MAC, decrypt the
    containers, count the keys, then decrypt the one key. No derivation before the
    counts it uses are checked. Errors: FileMalformed, PassphraseIncorrect."""
    try:
        pfx = a1p12.Pfx.load(data, strict=True)
        if pfx["version"].native not in ("v3", 3):
            raise _damaged(where)
        if pfx["auth_safe"]["content_type"].native != "data":
            raise FileMalformed(_("{where}: public-key protected PKCS#12 files are not "
                                  "supported").format(where=where))
        content = pfx["auth_safe"]["content"].native
        plain: list[Any] = []
        containers: list[Any] = []
        for info in a1p12.AuthenticatedSafe.load(content):
            kind = info["content_type"].native
            if kind == "data":
                plain.extend(_bags(a1p12.SafeContents.load(info["content"].native), 0, where))
            elif kind == "encrypted_data":
                containers.append(info["content"]["encrypted_content_info"])
            else:
                raise FileMalformed(_("{where}: public-key protected PKCS#12 files are not "
                                      "supported").format(where=where))
        has_mac = pfx["mac_data"].native is not None
        # Everything visible is checked before the first derivation.
        _refuse_many_keys(plain, where)
        if len(containers) > MAX_CONTAINERS:
            raise FileMalformed(_("{where} holds {count} encrypted containers: at most "
                                  "{MAX_CONTAINERS} are read")
                                .format(where=where, count=len(containers),
                                        MAX_CONTAINERS=MAX_CONTAINERS))
        if has_mac:
            check_iterations(pfx["mac_data"]["iterations"].native, "MAC", where)
        for c in containers:
            check_iterations(_describe(c["content_encryption_algorithm"])[1], "certificates", where)
        for b in plain:
            if b["bag_id"].native == "pkcs8_shrouded_key_bag":
                check_iterations(_describe(b["bag_value"]["encryption_algorithm"])[1], "key",
                                 where)
    except (FileMalformed, PassphraseIncorrect):
        raise
    except Exception:  # asn1crypto raises ValueError, TypeError, KeyError... on bad input
        raise _damaged(where) from None
    return _open(pfx, content, plain, containers, passphrase, where, has_mac)


def _open(pfx: Any, content: bytes, plain: list[Any], containers: list[Any],
          passphrase: Secret, where: str, has_mac: bool) -> Opened:
    opened = Opened(has_mac=has_mac)
    if has_mac:
        mac = _check_mac(pfx, content, passphrase, where)
    bags = list(plain)
    for c in containers:
        alg = c["content_encryption_algorithm"]
        name, count = _describe(alg)
        opened.protections.append(Protection("certificates", name, count,
                                             not name.startswith("PBES2 aes")))
        decrypted = _decrypt(alg, c["encrypted_content"].native or b"", passphrase,
                             "certificates", where)
        try:
            bags.extend(_bags(a1p12.SafeContents.load(decrypted), 0, where))
        except FileMalformed:
            raise
        except Exception:
            raise (_damaged(where) if has_mac else _wrong(where)) from None
    try:
        _refuse_many_keys(bags, where)
        for bag in bags:
            _take(opened, bag, passphrase, where)
    except (FileMalformed, PassphraseIncorrect):
        raise
    except Exception:
        raise _damaged(where) from None
    if has_mac:
        opened.protections.append(mac)
    return opened


def _take(opened: Opened, bag: Any, passphrase: Secret, where: str) -> None:
    kind, value = bag["bag_id"].native, bag["bag_value"]
    key_id, name = _attributes(bag)
    if kind == "cert_bag":
        if value["cert_id"].native == "x509":
            opened.certificates.append((bytes(value["cert_value"]), key_id, name))
        return
    if kind == "key_bag":
        opened.key = value.dump()
    elif kind == "pkcs8_shrouded_key_bag":
        alg = value["encryption_algorithm"]
        pkcs8 = _decrypt(alg, value["encrypted_data"].native, passphrase, "key", where)
        try:
            info = a1keys.PrivateKeyInfo.load(pkcs8, strict=True)
            _algorithm = info["private_key_algorithm"].native  # parsing it checks the key
        except Exception:
            raise (_damaged(where) if opened.has_mac else _wrong(where)) from None
        name_, count = _describe(alg)
        opened.protections.append(Protection("key", name_, count,
                                             not name_.startswith("PBES2 aes")))
        opened.key = pkcs8
    else:
        return
    opened.key_id, opened.key_name = key_id, name


T = TypeVar("T")


def interruptibly(work: Callable[[], T]) -> T:
    """Run `work` in a worker thread while this thread waits in short slices: a long
    derivation (up to MAX_ITERATIONS) never delays Ctrl-C, which is raised here while
    the daemon worker is abandoned (the process is about to exit)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    worker = threading.Thread(target=run, name="tokenkeys-pkcs12", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
