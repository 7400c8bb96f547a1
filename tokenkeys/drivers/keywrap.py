"""Software halves of key wrapping, shared by every driver's export/import/transport.

AES key wrap with padding (RFC 5649, CKM_AES_KEY_WRAP_PAD) of a PKCS#8 private
key, and RSA-OAEP of the ephemeral AES key (CKM_RSA_PKCS_OAEP). Devices that
pad the PKCS#8 before wrapping (SoftHSM2 zero-pads to a multiple of 8) are
handled by trimming to the DER length.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from tokenkeys.errors import DeviceError, UsageError
from tokenkeys.i18n import _
from tokenkeys.keyalg import OAEP_HASHES

# OAEP for transport: SHA-1 because SoftHSM2 wraps and unwraps with nothing else
# (docs/drivers.md, "Facts measured"). OAEP's security does not rest on the hash's
# collision resistance.
TRANSPORT_OAEP = "sha1"
TRANSPORT_BITS = 3072  # RSA transport key pairs, both drivers


def oaep(hash_name: str) -> padding.OAEP:
    try:
        algorithm = OAEP_HASHES[hash_name]()
    except KeyError:
        raise UsageError(_("unknown OAEP hash {hash_name!r}").format(hash_name=hash_name)) from None
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)


def der_length(data: bytes | bytearray) -> int:
    """Length of the DER element at the start of `data` (tag, length, value)."""
    if len(data) < 2:
        raise DeviceError(_("unwrapped key is too short to be DER"))
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        raise DeviceError(_("unwrapped key has a bad DER length"))
    return 2 + count + int.from_bytes(data[2:2 + count], "big")


def trim_der(data: bytearray) -> bytearray:
    """Drop the padding a device added after the PKCS#8 DER (in place, wiping it)."""
    end = der_length(data)
    if end > len(data):
        raise DeviceError(_("unwrapped key is shorter than its DER length"))
    if any(data[end:]):
        raise DeviceError(_("unwrapped key has non-zero bytes after its DER"))
    del data[end:]
    return data


def wrap_pkcs8(aes_key: bytes, pkcs8: bytes | bytearray) -> bytes:
    return aes_key_wrap_with_padding(aes_key, bytes(pkcs8))


def unwrap_pkcs8(aes_key: bytes, wrapped: bytes) -> bytearray:
    try:
        return trim_der(bytearray(aes_key_unwrap_with_padding(aes_key, wrapped)))
    except InvalidUnwrap:
        raise DeviceError(_("the wrapped key does not unwrap (integrity check failed)")) from None


def wipe(buffer: bytearray) -> None:
    """Overwrite a secret buffer; as far as Python allows (copies may remain)."""
    buffer[:] = bytes(len(buffer))
