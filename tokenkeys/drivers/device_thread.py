"""One thread owns the device; envelope work runs beside it.

python-pkcs11 segfaults when two threads call into SoftHSM2 at once
(docs/drivers.md). But it releases the GIL inside C_Decrypt, so parsing, AES and
file I/O of other envelopes can overlap the device's RSA step, as long as
every PKCS#11 call is made from a single thread. DeviceBoundIdentity forwards
the two device operations of a key (an envelope Identity) to that thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from tokenkeys.drivers.base import ConfinableKey, KeyHandle

T = TypeVar("T")


class DeviceThread:
    """Serialises calls onto one dedicated thread. Use as a context manager."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenkeys-device")

    def run(self, fn: Callable[[], T]) -> T:
        return self._pool.submit(fn).result()

    def __enter__(self) -> DeviceThread:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def confine(key: KeyHandle, device: DeviceThread) -> KeyHandle | DeviceBoundIdentity:
    """The key with its device calls on `device`.

    A key with the ConfinableKey capability keeps its software steps (OAEP
    decoding, KDF) in the caller's thread, so the device thread does nothing but
    device calls; any other key is wrapped whole. Undo with release().
    """
    if isinstance(key, ConfinableKey):
        key.run_device_calls_with(device.run)
        return key
    return DeviceBoundIdentity(key, device)


def release(key: KeyHandle) -> None:
    if isinstance(key, ConfinableKey):
        key.run_device_calls_with(None)


class DeviceBoundIdentity:
    """A key whose device operations all run on the DeviceThread (an envelope
    Identity: the driver layer does not import the envelope layer)."""

    def __init__(self, identity: KeyHandle, device: DeviceThread) -> None:
        self._identity = identity
        self._device = device
        self.label: str = identity.label
        self.public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = identity.public_key
        self.certificate: x509.Certificate | None = identity.certificate

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        return self._device.run(lambda: self._identity.decrypt(ciphertext, padding))

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        return self._device.run(lambda: self._identity.derive_ecdh(peer_public))
