"""Writing to a PKCS#11 token: key generation, certificates, labels, deletion.

Works on a P11Token through the Target protocol (its public members only), so
token.py and this module do not import each other at run time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tokenkeys import keyalg
from tokenkeys.drivers.base import PROVISIONAL, DeviceFacts, KeyHandle, PublicKey
from tokenkeys.drivers.p11 import ck, templates
from tokenkeys.drivers.p11.ckr import CkrError
from tokenkeys.drivers.p11.keys import read_public_key
from tokenkeys.drivers.p11.port import Port, Session, SlotToken, Template
from tokenkeys.drivers.p11.profiles import Profile
from tokenkeys.errors import (
    DeviceError,
    DeviceRemoved,
    KeyExists,
    MechanismUnsupported,
    PinMissing,
    TokenKeysError,
    TokenNotFound,
    UsageError,
)
from tokenkeys.i18n import _
from tokenkeys.types import KeySpec, KeyType
from tokenkeys.uri import parse_pkcs11

T = TypeVar("T")
# The reread helper needs no secret: it must not inherit one.
SECRET_ENV = ("TOKENKEYS_PIN", "TOKENKEYS_SO_PIN", "TOKENKEYS_PASSPHRASE", "PGPASSWORD")
CHAIN_MARK = "/chain-"
KEY_CLASSES = (ck.CKO_CERTIFICATE, ck.CKO_PUBLIC_KEY, ck.CKO_PRIVATE_KEY)


class Target(Protocol):
    port: Port
    module: str
    uri: str
    slot: SlotToken
    profile: Profile
    known_public: dict[bytes, PublicKey]

    def session(self) -> Session: ...

    def find(self, template: Template) -> list[Any]: ...

    def writing(self, fn: Callable[[], T]) -> T: ...

    def as_so(self, fn: Callable[[], T]) -> T: ...

    def reinitialise(self) -> None: ...

    def find_key(self, *, label: str | None = None, key_id: bytes | None = None) -> KeyHandle: ...

    def explain(self, code: int, what: str, offered: Sequence[str] = ()) -> TokenKeysError: ...

    def device_errors(self, what: str, offered: Sequence[str] = ()
                      ) -> contextlib.AbstractContextManager[None]: ...

    def mechanisms(self) -> frozenset[str]: ...


def child_environment() -> dict[str, str]:
    """This process's environment without the secrets (PINs, passphrase, password)."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_ENV}


def read_public_key_fresh(token: Target, key_id: bytes) -> PublicKey:
    """The public key with `key_id`, read by a new process (OpenSC 0.23)."""
    done = subprocess.run(
        [sys.executable, "-m", "tokenkeys.drivers.p11.reread", token.port.binding,
         token.module, token.slot.serial, key_id.hex()],
        capture_output=True, text=True, timeout=60, check=False, env=child_environment(),
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [_("no output")])[-1]
        raise DeviceError(_("re-reading the new public key failed: {reason}")
                          .format(reason=reason))
    key = serialization.load_der_public_key(bytes.fromhex(done.stdout.strip()))
    if not isinstance(key, PublicKey):
        raise MechanismUnsupported(_("this key type"), ["RSA", "EC"])
    return key


# What a key needs to leave a device wrapped (share.py): export and device-to-device.
WRAP_MECHANISMS = frozenset({"AES_KEY_WRAP_PAD"})


def device_facts(token: Target) -> DeviceFacts:
    """The token's class and quirks (its profile) and what its module says it offers:
    mechanisms, and key generation sizes from C_GetMechanismInfo."""
    sizes: dict[KeyType, tuple[int, int]] = {}
    for key_type, mech in templates.KEYGEN_MECH.items():
        info = token.port.mechanism_info(token.slot.slot, mech)
        if info is not None:
            sizes[key_type] = (info.min_key_size, info.max_key_size)
    profile, mechanisms = token.profile, token.mechanisms()
    return DeviceFacts(
        profile.device_class, mechanisms, sizes, profile.oaep, profile.sign_avoid,
        decryption_key_signs=profile.decryption_key_signs,
        # A card's fixed key slot never lets a key out (generate refuses --shareable).
        wraps=profile.keygen_slot is None and mechanisms >= WRAP_MECHANISMS)


def offered(token: Target) -> list[str]:
    out = []
    for name, mech in (("rsa", ck.CKM_RSA_PKCS_KEY_PAIR_GEN), ("ec", ck.CKM_EC_KEY_PAIR_GEN)):
        info = token.port.mechanism_info(token.slot.slot, mech)
        if info is not None:
            out.append(f"{name} {info.min_key_size}-{info.max_key_size} bits")
    return out


def _check_offered(token: Target, spec: KeySpec, mech: int) -> None:
    info = token.port.mechanism_info(token.slot.slot, mech)
    bits = keyalg.info(spec.algorithm).bits
    # Some modules give EC sizes in bytes or 0: check RSA only.
    if info is None or (spec.algorithm.is_rsa and info.max_key_size
                        and not info.min_key_size <= bits <= info.max_key_size):
        raise MechanismUnsupported(
            _("{algorithm} key generation").format(algorithm=spec.algorithm.value), offered(token))


def _label_taken(token: Target, label: str) -> bool:
    return any(token.find({ck.CKA_CLASS: cls, ck.CKA_LABEL: label})
               for cls in (ck.CKO_PRIVATE_KEY, ck.CKO_PUBLIC_KEY, ck.CKO_CERTIFICATE))


def generate(token: Target, spec: KeySpec) -> KeyHandle:
    """Generate a key pair; CKA_ID = SHA-1 of the public key unless the profile fixes it."""
    profile = token.profile
    if profile.keygen_slot is not None and spec.shareable:
        raise UsageError(_("keys generated on this card never leave it: --shareable is refused"))
    if spec.shareable and not token.mechanisms() >= WRAP_MECHANISMS:
        # Sharing wraps the key out under CKM_AES_KEY_WRAP_PAD (share.py); without it
        # an extractable key is only a weaker one (the TPM refuses them anyway).
        raise MechanismUnsupported(_("--shareable (a key is shared wrapped under "
                                     "CKM_AES_KEY_WRAP_PAD)"), [_("non-shareable keys")])
    if _label_taken(token, spec.label):
        raise KeyExists(_("a key or certificate labelled {label!r} already exists")
                        .format(label=spec.label))
    slot_id = profile.keygen_slot
    occupied = slot_id is not None and bool(
        token.find({ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_ID: slot_id}))
    if occupied and not spec.replace:
        # A bound consultation key must never be overwritten by mistake.
        raise KeyExists(_("token {label!r} already holds a key in slot {hex}: use --replace "
                          "to overwrite it on purpose")
                        .format(label=token.slot.label, hex=(slot_id or b'').hex()))
    if occupied and not profile.can_delete:
        # OpenSC refuses to generate over an existing key id (SC_ERROR_NON_UNIQUE_ID)
        # and cannot delete one on this card: say so before anything is sent.
        raise MechanismUnsupported(
            _("overwriting the key in slot {hex} of this card through PKCS#11 (card left "
              "unchanged)").format(hex=(slot_id or b'').hex()),
            [_("openpgp-tool --erase (erases every key and resets both PINs to the factory "
               "values), then key generate")])
    key_id = slot_id or os.urandom(20)
    mech, public_t, private_t = templates.keygen(spec, key_id,
                                                 decrypt_only=profile.decrypt_only_usage)
    if private_t.get(ck.CKA_DERIVE) and "ECDH1_DERIVE" not in token.mechanisms():
        # A device without ECDH (a TPM) makes an EC key that signs or derives, not
        # both, and refuses a pair asking for both: ask for what it can use.
        private_t[ck.CKA_DERIVE] = False
    _check_offered(token, spec, mech.mechanism)
    what = f"generating {spec.algorithm.value} key {spec.label!r}"

    made: list[Any] = []

    def run() -> tuple[Any, Any]:
        try:
            pair: tuple[Any, Any] = token.session().generate_key_pair(mech, public_t, private_t)
        except CkrError as exc:
            raise token.explain(exc.code, what, offered(token)) from None
        made.extend(pair)
        return pair

    with _removed_after_keygen(token, made, key_id, spec.label):
        if profile.keygen_needs_so:
            pub, priv = token.as_so(run)
        else:
            try:
                pub, priv = run()
            except PinMissing:  # CKR_USER_NOT_LOGGED_IN: the card wants the SO (admin) PIN
                pub, priv = token.as_so(run)
        try:
            public = _read_new_public(token, pub, key_id)
            if slot_id is None:
                key_id = _rename_to_sha1(token, pub, priv, public)
        except BaseException:
            destroy_quietly(token, pub, priv)
            raise
        token.known_public[key_id] = public
        return token.find_key(key_id=key_id)


@contextlib.contextmanager
def _removed_after_keygen(token: Target, made: list[Any], key_id: bytes,
                          label: str) -> Iterator[None]:
    """A device gone once the pair exists (`made`) is DeviceRemoved naming the new key:
    a card's fixed slot keeps it (the SO login back to the user, the re-read, failed)."""
    try:
        yield
    except TokenNotFound as exc:
        if not made:
            raise
        fixed = token.profile.keygen_slot is not None
        uri = parse_pkcs11(token.uri).with_object(None if fixed else label, key_id)
        where = _(", key slot {hex}").format(hex=key_id.hex()) if fixed else ""
        raise DeviceRemoved(
            _("the key pair was generated on {label!r} (serial {serial}{where}), but the "
              "device was gone before tokenkeys could finish ({exc})")
            .format(label=token.slot.label, serial=token.slot.serial, where=where, exc=exc),
            created=str(uri)) from None


def _read_new_public(token: Target, pub: Any, key_id: bytes) -> PublicKey:
    public = None
    with contextlib.suppress(CkrError):
        public = read_public_key(token.session(), pub)
    if public is None and token.profile.reread_after_keygen:
        # OpenSC 0.23 returns heap bytes after the modulus in this process, and
        # cannot use the new key until it reads the card again.
        token.reinitialise()
        found = token.find({ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_ID: key_id})
        with contextlib.suppress(CkrError):
            public = read_public_key(token.session(), found[0]) if found else None
    return public or read_public_key_fresh(token, key_id)


def _rename_to_sha1(token: Target, pub: Any, priv: Any, public: PublicKey) -> bytes:
    """Both halves get CKA_ID = SHA-1 of the public key, by the handles generation
    returned (never by a search for the old id, which a renamed half no longer has)."""
    new_id = keyalg.key_id(public)

    def set_id(obj: Any) -> None:
        token.session().set(obj, {ck.CKA_ID: new_id})

    for obj in (pub, priv):
        with token.device_errors(_("setting the key id")):
            token.writing(functools.partial(set_id, obj))
    return new_id


def destroy_quietly(token: Target, *objects: Any) -> None:
    """Destroy objects (None skipped); one already gone is fine (idempotent)."""
    for obj in objects:
        if obj is not None:
            with contextlib.suppress(CkrError, DeviceError):
                token.session().destroy(obj)


def store_certificate(token: Target, key: KeyHandle, certificate: x509.Certificate,
                      chain: Sequence[x509.Certificate] = ()) -> None:
    """The certificate (and issuers, as extra certificate objects with the key's
    CKA_ID labelled LABEL/chain-NN) replace the old ones; new objects first."""
    if not keyalg.same_key(certificate.public_key(), key.public_key):
        raise UsageError(_("the certificate is not for key {label!r}").format(label=key.label))
    if chain and not token.profile.can_store_chain:
        raise MechanismUnsupported(_("storing an issuer chain on this card"),
                                   [_("one certificate per key")])
    old = token.find({ck.CKA_CLASS: ck.CKO_CERTIFICATE, ck.CKA_ID: key.id})
    wanted = [(key.label, certificate)] + [
        (f"{key.label}{CHAIN_MARK}{i:02d}", c) for i, c in enumerate(chain, 1)]
    if _stored_already(token, old, [c for _, c in wanted]):
        key.certificate = certificate  # nothing to write (a card refuses a second one)
        return
    objects = [templates.certificate(label, key.id, c) for label, c in wanted]
    what = _("storing the certificate of {label!r}").format(label=key.label)

    first = old if token.profile.remove_certificate_first else []

    def write() -> None:
        for obj in first:  # the card keeps one and refuses a second
            with token.device_errors(_("removing the old certificate of {label!r}")
                                     .format(label=key.label)):
                token.session().destroy(obj)
        try:
            for tpl in objects:
                with token.device_errors(what, [_("one certificate per key")]):
                    token.session().create(tpl)
        except TokenKeysError as exc:
            if first:
                exc.args = (_("{exc}; the old certificate was removed from the card first: "
                              "run the command again to store the new one").format(exc=exc),)
            raise
        for obj in [] if first else old:
            with contextlib.suppress(CkrError):
                token.session().destroy(obj)

    token.writing(write)
    key.certificate = certificate


def _stored_already(token: Target, old: list[Any], wanted: list[x509.Certificate]) -> bool:
    """Whether the certificate objects of the key hold exactly `wanted` (leaf, chain)."""
    if len(old) != len(wanted):
        return False
    values = []
    for obj in old:
        with token.device_errors("reading a certificate"):
            values.append(bytes(token.session().get(obj, [ck.CKA_VALUE])[ck.CKA_VALUE] or b""))
    return sorted(values) == sorted(
        c.public_bytes(serialization.Encoding.DER) for c in wanted)


def set_label(token: Target, key: KeyHandle, label: str) -> None:
    """Give every object of `key` the label `label`, the private key last: while it
    keeps its old label the rename is not complete, and running it again finishes it
    (an object already renamed keeps its name and chain suffix)."""
    def renamed(old: str) -> str | None:
        if old == label or old.startswith(label + CHAIN_MARK):
            return None  # done by an earlier, interrupted rename
        return label + old[len(key.label):] if old.startswith(key.label) else label

    def write() -> None:
        for cls in (ck.CKO_CERTIFICATE, ck.CKO_PUBLIC_KEY, ck.CKO_PRIVATE_KEY):
            for obj in token.find({ck.CKA_CLASS: cls, ck.CKA_ID: key.id}):
                new = renamed(token.session().get(obj, [ck.CKA_LABEL])[ck.CKA_LABEL] or "")
                if new is not None:
                    with token.device_errors(f"renaming {key.label!r}"):
                        token.session().set(obj, {ck.CKA_LABEL: new})

    token.writing(write)
    key.label = label


def delete(token: Target, key: KeyHandle) -> None:
    """Certificates, public and private key with the key's CKA_ID, if the device allows it."""
    if not key.id:
        raise UsageError(_("key {label!r} has no CKA_ID").format(label=key.label))
    if not token.profile.can_delete:
        raise MechanismUnsupported(
            _("deleting key {label!r} through PKCS#11 on this card (card left unchanged)")
            .format(label=key.label),
            ["openpgp-tool --del-key 2", "openpgp-tool --erase"])

    queries: list[Template] = [{ck.CKA_ID: key.id}]
    if key.label.startswith(PROVISIONAL):
        # A generation killed while renaming may have left halves with two ids.
        queries.append({ck.CKA_LABEL: key.label})

    def destroy() -> None:
        for query in queries:
            for cls in KEY_CLASSES:
                for obj in token.find({ck.CKA_CLASS: cls, **query}):
                    with token.device_errors(f"deleting {key.label!r}"):
                        token.session().destroy(obj)

    token.writing(destroy)
