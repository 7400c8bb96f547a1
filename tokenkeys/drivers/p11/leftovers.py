"""Naming a key a run has made under a provisional label, and the objects an
interrupted run left (PKCS#11).

SoftHSM2 rewrites an object's file in place when one of its attributes changes: a
process killed inside C_SetAttributeValue leaves the file empty, and the module no
longer lists the object. So a rename in place is done only to the private key, and
only while no registry records the key (label_private_key): a kill there damages an
unrecorded leftover. After the registry commit, the public key and the certificates
take the name by new copies, each provisional original destroyed once its copy is
complete (label_public_objects): whatever moment a kill strikes, each object exists
complete under one label or the other, and running the step again finishes it.
A device whose store changes an attribute atomically (Profile.relabel_in_place: the
TPM's SQLite store) renames them in place instead.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509

from tokenkeys.drivers.base import PROVISIONAL, KeyHandle, UnusableKey, provisional_stem
from tokenkeys.drivers.p11 import ck, templates
from tokenkeys.drivers.p11.port import Template
from tokenkeys.drivers.p11.provision import CHAIN_MARK, KEY_CLASSES, Target, delete
from tokenkeys.errors import UsageError
from tokenkeys.i18n import _

# What a copy of a public key or certificate object keeps (CKA_LOCAL and the like are
# the module's to set); and what must be equal for a copy to be complete.
_COPIED = {
    ck.CKO_PUBLIC_KEY: (ck.CKA_KEY_TYPE, ck.CKA_PRIVATE, ck.CKA_ENCRYPT, ck.CKA_VERIFY,
                        ck.CKA_WRAP, ck.CKA_DERIVE, ck.CKA_MODULUS, ck.CKA_PUBLIC_EXPONENT,
                        ck.CKA_EC_PARAMS, ck.CKA_EC_POINT),
    ck.CKO_CERTIFICATE: (ck.CKA_CERTIFICATE_TYPE, ck.CKA_PRIVATE, ck.CKA_SUBJECT,
                         ck.CKA_ISSUER, ck.CKA_SERIAL_NUMBER, ck.CKA_VALUE),
}
_VALUE = {ck.CKO_PUBLIC_KEY: (ck.CKA_MODULUS, ck.CKA_EC_POINT),
          ck.CKO_CERTIFICATE: (ck.CKA_VALUE,)}


def label_private_key(token: Target, key: KeyHandle, label: str) -> None:
    """The private key of `key` takes `label`, in place (before the registry commit)."""
    def write() -> None:
        for obj in token.find({ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_ID: key.id}):
            with token.device_errors(f"renaming {key.label!r}"):
                token.session().set(obj, {ck.CKA_LABEL: label})

    token.writing(write)
    key.label = label


def _label(token: Target, obj: Any) -> str:
    with token.device_errors(_("reading object labels")):
        return str(token.session().get(obj, [ck.CKA_LABEL])[ck.CKA_LABEL] or "")


def _value(token: Target, cls: int, obj: Any) -> tuple[Any, ...]:
    with token.device_errors(_("reading objects")):
        got = token.session().get(obj, list(_VALUE[cls]))
    return tuple(got[a] for a in _VALUE[cls])


def _copy(token: Target, cls: int, original: Any, label: str, key_id: bytes) -> Template:
    with token.device_errors(_("reading objects")):
        got = token.session().get(original, list(_COPIED[cls]))
    return {**{a: v for a, v in got.items() if v is not None}, ck.CKA_CLASS: cls,
            ck.CKA_TOKEN: True, ck.CKA_LABEL: label, ck.CKA_ID: key_id}


def label_public_objects(token: Target, key: KeyHandle, label: str,
                         certificate: x509.Certificate | None = None) -> None:
    """Every provisional public key and certificate of `key` (CKA_ID) takes `label`
    (a chain certificate keeps its suffix) by a new copy, then the original is
    destroyed; a copy an interrupted run left incomplete is destroyed and made again.
    The private key is not touched. A public key object that is missing is rebuilt
    from the key's public key, a missing certificate from `certificate`."""
    def write() -> None:
        for cls in (ck.CKO_PUBLIC_KEY, ck.CKO_CERTIFICATE):
            for original in token.find({ck.CKA_CLASS: cls, ck.CKA_ID: key.id}):
                old = _label(token, original)
                stem = provisional_stem(old)
                if stem is None:
                    continue
                new = label + old[len(stem):]
                if token.profile.relabel_in_place:
                    with token.device_errors(f"giving {old!r} the name {label!r}"):
                        token.session().set(original, {ck.CKA_LABEL: new})
                    continue
                want = _value(token, cls, original)
                copies = token.find({ck.CKA_CLASS: cls, ck.CKA_ID: key.id, ck.CKA_LABEL: new})
                done = [any(want) and _value(token, cls, c) == want for c in copies]
                with token.device_errors(_("giving {old!r} the name {label!r}")
                                         .format(old=old, label=label)):
                    for copy, ok in zip(copies, done, strict=True):
                        if not ok:
                            token.session().destroy(copy)
                    if not any(done):
                        token.session().create(_copy(token, cls, original, new, key.id))
                    token.session().destroy(original)
        with token.device_errors(_("rebuilding the public objects of {label!r}")
                                 .format(label=label)):
            if not token.find({ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_ID: key.id}):
                token.session().create(templates.public_key(
                    key.public_key, label, key.id,
                    decrypt_only=token.profile.decrypt_only_usage))
            leaves = [c for c in token.find({ck.CKA_CLASS: ck.CKO_CERTIFICATE,
                                             ck.CKA_ID: key.id})
                      if CHAIN_MARK not in _label(token, c)]
            if certificate is not None and not leaves:
                token.session().create(templates.certificate(label, key.id, certificate))
                key.certificate = certificate

    token.writing(write)


def discard_unfinished(token: Target, key: KeyHandle) -> None:
    """Destroy a key an interrupted run left that no registry records: its private
    key first (a kill half-way leaves only provisional objects, which stay
    leftovers), then every other object with its CKA_ID."""
    def destroy() -> None:
        for obj in token.find({ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_ID: key.id}):
            with token.device_errors(f"deleting {key.label!r}"):
                token.session().destroy(obj)

    token.writing(destroy)
    delete(token, key)


def provisional_objects(token: Target) -> list[UnusableKey]:
    """Objects of every key class under a provisional label: what an interrupted run
    left, even a lone public key, private key or certificate."""
    kinds = {ck.CKO_PRIVATE_KEY: "private key", ck.CKO_PUBLIC_KEY: "public key",
             ck.CKO_CERTIFICATE: "certificate"}
    found = []
    for cls, kind in kinds.items():
        for obj in token.find({ck.CKA_CLASS: cls}):
            with token.device_errors(_("reading object labels")):
                a = token.session().get(obj, [ck.CKA_LABEL, ck.CKA_ID])
            label = a[ck.CKA_LABEL] or ""
            if label.startswith(PROVISIONAL):
                found.append(UnusableKey(label=label, id=a[ck.CKA_ID] or b"", reason=kind))
    return found


_MATERIAL = {ck.CKO_PRIVATE_KEY: (ck.CKA_MODULUS, ck.CKA_EC_PARAMS),
             ck.CKO_PUBLIC_KEY: (ck.CKA_MODULUS, ck.CKA_EC_POINT),
             ck.CKO_CERTIFICATE: (ck.CKA_VALUE,)}


def _blank(token: Target) -> list[tuple[Any, str]]:
    """Key-class objects with no label, no id and no key or certificate value: what a
    process killed inside C_GenerateKeyPair or C_CreateObject leaves (SoftHSM2 writes
    the defaults first, then the template). They hold nothing anyone could use."""
    kinds = {ck.CKO_PRIVATE_KEY: "half-written private key",
             ck.CKO_PUBLIC_KEY: "half-written public key",
             ck.CKO_CERTIFICATE: "half-written certificate"}
    found = []
    for cls, material in _MATERIAL.items():
        for obj in token.find({ck.CKA_CLASS: cls}):
            with token.device_errors(_("reading objects")):
                a = token.session().get(obj, [ck.CKA_LABEL, ck.CKA_ID, *material])
            if not any(a.values()):
                found.append((obj, kinds[cls]))
    return found


def blank_objects(token: Target) -> list[UnusableKey]:
    return [UnusableKey(label="", id=b"", reason=kind) for _, kind in _blank(token)]


def destroy_blank(token: Target) -> None:
    def destroy() -> None:
        for obj, _kind in _blank(token):
            with token.device_errors(_("deleting a half-written object")):
                token.session().destroy(obj)

    token.writing(destroy)


def destroy_provisional(token: Target, label: str) -> None:
    """Destroy every key-class object labelled `label`, which must be provisional."""
    if not label.startswith(PROVISIONAL):
        raise UsageError(_("{label!r} is not a provisional label: nothing destroyed")
                         .format(label=label))

    def destroy() -> None:
        for cls in KEY_CLASSES:
            for obj in token.find({ck.CKA_CLASS: cls, ck.CKA_LABEL: label}):
                with token.device_errors(f"deleting {label!r}"):
                    token.session().destroy(obj)

    token.writing(destroy)


class LeftoverMethods:
    """The Token methods of this module, for P11Token (which is a Target)."""

    def label_private_key(self: Target, key: KeyHandle, label: str) -> None:
        label_private_key(self, key, label)

    def label_public_objects(self: Target, key: KeyHandle, label: str,
                             certificate: x509.Certificate | None = None) -> None:
        label_public_objects(self, key, label, certificate)

    def discard_unfinished(self: Target, key: KeyHandle) -> None:
        discard_unfinished(self, key)

    def provisional_objects(self: Target) -> list[UnusableKey]:
        return provisional_objects(self)

    def destroy_provisional(self: Target, label: str) -> None:
        destroy_provisional(self, label)

    def blank_objects(self: Target) -> list[UnusableKey]:
        return blank_objects(self)

    def destroy_blank(self: Target) -> None:
        destroy_blank(self)
