"""RSAES-OAEP decoding (RFC 8017 section 7.1.2) of a raw RSA block.

Hand-written on purpose: no library exposes OAEP decoding of an already
RSA-decrypted block (cryptography and OpenSSL only decrypt with a key they
hold), and devices such as SoftHSM2 do OAEP with SHA-1 only, so SHA-2 OAEP is
raw CKM_RSA_X_509 on the device plus this decoder.

Every failure raises the same DecryptFailed with the same message, and the
checks run to the end before deciding, so the error does not tell an attacker
which step failed (Manger's attack).
"""

from __future__ import annotations

import hashlib
import hmac

from tokenkeys.errors import EnvelopeIntegrity
from tokenkeys.i18n import _
from tokenkeys.keyalg import OAEP_OPEN_HASHES

# cryptography hash names -> hashlib names (the same names).
HASHES: dict[str, str] = {name: name for name in OAEP_OPEN_HASHES}
_NONZERO = bytes([0] + [1] * 255)  # a byte -> 0 if it is zero, else 1


class DecryptFailed(EnvelopeIntegrity):
    """RSA decryption of a recipient failed. Uniform: carries no detail."""

    def __init__(self) -> None:
        super().__init__(_("RSA decryption failed: the envelope is damaged or not for this key"))


def mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    digest = HASHES[hash_name]
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.new(digest, seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def oaep_decode(
    block: bytes,
    key_bytes: int,
    hash_name: str = "sha256",
    mgf_hash_name: str | None = None,
    label: bytes | None = None,
) -> bytes:
    """Return M from the k-byte encoded message EM, or raise DecryptFailed."""
    if hash_name not in HASHES or (mgf_hash_name or hash_name) not in HASHES:
        raise ValueError(f"unsupported OAEP hash {hash_name!r}")
    digest = HASHES[hash_name]
    h_len = hashlib.new(digest).digest_size
    # Devices may strip leading zero bytes of the raw result.
    if len(block) > key_bytes or key_bytes < 2 * h_len + 2:
        raise DecryptFailed()
    em = block.rjust(key_bytes, b"\x00")
    l_hash = hashlib.new(digest, label or b"").digest()
    mgf_name = mgf_hash_name or hash_name
    masked_seed = em[1 : 1 + h_len]
    masked_db = em[1 + h_len :]
    seed = _xor(masked_seed, mgf1(masked_db, h_len, mgf_name))
    db = _xor(masked_db, mgf1(seed, key_bytes - h_len - 1, mgf_name))

    bad = em[0]
    bad |= 0 if hmac.compare_digest(db[:h_len], l_hash) else 1
    # PS || 0x01 || M: the first non-zero byte after lHash must be 0x01. Found without
    # a Python branch on the secret bytes: each byte becomes 0 or 1 (a translation in
    # C), and the first 1 is the highest bit of that string read as a number.
    rest = db[h_len:]
    flags = int.from_bytes(rest.translate(_NONZERO), "big")
    first = len(rest) - (flags.bit_length() + 7) // 8
    bad |= int(flags == 0)  # no separator at all
    bad |= int(rest[min(first, len(rest) - 1)] != 1)
    if bad:
        raise DecryptFailed()
    return rest[first + 1 :]
