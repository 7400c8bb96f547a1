"""Optional driver capabilities: separate protocols, checked with isinstance at the edge.

The core contract (drivers.base.Token / KeyHandle) is small on purpose. A workflow
that needs more asks for a capability with `require(token, Capability, "what")`,
which raises MechanismUnsupported naming what the device lacks.

Every capability is implemented once for the PKCS#11 token (both bindings) and
once for the software keystore, where it makes sense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tokenkeys.drivers.base import KeyHandle, PublicKey
from tokenkeys.errors import MechanismUnsupported
from tokenkeys.types import KeyType, PinSource, Secret

C = TypeVar("C")


def require(token: object, capability: type[C], what: str) -> C:
    """`token` as `capability`, or MechanismUnsupported("what", ...)."""
    if not isinstance(token, capability):
        raise MechanismUnsupported(what, [f"{type(token).__name__} lacks {capability.__name__}"])
    return token


@runtime_checkable
class CertificateStore(Protocol):
    """Certificates kept on the device (or beside the key) with the key's CKA_ID and label."""

    def store_certificate(
        self, key: KeyHandle, certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> None:
        """Store `certificate` (checked to be `key`'s), replacing the one it had, and
        the chain where the device allows it (else beside the key), and set
        `key.certificate`. New objects are written before old ones are removed.
        Requires login (SO on some cards)."""

    def certificate_chain(self, key: KeyHandle) -> list[x509.Certificate]:
        """The issuer certificates stored with `key` (leaf excluded), nearest first."""


@runtime_checkable
class SoAdministration(Protocol):
    """Devices that need the SO (admin) PIN for provisioning (OpenPGP cards)."""

    def set_so_pin_source(self, source: PinSource) -> None:
        """Where the SO PIN comes from; default TOKENKEYS_SO_PIN, else a prompt."""

    def keygen_slot(self) -> bytes | None:
        """The fixed CKA_ID a new key pair goes into (OpenPGP: 02), or None when
        the device lets tokenkeys choose (then CKA_ID = SHA-1 of the public key)."""


@runtime_checkable
class PinChange(Protocol):
    """Tokens whose user PIN tokenkeys itself changes (the software keystore)."""

    def change_pin(self, new_pin: Secret) -> None:
        """Set a new PIN, checked against the token's PIN policy. Requires login."""


@runtime_checkable
class KeyExport(Protocol):
    """Bring an extractable private key out, for a PKCS#12 file."""

    def export_private_key(self, key: KeyHandle) -> bytearray:
        """PKCS#8 DER of `key`. On a device it leaves wrapped (C_WrapKey under an
        ephemeral AES key, CKM_AES_KEY_WRAP_PAD) and is unwrapped here, in memory
        only. The caller wipes the bytearray. Raises PolicyRefused for a key that
        is not extractable. Requires login."""


@runtime_checkable
class KeyImport(Protocol):
    """Put a private key (from a PKCS#12 file) onto the device."""

    def import_private_key(
        self, pkcs8: bytes | bytearray, *, label: str, shareable: bool,
    ) -> KeyHandle:
        """Create the key pair from PKCS#8 DER, with CKA_ID = SHA-1 of the public
        key. On a device it arrives wrapped (C_UnwrapKey under an ephemeral AES
        key). Sensitive, and non-extractable unless `shareable`. On failure nothing
        is left behind. Raises KeyExists when that key is already there. Requires login."""


@dataclass(frozen=True)
class TransportKey:
    """A target device's transient RSA key pair, for one device-to-device copy."""

    public_key: rsa.RSAPublicKey
    handle: object  # driver-private reference to the transient private key


@dataclass(frozen=True)
class WrappedKey:
    """A private key wrapped for a transport key: never the key in clear."""

    key_type: KeyType
    wrapped_aes: bytes  # the ephemeral AES-256 key under the transport key (RSA-OAEP)
    oaep_hash: str  # "sha1" where the device allows only that (SoftHSM2)
    wrapped_key: bytes  # the private key under the AES key (CKM_AES_KEY_WRAP_PAD)
    # The key's public half (not secret): a device cannot derive an EC public point
    # from an unwrapped private key object, and CKA_ID is computed from it.
    public_key: PublicKey | None = None


@runtime_checkable
class KeyTransport(Protocol):
    """Device-to-device copy: the private key never exists in clear outside the devices."""

    def create_transport_key(self) -> TransportKey:
        """Target side: a transient (session) RSA key pair that can only unwrap."""

    def wrap_for_transport(self, key: KeyHandle, transport: rsa.RSAPublicKey) -> WrappedKey:
        """Source side: wrap `key` under an ephemeral AES key, and that key under
        `transport`. The ephemeral key is destroyed before returning."""

    def unwrap_transported(
        self, transport: TransportKey, wrapped: WrappedKey, *, label: str, shareable: bool,
    ) -> KeyHandle:
        """Target side: unwrap the AES key, then the private key; store the public key."""

    def destroy_transport_key(self, transport: TransportKey) -> None:
        """Target side: destroy the transient key pair (idempotent)."""
