"""P11Token: the one PKCS#11 token, over a binding port (python-pkcs11 or PyKCS11).

One session per token, kept open. Login state is per token (PKCS#11). The user
PIN read at login() is kept in memory (never logged) only to log the user in
again after an SO operation (OpenPGP key generation, certificate writes).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

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
from tokenkeys.drivers.p11.ckr import CKR, REMOVED, CkrError, ckr_errors, to_error
from tokenkeys.drivers.p11.keys import P11Key, Unusable, read_public_key
from tokenkeys.drivers.p11.port import Port, Session, SlotToken, Template
from tokenkeys.drivers.p11.profiles import Profile, profile_for
from tokenkeys.drivers.p11.provision import CHAIN_MARK
from tokenkeys.drivers.pkcs11_tables import tries_left
from tokenkeys.errors import (
    DeviceRemoved,
    KeyNotFound,
    PinIncorrect,
    PinLocked,
    PinMissing,
    TokenKeysError,
    TokenNotFound,
    UsageError,
)
from tokenkeys.i18n import _
from tokenkeys.keyalg import same_key
from tokenkeys.types import KeySpec, PinSource, TokenInfo, given_pin, so_pin_source
from tokenkeys.uri import Pkcs11Uri

T = TypeVar("T")
_WRONG_PIN = CKR["CKR_PIN_INCORRECT"]
_NOT_LOGGED_IN = CKR["CKR_USER_NOT_LOGGED_IN"]
# How long the reader may take to notice a card pulled out (pcscd polls its readers).
GONE_WAIT_S = 1.0
GONE_POLL_S = 0.1


class P11Token(leftovers.LeftoverMethods, Token):
    """A PKCS#11 token. Capabilities: CertificateStore, SoAdministration. Naming a new
    key and what interrupted runs left: leftovers.LeftoverMethods."""

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

    def _open_session(self) -> Session:
        what = _("opening token {label!r}").format(label=self.slot.label)
        session = self._try_open_session(what)
        key = os.path.realpath(self.module)
        discovery.SESSIONS[key] = discovery.SESSIONS.get(key, 0) + 1
        return session

    def _try_open_session(self, what: str) -> Session:
        try:
            return self.port.open_session(self.slot.slot, rw=True)
        except CkrError as exc:
            if exc.code != CKR["CKR_TOKEN_WRITE_PROTECTED"]:
                raise to_error(exc.code, what) from None
        # Read-only tokens can still decrypt and sign.
        with ckr_errors(what):
            return self.port.open_session(self.slot.slot, rw=False)

    @classmethod
    def open(cls, uri: Pkcs11Uri, config: Config, *, binding: str | None = None,
             wait: float | None = None, so_pins: PinSource | None = None) -> P11Token:
        """The token `uri` names (label, serial, slot-id...), unique across modules.
        `binding` forces python-pkcs11 or pykcs11; `wait` seconds for a card."""
        port, st = discovery.find(uri, config, binding=binding, wait=wait)
        return cls(port, st, so_pins)

    def session(self) -> Session:
        if self._session is None:
            raise UsageError(_("token {label!r} is closed").format(label=self.slot.label))
        return self._session

    def close(self) -> None:
        self._logged_in = False
        self._user_pins = None
        session, self._session = self._session, None
        if session is not None:
            session.close()  # python-pkcs11: this logs the whole token out
            discovery.SESSIONS[os.path.realpath(self.module)] -= 1

    def info(self) -> TokenInfo:
        with ckr_errors(_("reading token information")):
            st = self.port.token(self.slot.slot)
        return discovery.token_info(st, self.module)

    # --- errors ------------------------------------------------------------
    def explain(self, code: int, what: str, offered: Sequence[str] = ()) -> TokenKeysError:
        """The error tree's error for `code`: DeviceRemoved when the profile says the
        answer may mean a pulled card and the reader no longer shows it."""
        if self.removed(code):
            return DeviceRemoved(_("{what}: {reason}").format(what=what, reason=_(REMOVED)))
        return to_error(code, what, offered)

    def removed(self, code: int) -> bool:
        """Was this answer a pull? Only for the profile's ambiguous codes, and only
        when the reader no longer shows the device (a check of up to GONE_WAIT_S)."""
        return code in self.profile.removal_codes and self._gone()

    @contextlib.contextmanager
    def device_errors(self, what: str, offered: Sequence[str] = ()) -> Iterator[None]:
        """ckr_errors, with a pulled card named as such (explain)."""
        try:
            yield
        except CkrError as exc:
            raise self.explain(exc.code, what, offered) from None

    def _gone(self) -> bool:
        """Whether this token's slot shows no token, within GONE_WAIT_S."""
        deadline = time.monotonic() + GONE_WAIT_S
        while True:
            try:
                if self.slot.slot not in self.port.slots():
                    return True
            except CkrError:
                return False  # the module cannot say: name the original error
            if time.monotonic() >= deadline:
                return False
            time.sleep(GONE_POLL_S)

    def _flags(self) -> int:
        with ckr_errors(_("reading the token")):
            return self.port.token(self.slot.slot).flags

    # --- login -------------------------------------------------------------
    def _c_login(self, source: PinSource, so: bool) -> None:
        """C_Login; the PIN is revealed only for the call and never retried."""
        who = _("SO PIN") if so else _("PIN")
        pin = source.read()
        if pin is None and not self.slot.flags & ck.CKF_PROTECTED_AUTHENTICATION_PATH:
            raise PinMissing(_("{what} (the token has no PIN pad)").format(what=_(source.what)))
        try:
            self.session().login(None if pin is None else pin.reveal(), so)
        except CkrError as exc:
            self._login_failed(exc.code, who, so)
        if not so:
            self._user_pins = given_pin(pin) if pin is not None else source

    def _login_failed(self, code: int, who: str, so: bool) -> None:
        if code == CKR["CKR_USER_ALREADY_LOGGED_IN"]:
            return  # another Token of this process logged this token in
        if code == CKR["CKR_PIN_LEN_RANGE"]:
            raise UsageError(_("{who} length is outside the token's range (no try used)")
                             .format(who=who))
        if code == _WRONG_PIN or (code == _NOT_LOGGED_IN and self.profile.wrong_pin_not_logged_in):
            if so:
                raise PinIncorrect(_("SO PIN incorrect; the token keeps its own count"))
            flags = self._flags()
            if flags & ck.CKF_USER_PIN_LOCKED:
                raise PinLocked()
            raise PinIncorrect(tries_left(flags) or self.profile.tries_hint)
        if code == CKR["CKR_PIN_LOCKED"]:
            raise PinLocked(who)
        raise self.explain(code, _("login to {label!r}").format(label=self.slot.label))

    def login(self, pin_source: PinSource) -> None:
        """User login, once. PIN pad when the source gives no PIN and the reader has one."""
        if self._logged_in:
            return
        self._c_login(pin_source, so=False)
        self._logged_in = True

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    def _logout(self) -> None:
        with contextlib.suppress(CkrError):
            self.session().logout()
        self._logged_in = False

    def as_so(self, fn: Callable[[], T]) -> T:
        """Run `fn` logged in as SO, then log the user back in if it was."""
        user = self._user_pins
        self._logout()
        self._c_login(self._so_pins or so_pin_source(), so=True)
        try:
            return fn()
        finally:
            self._logout()
            if user is not None:
                self.login(user)

    def writing(self, fn: Callable[[], T]) -> T:
        """Run an object write under the PIN the profile needs for it."""
        return self.as_so(fn) if self.profile.keygen_needs_so else fn()

    def reinitialise(self) -> None:
        """C_Finalize + C_Initialize, then reopen the session and log the user back in.

        OpenSC 0.23 keeps a wrong picture of a key generated in this process
        (modulus followed by heap bytes): a fresh start reads the card again.
        """
        user = self._user_pins
        self.close()
        with ckr_errors(_("re-initialising the module")):
            self.port.reinitialise()
        again = [s for s in discovery.scan(self.port)
                 if s.serial == self.slot.serial and s.label == self.slot.label]
        if not again:
            raise TokenNotFound(_("token {label!r} serial {serial} is gone")
                                .format(label=self.slot.label, serial=self.slot.serial))
        self.slot = again[0]
        self._session = self._open_session()
        if user is not None:
            self.login(user)

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
