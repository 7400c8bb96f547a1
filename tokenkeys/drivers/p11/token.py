"""P11Token: the one PKCS#11 token, over a binding port (python-pkcs11 or PyKCS11).

Its session and login are in session.py, how it names a failure (a pulled card)
in removal.py; this module finds and reads its keys and hands provisioning and
sharing to provision.py and share.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tokenkeys.config import Config
from tokenkeys.drivers.base import (
    PROVISIONAL,
    KeyHandle,
    PublicKey,
    Token,
    UnusableKey,
    lookup_terms,
    the_one,
)
from tokenkeys.drivers.capabilities import TransportKey, WrappedKey
from tokenkeys.drivers.p11 import ck, discovery, leftovers, provision, share
from tokenkeys.drivers.p11.ckr import ckr_errors
from tokenkeys.drivers.p11.keys import P11Key, Unusable, read_public_key
from tokenkeys.drivers.p11.port import Port, Session, SlotToken, Template
from tokenkeys.drivers.p11.profiles import Profile, profile_for
from tokenkeys.drivers.p11.provision import CHAIN_MARK
from tokenkeys.drivers.p11.session import SessionMethods
from tokenkeys.errors import KeyNotFound, PinMissing
from tokenkeys.i18n import _
from tokenkeys.keyalg import same_key
from tokenkeys.types import KeySpec, PinSource, TokenInfo
from tokenkeys.uri import Pkcs11Uri


class P11Token(leftovers.LeftoverMethods, SessionMethods, Token):
    """A PKCS#11 token. Capabilities: CertificateStore, SoAdministration. The session
    and login: session.SessionMethods; naming a device's failure (a pulled card):
    removal.RemovalMethods; naming a new key and what interrupted runs left:
    leftovers.LeftoverMethods."""

    def __init__(self, port: Port, st: SlotToken, so_pins: PinSource | None = None) -> None:
        self.port = port
        self.module = port.module
        self.slot = st
        self.profile: Profile = profile_for(st.manufacturer, st.model, port.module)
        self._base_uri = discovery.token_uri(st, port.module)
        self.uri = str(self._base_uri)
        self._so_pins = so_pins
        self._user_pins: PinSource | None = None
        self._logged_in = False
        self._mechanisms: frozenset[str] | None = None
        self.known_public: dict[bytes, PublicKey] = {}  # read right after generation
        self._session: Session | None = self._open_session()

    @classmethod
    def open(cls, uri: Pkcs11Uri, config: Config, *, binding: str | None = None,
             wait: float | None = None, so_pins: PinSource | None = None) -> P11Token:
        """The token `uri` names (label, serial, slot-id...), unique across modules.
        `binding` forces python-pkcs11 or pykcs11; `wait` seconds for a card."""
        port, st = discovery.find(uri, config, binding=binding, wait=wait)
        return cls(port, st, so_pins)

    def info(self) -> TokenInfo:
        with ckr_errors(_("reading token information")):
            st = self.port.token(self.slot.slot)
        return discovery.token_info(st, self.module)

    # --- SoAdministration ----------------------------------------------------
    def set_so_pin_source(self, source: PinSource) -> None:
        """Where the SO (admin) PIN comes from; default TOKENKEYS_SO_PIN or a prompt."""
        self._so_pins = source

    def keygen_slot(self) -> bytes | None:
        return self.profile.keygen_slot

    # --- objects -----------------------------------------------------------
    def mechanisms(self) -> frozenset[str]:
        if self._mechanisms is None:
            with ckr_errors(_("listing mechanisms")):
                self._mechanisms = self.port.mechanisms(self.slot.slot)
        return self._mechanisms

    facts = provision.device_facts  # Token.facts: the profile and the module's answers

    def find(self, template: Template) -> list[Any]:
        with ckr_errors(_("searching objects")):
            return self.session().find(template)

    def private_by_id(self, key_id: bytes) -> Any:
        found = self.find({ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_ID: key_id}) if key_id else []
        if len(found) == 1:
            return found[0]
        if not self._logged_in:
            raise PinMissing(_("user PIN (log in to use the private key)"))
        if found:
            raise KeyNotFound(_("{count} private keys with id {hex}: tokenkeys will not guess")
                              .format(count=len(found), hex=key_id.hex()))
        raise KeyNotFound(_("no private key with id {hex} on {label!r}")
                          .format(hex=key_id.hex(), label=self.slot.label))

    def certificates(self, key_id: bytes) -> list[tuple[str, x509.Certificate]]:
        """(label, certificate) of every readable certificate object with `key_id`."""
        out = []
        for obj in self.find({ck.CKA_CLASS: ck.CKO_CERTIFICATE, ck.CKA_ID: key_id}):
            with ckr_errors("reading a certificate"):
                a = self.session().get(obj, [ck.CKA_LABEL, ck.CKA_VALUE])
            with contextlib.suppress(ValueError, TypeError):
                out.append((a[ck.CKA_LABEL] or "", x509.load_der_x509_certificate(a[ck.CKA_VALUE])))
        return out

    def _public(self, key_id: bytes) -> PublicKey | None:
        if key_id in self.known_public:
            return self.known_public[key_id]
        for obj in self.find({ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_ID: key_id}):
            with ckr_errors(_("reading a public key")):
                key = read_public_key(self.session(), obj)
            return key or provision.read_public_key_fresh(self, key_id)
        return None

    def _handle(self, obj: Any) -> P11Key:
        """A key handle from a private key, or (before login) a public key/certificate."""
        with ckr_errors(_("reading key attributes")):
            a = self.session().get(obj, [ck.CKA_CLASS, ck.CKA_ID, ck.CKA_LABEL,
                                         ck.CKA_EXTRACTABLE])
        key_id, label = a[ck.CKA_ID] or b"", a[ck.CKA_LABEL] or ""
        if not key_id:
            raise Unusable(_("the object has no CKA_ID"))
        is_private = a[ck.CKA_CLASS] == ck.CKO_PRIVATE_KEY
        public = self._public(key_id)
        # The emulated card answers every certificate slot with one 7F21: a
        # certificate counts only if it is for this key.
        labelled = self.certificates(key_id)
        certs = [c for lbl, c in labelled if CHAIN_MARK not in lbl]
        cert = next((c for c in certs if public is None or same_key(c.public_key(), public)), None)
        if public is None and cert is not None:
            cert_key = cert.public_key()
            public = cert_key if isinstance(cert_key, PublicKey) else None
        if public is None:
            with ckr_errors(_("reading the key")):
                public = read_public_key(self.session(), obj)
        if public is None:
            public = provision.read_public_key_fresh(self, key_id)
        key = P11Key(self, obj if is_private else None, public, cert, key_id=key_id,
                     label=label, extractable=bool(a[ck.CKA_EXTRACTABLE]) and is_private,
                     token_uri=self._base_uri, mechanisms=self.mechanisms())
        if not label.startswith(PROVISIONAL):
            others = [lbl for lbl, _ in labelled] + self._public_labels(key_id)
            key.unfinished = any(lbl.startswith(PROVISIONAL) for lbl in others)
        return key

    def _public_labels(self, key_id: bytes) -> list[str]:
        out = []
        for obj in self.find({ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_ID: key_id}):
            with ckr_errors(_("reading key attributes")):
                out.append(self.session().get(obj, [ck.CKA_LABEL])[ck.CKA_LABEL] or "")
        return out

    def _anchors(self, query: Template) -> list[Any]:
        """Private keys; before login, public keys (then certificates) stand in."""
        found = self.find({ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, **query})
        if found or self._logged_in:
            return found
        pubs = self.find({ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, **query})
        ids = {self.session().get(p, [ck.CKA_ID])[ck.CKA_ID] for p in pubs}
        certs = [c for c in self.find({ck.CKA_CLASS: ck.CKO_CERTIFICATE, **query})
                 if CHAIN_MARK not in (self.session().get(c, [ck.CKA_LABEL])[ck.CKA_LABEL] or "")]
        return pubs + [c for c in certs if self.session().get(c, [ck.CKA_ID])[ck.CKA_ID] not in ids]

    def find_key(self, *, label: str | None = None, key_id: bytes | None = None) -> KeyHandle:
        """Requires login for private operations; before login keys are found by their
        public key or certificate, and the private key is looked up on first use."""
        _terms, what = lookup_terms(label, key_id)
        tpl: Template = {ck.CKA_LABEL: label} if label is not None else {}
        if key_id is not None:
            tpl[ck.CKA_ID] = key_id
        anchor = the_one(self._anchors(tpl), what, f"token {self.slot.label!r}")
        try:
            return self._handle(anchor)
        except Unusable as exc:
            raise KeyNotFound(_("the key with {what} cannot be used: {exc}")
                              .format(what=what, exc=exc)) from None

    def inventory(self) -> tuple[list[KeyHandle], list[UnusableKey]]:
        """Usable handles, and what tokenkeys cannot use, in one scan (device errors
        still raise)."""
        good: list[KeyHandle] = []
        bad: list[UnusableKey] = []
        for obj in self._anchors({}):
            try:
                good.append(self._handle(obj))
            except (Unusable, ValueError) as exc:
                with ckr_errors(_("reading key attributes")):
                    a = self.session().get(obj, [ck.CKA_ID, ck.CKA_LABEL])
                bad.append(UnusableKey(label=a[ck.CKA_LABEL] or "", id=a[ck.CKA_ID] or b"",
                                       reason=str(exc) or type(exc).__name__))
        return good, bad

    def list_keys(self) -> list[KeyHandle]:
        """After login one handle per usable private key; before, per public key or
        certificate. Objects tokenkeys cannot use are in unusable_keys()."""
        return self.inventory()[0]

    def unusable_keys(self) -> list[UnusableKey]:
        return self.inventory()[1]

    # --- provisioning (provision.py) ------------------------------------------
    def generate_keypair(self, spec: KeySpec) -> KeyHandle:
        """Requires login. CKA_ID = SHA-1 of the public key unless the device fixes it
        (keygen_slot(); an occupied slot is refused unless spec.replace), under the SO
        PIN where the profile says so. A decryption key that cannot sign (OpenPGP)
        refuses sign(): its certificate comes from a CA (services/ca.py)."""
        return provision.generate(self, spec)

    def store_certificate(self, key: KeyHandle, certificate: x509.Certificate,
                          chain: Sequence[x509.Certificate] = ()) -> None:
        provision.store_certificate(self, key, certificate, chain)

    def certificate_chain(self, key: KeyHandle) -> list[x509.Certificate]:
        marked = [(lbl, c) for lbl, c in self.certificates(key.id) if CHAIN_MARK in lbl]
        return [c for _, c in sorted(marked, key=lambda m: m[0])]

    def set_label(self, key: KeyHandle, label: str) -> None:
        provision.set_label(self, key, label)

    def delete(self, key: KeyHandle) -> None:
        provision.delete(self, key)

    # --- KeyExport, KeyImport, KeyTransport (share.py) ------------------------
    def export_private_key(self, key: KeyHandle) -> bytearray:
        """PKCS#8 of a shareable key, wrapped out under an ephemeral AES key and
        unwrapped in memory only. Requires login."""
        return share.export_private_key(self, key)

    def import_private_key(self, pkcs8: bytes | bytearray, *, label: str,
                           shareable: bool) -> KeyHandle:
        """The key arrives wrapped (C_UnwrapKey); non-extractable unless `shareable`."""
        return share.import_private_key(self, pkcs8, label=label, shareable=shareable)

    def create_transport_key(self) -> TransportKey:
        return share.create_transport_key(self)

    def wrap_for_transport(self, key: KeyHandle, transport: rsa.RSAPublicKey) -> WrappedKey:
        return share.wrap_for_transport(self, key, transport)

    def unwrap_transported(self, transport: TransportKey, wrapped: WrappedKey, *,
                           label: str, shareable: bool) -> KeyHandle:
        return share.unwrap_transported(self, transport, wrapped, label=label,
                                        shareable=shareable)

    def destroy_transport_key(self, transport: TransportKey) -> None:
        share.destroy_transport_key(self, transport)
