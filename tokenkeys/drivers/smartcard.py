"""The smartcard driver (PyKCS11): OpenSC cards, OpenPGP cards first.

What it adds over the pkcs11 driver: waiting for a card (slot events, polled
with CKF_DONT_BLOCK because a blocking wait holds the GIL), PIN-pad login,
PIN retry flags, key generation under the SO (admin) PIN, and card profiles
for what a card cannot do. See docs/drivers.md, "smartcard driver".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import PyKCS11
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tokenkeys.config import Config
from tokenkeys.drivers.base import KeyHandle, PublicKey, Token, lookup_terms, the_one
from tokenkeys.drivers.modules import candidate_modules
from tokenkeys.drivers.pkcs11_admin import load_pykcs11
from tokenkeys.drivers.pkcs11_keys import key_id_for
from tokenkeys.drivers.pkcs11_tables import (
    CKF_PROTECTED_AUTHENTICATION_PATH,
    token_flag_words,
    tries_left,
)
from tokenkeys.drivers.smartcard_keys import (
    SmartcardKeyHandle,
    guard,
    map_error,
    read_public_key,
    read_public_key_fresh,
)
from tokenkeys.drivers.smartcard_slots import (
    Card,
    card_wait_seconds,
    describe,
    pick,
    scan,
    wait_for_card,
)
from tokenkeys.errors import (
    KeyNotFound,
    MechanismUnsupported,
    PinIncorrect,
    PinLocked,
    PinMissing,
    TokenNotFound,
    UsageError,
)
from tokenkeys.types import KeySpec, PinSource, TokenInfo, given_pin, so_pin_source
from tokenkeys.uri import Pkcs11Uri

T = TypeVar("T")
SESSION_FLAGS = PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION


@dataclass(frozen=True)
class CardProfile:
    """What a family of cards can do, by CK_TOKEN_INFO.manufacturerID."""

    keygen_id: bytes | None  # the CKA_ID the card gives a generated decryption key
    keygen_needs_so: bool
    decryption_key_signs: bool
    tries_hint: str | None  # PinIncorrect hint when no PIN flag is set
    can_delete: bool = True


PROFILES: dict[str, CardProfile] = {
    # OpenSC's openpgp emulation: key slot 02 is the decryption key, usage
    # decrypt/unwrap only; GENERATE needs PW3; the count shows only at 1 try.
    "OpenPGP project": CardProfile(
        keygen_id=b"\x02", keygen_needs_so=True, decryption_key_signs=False,
        tries_hint="more than one try left; this card reports only the final try",
        # C_DestroyObject "succeeds" but a new process still sees the key.
        can_delete=False,
    ),
}
GENERIC = CardProfile(keygen_id=None, keygen_needs_so=False, decryption_key_signs=True,
                      tries_hint=None)
# C_Login answers meaning "wrong PIN": the emulated OpenPGP card answers 6982,
# which OpenSC reports as CKR_USER_NOT_LOGGED_IN.
WRONG_PIN = frozenset({PyKCS11.CKR_PIN_INCORRECT, PyKCS11.CKR_USER_NOT_LOGGED_IN})


class SmartcardToken(Token):
    """One card (one PIN slot) through PyKCS11, one session kept open.

    The user PIN read at login() is kept in memory (never logged) only to log
    the user in again after an SO operation (key generation, certificate).
    """

    def __init__(self, lib: Any, card: Card, so_pins: PinSource | None = None) -> None:
        self._lib = lib
        self.card = card
        self.module = card.module
        self.profile = PROFILES.get(card.manufacturer, GENERIC)
        self._base_uri = card.uri()
        self.uri = str(self._base_uri)
        self._so_pins = so_pins
        self._user_pins: PinSource | None = None
        self._logged_in = False
        self._mechanisms: frozenset[str] | None = None
        # Public keys read right after generation (OpenSC 0.23 reads them wrong then).
        self.known_public: dict[bytes, PublicKey] = {}
        self._session: Any = guard(lambda: lib.openSession(card.slot, SESSION_FLAGS),
                                   f"opening card {card.label!r}")

    @classmethod
    def open(cls, uri: Pkcs11Uri, config: Config, *, so_pins: PinSource | None = None,
             wait: float | None = None) -> SmartcardToken:
        """Find the card by label, serial or slot-id. With `wait` (default
        TOKENKEYS_CARD_WAIT seconds, 0) wait that long for it to be inserted."""
        timeout = card_wait_seconds() if wait is None else wait
        seen: list[str] = []
        libs: list[tuple[Any, str]] = []
        for module in candidate_modules(uri, config):
            lib = load_pykcs11(module)
            libs.append((lib, module))
            cards = guard(lambda lib=lib, m=module: scan(lib, m), "listing cards")  # type: ignore[misc]
            seen.extend(f"{c.label!r} serial {c.serial}" for c in cards)
            card = pick(cards, uri)
            if card is not None:
                return cls(lib, card, so_pins)
        if timeout > 0 and len(libs) == 1:
            card = wait_for_card(libs[0][0], libs[0][1], uri, timeout)
            if card is not None:
                return cls(libs[0][0], card, so_pins)
        waited = f" after waiting {timeout:g} s" if timeout > 0 else ""
        raise TokenNotFound(f"no card matches {describe(uri)}{waited} "
                            f"(cards present: {', '.join(seen) or 'none'})")

    def set_so_pin_source(self, source: PinSource) -> None:
        """Where the SO (admin) PIN comes from; default TOKENKEYS_SO_PIN or a prompt."""
        self._so_pins = source

    def close(self) -> None:
        self._logged_in = False
        self._user_pins = None
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                session.closeSession()

    def session(self) -> Any:
        if self._session is None:
            raise UsageError(f"card {self.card.label!r} is closed")
        return self._session

    def _flags(self) -> int:
        return int(guard(lambda: self._lib.getTokenInfo(self.card.slot), "reading the card").flags)

    def info(self) -> TokenInfo:
        c = self.card
        return TokenInfo(label=c.label, manufacturer=c.manufacturer, model=c.model,
                         serial=c.serial, module=c.module, slot=c.slot,
                         flags=token_flag_words(self._flags()), uri=self.uri)

    # --- login -------------------------------------------------------------
    def _c_login(self, source: PinSource, user_type: int) -> None:
        """C_Login; the PIN is revealed only for the call and never retried."""
        who = "SO PIN" if user_type == PyKCS11.CKU_SO else "PIN"
        pin = source.read()
        if pin is None and not self.card.flags & CKF_PROTECTED_AUTHENTICATION_PATH:
            raise PinMissing(f"{source.what} (the reader has no PIN pad)")
        try:
            # None: the reader's PIN pad (protected authentication path) asks for it.
            self.session().login(None if pin is None else pin.reveal(), user_type)
        except PyKCS11.PyKCS11Error as exc:
            if exc.value == PyKCS11.CKR_USER_ALREADY_LOGGED_IN:
                return
            if exc.value == PyKCS11.CKR_PIN_LEN_RANGE:
                raise UsageError(f"{who} length is outside the card's range (no try used)"
                                 ) from None
            if exc.value in WRONG_PIN:
                if user_type == PyKCS11.CKU_SO:
                    raise PinIncorrect("SO PIN incorrect; the card keeps its own count") from None
                flags = self._flags()
                if flags & PyKCS11.CKF_USER_PIN_LOCKED:
                    raise PinLocked() from None
                raise PinIncorrect(tries_left(flags) or self.profile.tries_hint) from None
            if exc.value == PyKCS11.CKR_PIN_LOCKED:
                raise PinLocked(who) from None
            raise map_error(exc, f"login to card {self.card.label!r}") from None
        if user_type == PyKCS11.CKU_USER:
            self._user_pins = given_pin(pin) if pin is not None else source

    def login(self, pin_source: PinSource) -> None:
        """User login, once. PIN pad when the source gives no PIN and the reader has one."""
        if self._logged_in:
            return
        self._c_login(pin_source, PyKCS11.CKU_USER)
        self._logged_in = True

    def _logout(self) -> None:
        with contextlib.suppress(PyKCS11.PyKCS11Error):
            self.session().logout()
        self._logged_in = False

    def as_so(self, fn: Callable[[], T]) -> T:
        """Run `fn` logged in as SO (admin PIN), then log the user back in if it was."""
        user = self._user_pins
        self._logout()
        self._c_login(self._so_pins or so_pin_source(), PyKCS11.CKU_SO)
        try:
            return fn()
        finally:
            self._logout()
            if user is not None:
                self.login(user)

    def reinitialise(self) -> None:
        """C_Finalize + C_Initialize, then reopen the session (and log the user back in).

        OpenSC 0.23 keeps a wrong picture of a key generated in this process
        (modulus followed by heap bytes; decrypt fails): a fresh start reads the card
        again. Every other session of this module in the process is closed too.
        """
        user = self._user_pins
        self.close()
        low = self._lib.lib
        low.C_Finalize()
        rv = low.C_Initialize()
        if rv not in (PyKCS11.CKR_OK, PyKCS11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise map_error(PyKCS11.PyKCS11Error(rv), "re-initialising the card module")
        cards = [c for c in scan(self._lib, self.module)
                 if c.serial == self.card.serial and c.label == self.card.label]
        if not cards:
            raise TokenNotFound(f"card {self.card.label!r} serial {self.card.serial} is gone")
        self.card = cards[0]
        self._session = guard(lambda: self._lib.openSession(self.card.slot, SESSION_FLAGS),
                              f"opening card {self.card.label!r}")
        if user is not None:
            self.login(user)

    # --- objects -----------------------------------------------------------
    def mechanisms(self) -> frozenset[str]:
        if self._mechanisms is None:
            names = guard(lambda: self._lib.getMechanismList(self.card.slot), "listing mechanisms")
            self._mechanisms = frozenset(str(n).removeprefix("CKM_") for n in names)
        return self._mechanisms

    def _find(self, **attrs: Any) -> list[Any]:
        template = [(getattr(PyKCS11, f"CKA_{k.rstrip('_').upper()}"), v) for k, v in attrs.items()]
        return list(guard(lambda: self.session().findObjects(template), "searching the card"))

    def _private_by_id(self, key_id: bytes) -> Any:
        found = self._find(class_=PyKCS11.CKO_PRIVATE_KEY, id=key_id) if key_id else []
        if found:
            return found[0]
        if not self._logged_in:
            raise PinMissing("user PIN (log in to use the private key)")
        raise KeyNotFound(f"no private key with id {key_id.hex()} on card {self.card.label!r}")

    def _certificate(self, key_id: bytes, public: PublicKey | None) -> x509.Certificate | None:
        for obj in self._find(class_=PyKCS11.CKO_CERTIFICATE, id=key_id) if key_id else []:
            (value,) = guard(lambda o=obj: self.session().getAttributeValue(  # type: ignore[misc]
                o, [PyKCS11.CKA_VALUE], allAsBinary=True), "reading a certificate")
            with contextlib.suppress(ValueError):
                cert = x509.load_der_x509_certificate(bytes(value))
                # The emulated card answers every certificate slot with one 7F21:
                # a certificate counts only if it is for this key.
                if public is None or _same_key(cert, public):
                    return cert
        return None

    def _public(self, key_id: bytes) -> PublicKey | None:
        if key_id in self.known_public:
            return self.known_public[key_id]
        for obj in self._find(class_=PyKCS11.CKO_PUBLIC_KEY, id=key_id) if key_id else []:
            key = guard(lambda o=obj: read_public_key(self.session(), o), "reading a public key")  # type: ignore[misc]
            return key or read_public_key_fresh(self.module, self.card.serial, key_id)
        return None

    def _handle(self, obj: Any) -> SmartcardKeyHandle:
        key_id, label = guard(lambda: self.session().getAttributeValue(
            obj, [PyKCS11.CKA_ID, PyKCS11.CKA_LABEL], allAsBinary=True), "reading key attributes")
        key_id, label = bytes(key_id), bytes(label).decode("utf-8", "replace")
        public = self._public(key_id)
        cert = self._certificate(key_id, public)
        if public is None and cert is not None:
            cert_key = cert.public_key()
            if isinstance(cert_key, PublicKey):
                public = cert_key
        if public is None:
            public = guard(lambda: read_public_key(self.session(), obj), "reading the key")
        if public is None:
            public = read_public_key_fresh(self.module, self.card.serial, key_id)
        uri = self._base_uri.with_object(label, key_id)
        uri = Pkcs11Uri(attrs={**uri.attrs, "type": "private"}, id=uri.id, query=uri.query)
        return SmartcardKeyHandle(
            self.session, public, cert, key_id=key_id, label=label, uri=str(uri),
            mechanisms=self.mechanisms(), device=(self.card.manufacturer, self.card.model),
            locate=self._private_by_id,
        )

    def _anchors(self, **query: Any) -> list[Any]:
        """Private keys; before login, public keys (then certificates) stand in."""
        found = self._find(class_=PyKCS11.CKO_PRIVATE_KEY, **query)
        if found or self._logged_in:
            return found
        return self._find(class_=PyKCS11.CKO_PUBLIC_KEY, **query)

    def find_key(self, *, label: str | None = None, key_id: bytes | None = None) -> KeyHandle:
        """By the card's label or CKA_ID (the card fixes both: OpenPGP 02, 'Encryption key')."""
        query, what = lookup_terms(label, key_id)
        return self._handle(the_one(self._anchors(**query), what, f"card {self.card.label!r}"))

    def list_keys(self) -> list[KeyHandle]:
        return [self._handle(o) for o in self._anchors()]

    # --- provisioning ------------------------------------------------------
    def generate_keypair(self, spec: KeySpec) -> KeyHandle:
        """The manager then self-signs a certificate with the new key. On cards whose
        decryption key cannot sign (OpenPGP) this fails at once, card unchanged;
        use generate_decryption_key() and a certificate issued by another key."""
        if not self.profile.decryption_key_signs:
            raise MechanismUnsupported(
                "a certificate self-signed by the card's decryption key (card left unchanged)",
                ["RSA_PKCS decryption only"])
        return self.generate_decryption_key(spec)

    def generate_decryption_key(self, spec: KeySpec) -> KeyHandle:
        """Generate on the card; needs the SO PIN on cards that ask for it (OpenPGP).

        Requires user login first when the card generates under the user PIN. The
        card may fix CKA_ID and label: the handle carries what the card says, not
        the SHA-1 convention of the other drivers. Never overwrites a key.
        """
        if spec.shareable:
            raise UsageError("keys generated on a card never leave it: --shareable is refused")
        from tokenkeys.drivers.smartcard_gen import generate

        return generate(self, spec)

    def store_certificate(self, key: KeyHandle, certificate: x509.Certificate) -> None:
        """Write the certificate under the key's CKA_ID (OpenPGP: cardholder
        certificate DO 7F21, needs the SO PIN)."""
        if not _same_key(certificate, key.public_key):
            raise UsageError(f"the certificate is not for key {key.label!r}")
        der = certificate.public_bytes(serialization.Encoding.DER)
        template = [
            (PyKCS11.CKA_CLASS, PyKCS11.CKO_CERTIFICATE),
            (PyKCS11.CKA_CERTIFICATE_TYPE, PyKCS11.CKC_X_509),
            (PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_PRIVATE, False),
            (PyKCS11.CKA_ID, key.id), (PyKCS11.CKA_LABEL, key.label),
            (PyKCS11.CKA_SUBJECT, certificate.subject.public_bytes()),
            (PyKCS11.CKA_VALUE, der),
        ]

        def create() -> None:
            guard(lambda: self.session().createObject(template),
                  f"storing the certificate of {key.label!r}", ["cardholder certificate"])

        if self.profile.keygen_needs_so:
            self.as_so(create)
        else:
            create()
        key.certificate = certificate

    def delete(self, key: KeyHandle) -> None:
        """Certificate, public and private key with the key's CKA_ID, if the card allows it."""
        if not key.id:
            raise UsageError(f"key {key.label!r} has no CKA_ID")
        if not self.profile.can_delete:
            raise MechanismUnsupported(
                f"deleting key {key.label!r} through PKCS#11 on this card (card left unchanged)",
                ["openpgp-tool --del-key 2", "openpgp-tool --erase"])

        def destroy() -> None:
            for cls in (PyKCS11.CKO_CERTIFICATE, PyKCS11.CKO_PUBLIC_KEY, PyKCS11.CKO_PRIVATE_KEY):
                for obj in self._find(class_=cls, id=key.id):
                    guard(lambda o=obj: self.session().destroyObject(o),  # type: ignore[misc]
                          f"deleting {key.label!r}", ["openpgp-tool --del-key"])

        if self.profile.keygen_needs_so:
            self.as_so(destroy)
        else:
            destroy()


def _same_key(cert: x509.Certificate, public: PublicKey) -> bool:
    try:
        return key_id_for(cert.public_key()) == key_id_for(public)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
