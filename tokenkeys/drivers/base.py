"""The driver contract: a Token (context manager) and the KeyHandles it yields.

Small on purpose. Optional capabilities (wrap/unwrap) are separate protocols.
A KeyHandle satisfies tokenkeys.envelope.Identity.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from tokenkeys import keyalg
from tokenkeys.errors import KeyNotFound, MultipleKeysFound, UsageError
from tokenkeys.i18n import _
from tokenkeys.types import KeySpec, KeyType, PinSource, TokenInfo

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
# Label prefix of a key pair that a run is still making (generation, renewal, device copy):
# PROVISIONAL + NAME + ":" + 8 hex digits (a chain certificate adds "/chain-NN"). The
# private key takes NAME just before the registry records the key, the other objects
# just after (services.interrupted); deleting such a key also removes objects under its
# label.
PROVISIONAL = "tokenkeys-provisional:"
_STEM = re.compile(re.escape(PROVISIONAL) + r".*:[0-9a-f]{8}", re.DOTALL)


def provisional_stem(label: str) -> str | None:
    """The provisional label of the run that made an object (a chain suffix dropped);
    None for any other label."""
    match = _STEM.match(label)
    return match.group(0) if match else None

T = TypeVar("T")
# Runs one device call and returns its result (e.g. on a dedicated thread).
Runner = Callable[[Callable[[], Any]], Any]
# What doctor calls a device, by the kind of thing it is.
HSM, TPM, SMARTCARD, SOFTWARE = "HSM", "TPM", "smartcard", "software"


@dataclass(frozen=True)
class DeviceFacts:
    """What a driver knows of its device, read from the module and its profile; the
    rules saying what that lets tokenkeys do live in services/device_caps.py."""

    device_class: str  # HSM, TPM, smartcard or software
    mechanisms: frozenset[str]
    # Key generation: (min, max) bits per key type, from the module's mechanism info
    # (C_GetMechanismInfo); a key type without generation is absent.
    key_sizes: dict[KeyType, tuple[int, int]] = field(default_factory=dict)
    # (hash, MGF1 hash, label?) known to work in on-device OAEP; None: not known.
    known_oaep: frozenset[tuple[str, str, bool]] | None = None
    sign_avoid: frozenset[str] = frozenset()  # hash-and-sign mechanisms that do not work
    decryption_key_signs: bool = True  # False: an OpenPGP card's decryption key
    wraps: bool = False  # a shareable key can leave wrapped (share export, share copy)
    in_software: bool = False  # tokenkeys holds the keys itself (the software keystore)


@runtime_checkable
class ConfinableKey(Protocol):
    """Optional capability: send every device call through `runner`, or back to the
    calling thread with None. Software work (OAEP decoding...) stays with the caller."""

    def run_device_calls_with(self, runner: Runner | None) -> None: ...


class KeyHandle(ABC):
    """A private key that stays on its device, with its public half and certificate."""

    id: bytes
    label: str
    public_key: PublicKey
    certificate: x509.Certificate | None
    extractable: bool
    # Its private key has its name but another of its objects is still under a
    # provisional label: a run is making it, or was killed doing so (drivers whose
    # objects carry labels of their own set it when they list keys).
    unfinished: bool = False

    @property
    @abstractmethod
    def uri(self) -> str:
        """The key's URI, made from its current label (a rename changes it)."""

    @abstractmethod
    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """RSA decrypt on the device. Requires login.

        OAEP goes through tokenkeys.drivers.negotiate (device OAEP, else raw RSA
        plus software decoding, else MechanismUnsupported).
        """

    @abstractmethod
    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """Sign on the device: PKCS#1 v1.5 for RSA, DER-encoded ECDSA for EC. Requires login."""

    @abstractmethod
    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        """Return the raw ECDH shared secret Z (CKD_NULL). Requires login."""

    @property
    def key_type(self) -> KeyType:
        return KeyType.RSA if isinstance(self.public_key, rsa.RSAPublicKey) else KeyType.EC

    @property
    def key_size(self) -> int:
        return self.public_key.key_size if isinstance(self.public_key, rsa.RSAPublicKey) else (
            self.public_key.curve.key_size
        )

    @property
    def algorithm_name(self) -> str:
        return keyalg.algorithm_name(self.public_key)


@dataclass(frozen=True)
class UnusableKey:
    """An object on the token that tokenkeys cannot use (half-written key, unknown
    curve...): listed with the reason, skipped by every operation."""

    label: str
    id: bytes
    reason: str


def lookup_terms(label: str | None, key_id: bytes | None) -> tuple[dict[str, object], str]:
    """find_key's search attributes, and how to name them in a message."""
    if label is None and key_id is None:
        raise UsageError(_("find_key needs a label or an id"))
    query: dict[str, object] = {}
    if label is not None:
        query["label"] = label
    if key_id is not None:
        query["id"] = key_id
    what = f"label {label!r}" if label is not None else f"id {(key_id or b'').hex()}"
    return query, what


def the_one(found: Sequence[T], what: str, where: str) -> T:
    """The single match: KeyNotFound or MultipleKeysFound otherwise, never None."""
    if not found:
        raise KeyNotFound(_("no key with {what} on {where}").format(what=what, where=where))
    if len(found) > 1:
        raise MultipleKeysFound(_("{count} keys with {what} on {where}: use the id")
                                .format(count=len(found), what=what, where=where))
    return found[0]


class Token(ABC):
    """A device (or software keystore) holding key pairs. Use as a context manager."""

    uri: str

    def __enter__(self) -> Token:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def info(self) -> TokenInfo: ...

    @abstractmethod
    def login(self, pin_source: PinSource) -> None:
        """Log the user in once. Raises PinIncorrect(tries_left) or PinLocked; never retries."""

    @abstractmethod
    def generate_keypair(self, spec: KeySpec) -> KeyHandle:
        """Generate on the device; non-extractable unless spec.shareable. Requires login.

        CKA_ID is SHA-1 of the public key (RFC 5280 method 1 subject key identifier).
        Raises KeyExists when spec.label is taken.
        """

    @abstractmethod
    def find_key(self, *, label: str | None = None, key_id: bytes | None = None) -> KeyHandle:
        """Raises KeyNotFound or MultipleKeysFound, never returns None."""

    @abstractmethod
    def list_keys(self) -> list[KeyHandle]:
        """Usable keys only; see unusable_keys()."""

    def unusable_keys(self) -> list[UnusableKey]:
        """Objects that look like keys but cannot be used, with the reason."""
        return []

    def inventory(self) -> tuple[list[KeyHandle], list[UnusableKey]]:
        """list_keys() and unusable_keys() together; a driver that scans the device
        for both overrides this to read it once."""
        return self.list_keys(), self.unusable_keys()

    @abstractmethod
    def set_label(self, key: KeyHandle, label: str) -> None:
        """Give the key pair (and its certificates) a new label. Requires login."""

    @abstractmethod
    def delete(self, key: KeyHandle) -> None:
        """Delete the private key, public key and certificate of `key`."""

    def label_private_key(self, key: KeyHandle, label: str) -> None:
        """First step of naming a new key, before the registry records it: the private
        key takes `label`. A driver whose set_label is one atomic write does nothing
        here and names the whole key in label_public_objects. Requires login."""
        return None

    def label_public_objects(self, key: KeyHandle, label: str,
                             certificate: x509.Certificate | None = None) -> None:
        """Last step, after the registry has recorded the key: every other object
        takes `label`, never by rewriting a recorded key's private key in place where
        a kill could lose it; running it again after a kill finishes it, rebuilding a
        lost public key (or certificate, from `certificate`). Requires login."""
        self.set_label(key, label)

    def discard_unfinished(self, key: KeyHandle) -> None:
        """Delete a key an interrupted run left that no registry records, whatever
        label its private key already has: the private key first. Requires login."""
        self.delete(key)

    def provisional_objects(self) -> list[UnusableKey]:
        """Every object whose label starts with PROVISIONAL, whatever its class, even a
        lone public key or certificate (reason: what it is). Requires login."""
        return [UnusableKey(k.label, k.id, "key pair") for k in self.list_keys()
                if k.label.startswith(PROVISIONAL)]

    def destroy_provisional(self, label: str) -> None:
        """Destroy every object labelled exactly `label`, a provisional label (anything
        else is refused). Requires login."""
        if not label.startswith(PROVISIONAL):
            raise UsageError(_("{label!r} is not a provisional label: nothing destroyed")
                             .format(label=label))
        for key in self.list_keys():
            if key.label == label:
                self.delete(key)

    def blank_objects(self) -> list[UnusableKey]:
        """Objects with no label, no id and no value: what a process killed inside the
        device's object creation leaves (reason: what it is). Requires login."""
        return []

    def destroy_blank(self) -> None:
        """Destroy the objects blank_objects() lists. Requires login."""
        for _blank in self.blank_objects():  # a driver that lists some destroys them
            raise UsageError(_("this driver cannot destroy half-written objects"))

    @abstractmethod
    def mechanisms(self) -> frozenset[str]:
        """Mechanism names (CKM_… without the prefix, e.g. 'RSA_PKCS_OAEP')."""

    def facts(self) -> DeviceFacts:
        """What the device is and offers (doctor, `key list`'s envelope kinds); a
        driver that knows more than its mechanism names overrides this."""
        return DeviceFacts(HSM, self.mechanisms())
