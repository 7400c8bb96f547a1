"""KeyExport, KeyImport and KeyTransport for the software keystore (`soft:DIR`).

SoftwareToken's methods delegate here. The key is in software anyway, so
"wrapping" is done with the same primitives a device uses (AES key wrap with
padding, RSA-OAEP), which lets a copy go soft -> device and device -> soft.
A key's `extractable` flag is honoured as policy: a key generated without
--shareable is refused, as a device would refuse it.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tokenkeys import keyalg
from tokenkeys.drivers.base import KeyHandle
from tokenkeys.drivers.capabilities import TransportKey, WrappedKey
from tokenkeys.drivers.keywrap import (
    TRANSPORT_BITS,
    TRANSPORT_OAEP,
    oaep,
    unwrap_pkcs8,
    wipe,
    wrap_pkcs8,
)
from tokenkeys.errors import DeviceError, KeyExists, UsageError
from tokenkeys.i18n import _

if TYPE_CHECKING:
    from tokenkeys.drivers.software import SoftwareToken



def export_private_key(token: SoftwareToken, key: KeyHandle) -> bytearray:
    private = token.shareable_private_key(key)
    return bytearray(private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))


def import_private_key(token: SoftwareToken, pkcs8: bytes | bytearray, *, label: str,
                       shareable: bool) -> KeyHandle:
    """Seal the PKCS#8 as generate_keypair does (SoftwareToken.store_key)."""
    token.require_pin()
    private = serialization.load_der_private_key(bytes(pkcs8), password=None)
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError(_("the software keystore keeps RSA and EC keys only"))
    public = private.public_key()
    key_id = keyalg.key_id(public)
    for _key_id, rec in token._records():
        if rec["label"] == label:
            raise KeyExists(_("a key named {label!r} already exists in {uri}")
                            .format(label=label, uri=token.uri))
        if rec["id"] == key_id.hex():
            raise KeyExists(_("this key is already in {uri} as {rec!r}")
                            .format(uri=token.uri, rec=rec['label']))
    return token.store_key(pkcs8, public, label=label, algorithm=keyalg.algorithm_name(public),
                           extractable=shareable, overwrite=False)


def create_transport_key() -> TransportKey:
    """An in-memory RSA key pair: nothing is written, so nothing can be left behind."""
    private = rsa.generate_private_key(65537, TRANSPORT_BITS)
    return TransportKey(public_key=private.public_key(), handle=private)


def wrap_for_transport(token: SoftwareToken, key: KeyHandle,
                       transport: rsa.RSAPublicKey) -> WrappedKey:
    pkcs8 = export_private_key(token, key)
    aes = bytearray(secrets.token_bytes(32))
    try:
        return WrappedKey(
            key_type=key.key_type,
            wrapped_aes=transport.encrypt(bytes(aes), oaep(TRANSPORT_OAEP)),
            oaep_hash=TRANSPORT_OAEP,
            wrapped_key=wrap_pkcs8(bytes(aes), pkcs8),
            public_key=key.public_key,
        )
    finally:
        wipe(aes)
        wipe(pkcs8)


def unwrap_transported(token: SoftwareToken, transport: TransportKey, wrapped: WrappedKey, *,
                       label: str, shareable: bool) -> KeyHandle:
    if not isinstance(transport.handle, rsa.RSAPrivateKey):
        raise UsageError(_("this transport key was not made by the software keystore"))
    try:
        aes = bytearray(transport.handle.decrypt(wrapped.wrapped_aes, oaep(wrapped.oaep_hash)))
    except ValueError:
        raise DeviceError(
            _("the wrapped AES key does not decrypt with the transport key")) from None
    try:
        pkcs8 = unwrap_pkcs8(bytes(aes), wrapped.wrapped_key)
    finally:
        wipe(aes)
    try:
        if wrapped.public_key is not None:
            private = serialization.load_der_private_key(bytes(pkcs8), password=None)
            if not keyalg.same_key(private.public_key(), wrapped.public_key):
                raise DeviceError(_("the unwrapped key is not the one announced"))
        return import_private_key(token, pkcs8, label=label, shareable=shareable)
    finally:
        wipe(pkcs8)
